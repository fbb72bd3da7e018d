//! Property: any sequence of commits (in any chunk order, with duplicates and reopenings in
//! between) reads back exactly as committed, and refused commits change nothing.

use std::collections::btree_map::{BTreeMap, Entry};

use herdsman_ledger::{
    ChunkCommit, Counts, JobIdentity, Ledger, LedgerError, Opened, Position, ResumePoint,
    SqliteLedger, StateDir, Token,
};
use proptest::prelude::*;

/// A position token as a text format might make one: a byte offset and a line.
fn tok(offset: u64, line: u64) -> Token {
    let mut b = offset.to_le_bytes().to_vec();
    b.extend(line.to_le_bytes());
    Token::new(&b).unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    /// Commit chunk `chunk`, growing the files by the given byte counts.
    Commit {
        chunk: u64,
        out_grow: u64,
        fail_grow: u64,
        counts: [u64; 6],
        start: (u32, u64),
    },
    /// Close everything and reopen (a restart).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..24, 0u64..5_000, 0u64..300, any::<[u16; 6]>(), (0u32..3, 0u64..1 << 40))
            .prop_map(|(chunk, out_grow, fail_grow, c, start)| Op::Commit {
                chunk,
                out_grow,
                fail_grow,
                counts: c.map(u64::from),
                start,
            }),
        1 => Just(Op::Reopen),
    ]
}

fn identity() -> JobIdentity {
    JobIdentity::new()
        .with("input.0.path", "x.csv")
        .with("ordered", "false")
}

fn open(dir: &std::path::Path) -> (StateDir, SqliteLedger) {
    let state = StateDir::open(dir).unwrap();
    let ledger = SqliteLedger::open(&state).unwrap();
    (state, ledger)
}

proptest! {
    // A fixed seed keeps every run of the suite identical.
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x4845_5244),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_commit_sequences_round_trip(ops in prop::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let (mut state, mut ledger) = open(&dir);
        prop_assert_eq!(ledger.open_job(&identity()).unwrap(), Opened::Fresh);
        let mut model: BTreeMap<u64, ChunkCommit> = BTreeMap::new();
        let (mut out_end, mut fail_end) = (0u64, 0u64);
        for op in ops {
            match op {
                Op::Commit { chunk, out_grow, fail_grow, counts, start } => {
                    let c = ChunkCommit {
                        chunk,
                        start: Position { file_index: start.0, seq: chunk * 100, token: tok(start.1, counts[0]) },
                        end: Position { file_index: start.0, seq: chunk * 100 + 100, token: tok(start.1 + counts[1], counts[0] + counts[2]) },
                        counts: Counts {
                            records: counts[2],
                            ok: counts[3],
                            failed: counts[4],
                            filtered: counts[5],
                            outputs: counts[3] * 2,
                            retries: counts[4] / 3,
                        },
                        output_end: out_end + out_grow,
                        failures_end: fail_end + fail_grow,
                    };
                    let result = ledger.commit_chunk(&c);
                    match model.entry(chunk) {
                        Entry::Occupied(_) => {
                            let refused = matches!(result, Err(LedgerError::AlreadyCommitted { chunk: k }) if k == chunk);
                            prop_assert!(refused, "{:?}", result);
                        }
                        Entry::Vacant(slot) => {
                            prop_assert!(result.is_ok(), "{:?}", result);
                            out_end = c.output_end;
                            fail_end = c.failures_end;
                            slot.insert(c);
                        }
                    }
                }
                Op::Reopen => {
                    drop(ledger);
                    drop(state);
                    (state, ledger) = open(&dir);
                    let want: Vec<ChunkCommit> = model.values().cloned().collect();
                    prop_assert_eq!(ledger.open_job(&identity()).unwrap(), Opened::Resumed { commits: want });
                }
            }
        }
        drop(ledger);
        drop(state);
        let (_state, mut ledger) = open(&dir);
        let want: Vec<ChunkCommit> = model.values().cloned().collect();
        let Opened::Resumed { commits } = ledger.open_job(&identity()).unwrap() else {
            panic!("expected Resumed");
        };
        prop_assert_eq!(&commits, &want);

        let p = ResumePoint::from_commits(&commits);
        let next = (0u64..).find(|k| !model.contains_key(k)).unwrap();
        prop_assert_eq!(p.next_chunk, next);
        prop_assert_eq!(p.position, next.checked_sub(1).map(|k| model[&k].end));
        prop_assert_eq!(p.output_end, out_end);
        prop_assert_eq!(p.failures_end, fail_end);
        let after: Vec<u64> = model.keys().copied().filter(|&k| k > next).collect();
        prop_assert_eq!(p.committed_after, after);
    }
}

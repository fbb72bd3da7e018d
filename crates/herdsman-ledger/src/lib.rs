//! The checkpoint ledger: which job this is, and which chunks are committed to the output.
//!
//! The ledger must never report a chunk as committed before its output bytes are durable: the
//! caller fsyncs the partial files first, then commits, and the commit returns only once it is
//! on disk. See the crate README for the schema and the protocol.
//!
//! Callers hold a `Box<dyn Ledger>` opened with [`open`]: the embedded SQLite ledger for a
//! state directory today; a shared backend is one more [`Ledger`] implementation and one match
//! arm in [`open`].
//!
//! The single machine that holds the state directory commits chunks directly:
//!
//! ```
//! use herdsman_ledger::{ChunkCommit, Counts, JobIdentity, Opened, Position, Token};
//! let tmp = tempfile::tempdir().unwrap();
//! let state = tmp.path().join("state");
//! let id = JobIdentity::new().with("input.0.path", "in.csv").with("input.0.size", "100");
//! let commit = ChunkCommit {
//!     chunk: 0,
//!     start: Position::default(),
//!     end: Position { file_index: 0, seq: 10, token: Token::new(&[1, 100, 11]).unwrap() },
//!     counts: Counts { records: 10, ok: 9, failed: 1, filtered: 0, outputs: 9, retries: 2 },
//!     output_end: 450, failures_end: 80,
//! };
//! {
//!     let mut ledger = herdsman_ledger::open(&state).unwrap();
//!     assert!(matches!(ledger.open_job(&id).unwrap(), Opened::Fresh));
//!     ledger.commit_chunk(&commit).unwrap();
//! } // crash here, or not: the commit is durable
//! let mut ledger = herdsman_ledger::open(&state).unwrap();
//! match ledger.open_job(&id).unwrap() {
//!     Opened::Resumed { commits } => assert_eq!(commits, vec![commit]),
//!     other => panic!("expected Resumed, got {other:?}"),
//! }
//! assert_eq!(ledger.totals().unwrap().counts.ok, 9);
//! ```
//!
//! Workers that share a job claim chunks under a lease and commit them with the claim's
//! attempt number as a fencing token:
//!
//! ```
//! use std::time::Duration;
//! use herdsman_ledger::{ChunkCommit, ChunkPlan, Counts, JobIdentity, LedgerError, Position};
//! let tmp = tempfile::tempdir().unwrap();
//! let mut ledger = herdsman_ledger::open(tmp.path()).unwrap();
//! ledger.open_job(&JobIdentity::new().with("input.0.path", "in.csv")).unwrap();
//! let end = Position { seq: 10, ..Position::default() };
//! ledger.plan_chunks(&[ChunkPlan { chunk: 0, start: Position::default(), end }]).unwrap();
//! let lease = Duration::from_secs(30);
//! let claim = ledger.claim("host-a:1234", lease).unwrap().expect("chunk 0 is pending");
//! assert_eq!((claim.chunk, claim.attempt), (0, 1));
//! assert!(ledger.claim("host-b:99", lease).unwrap().is_none(), "held by host-a");
//! ledger.heartbeat(&claim, lease).unwrap();
//! let done = ChunkCommit {
//!     chunk: 0, start: claim.start, end: claim.end,
//!     counts: Counts { records: 10, ok: 10, outputs: 10, ..Counts::default() },
//!     output_end: 700, failures_end: 0,
//! };
//! ledger.commit(&claim, &done).unwrap();
//! // The claim is spent: a second commit through it is refused and changes nothing.
//! assert!(matches!(ledger.commit(&claim, &done), Err(LedgerError::AlreadyCommitted { chunk: 0 })));
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod clock;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
mod counts;
mod error;
mod history;
mod identity;
mod open;
mod sqlite;
mod state_dir;

use std::time::{Duration, SystemTime};

pub use clock::{Clock, ManualClock, SystemClock};
pub use counts::Counts;
pub use error::LedgerError;
pub use history::{HistorySample, SlowRecord, WorkerSample, LATENCY_BUCKETS_MS, SLOWEST_PER_RUN};
pub use identity::{IdentityChange, JobIdentity};
pub use open::{open, open_read_only};
pub use sqlite::{SqliteLedger, LEDGER_FILE_NAME, SCHEMA_VERSION};
pub use state_dir::{output_lock_path, OutputLock, StateDir, LOCK_FILE_NAME};

/// A place in the input: which file, which record, and where in that file as an opaque
/// [`Token`] that the input's format produced and alone can read (a text format's byte offset
/// and line; a columnar format's row group and row). The ledger stores it and gives it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Position {
    /// Index of the input file (0 for the first).
    pub file_index: u32,
    /// Global record sequence number across all inputs.
    pub seq: u64,
    /// Where in the file, in the format's own encoding.
    pub token: Token,
}

/// A format's resume coordinates, opaque to the ledger: at most [`Token::CAPACITY`] bytes.
///
/// ```
/// use herdsman_ledger::Token;
/// let t = Token::new(&[1, 0xac, 0x02, 7]).unwrap();
/// assert_eq!(t.as_bytes(), [1, 0xac, 0x02, 7]);
/// assert!(Token::new(&[0; 33]).is_err());
/// assert!(Token::default().as_bytes().is_empty());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    len: u8,
    bytes: [u8; Token::CAPACITY],
}

impl Token {
    /// The most bytes a token holds.
    pub const CAPACITY: usize = 32;

    /// A token holding `bytes`; [`LedgerError::TokenTooLong`] beyond [`Token::CAPACITY`].
    pub fn new(bytes: &[u8]) -> Result<Token, LedgerError> {
        if bytes.len() > Token::CAPACITY {
            return Err(LedgerError::TokenTooLong { len: bytes.len() });
        }
        let mut t = Token::default();
        t.bytes[..bytes.len()].copy_from_slice(bytes);
        t.len = bytes.len() as u8;
        Ok(t)
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Default for Token {
    fn default() -> Token {
        Token {
            len: 0,
            bytes: [0; Token::CAPACITY],
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// One finished chunk, as recorded in the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkCommit {
    /// Chunk number (0-based, deterministic for a given identity).
    pub chunk: u64,
    /// Where the chunk starts in the input.
    pub start: Position,
    /// Where the next chunk starts in the input.
    pub end: Position,
    /// The chunk's records and what became of them.
    pub counts: Counts,
    /// Byte length of `<output>.partial` after this chunk was appended and fsynced.
    pub output_end: u64,
    /// Byte length of `<failures>.partial` after this chunk was appended and fsynced.
    pub failures_end: u64,
}

/// What [`Ledger::open_job`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// The ledger was empty; the job is now recorded and has no commits.
    Fresh,
    /// The same job was started before and not finished.
    Resumed {
        /// Every committed chunk, sorted by chunk number (gaps possible in unordered mode).
        commits: Vec<ChunkCommit>,
    },
    /// The same job already finished.
    Finished {
        /// Every committed chunk, sorted by chunk number.
        commits: Vec<ChunkCommit>,
        /// The summary stored by [`Ledger::mark_finished`].
        summary_json: Option<String>,
    },
}

/// Sums over the committed chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Committed chunks.
    pub chunks: u64,
    /// Sum of the committed chunks' [`ChunkCommit::counts`].
    pub counts: Counts,
}

impl Totals {
    /// Sums `commits`.
    pub fn of(commits: &[ChunkCommit]) -> Totals {
        Totals {
            chunks: commits.len() as u64,
            counts: commits.iter().map(|c| c.counts).sum(),
        }
    }
}

/// A chunk as planned before anyone works on it: its number and where it lies in the input.
/// Chunk boundaries are deterministic for a job, so every node plans the same chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Chunk number (0-based).
    pub chunk: u64,
    /// Where the chunk starts in the input.
    pub start: Position,
    /// Where the next chunk starts in the input.
    pub end: Position,
}

/// A chunk handed to one owner under a lease by [`Ledger::claim`].
///
/// `attempt` is the fencing token: every claim of a chunk gets a higher one, and
/// [`Ledger::heartbeat`], [`Ledger::commit`] and [`Ledger::release`] succeed only while the
/// chunk's current attempt is this one. An owner whose lease ran out and whose chunk was
/// claimed again therefore cannot commit over the new owner's work. A claim whose lease ran
/// out stays current until someone else takes the chunk, so a slow owner's heartbeat or commit
/// still succeeds if nobody did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The claimed chunk.
    pub chunk: u64,
    /// The fencing token: 1 for the chunk's first claim, one more for each later one.
    pub attempt: u64,
    /// Who holds the claim (e.g. `host:pid:run`), as given to [`Ledger::claim`].
    pub owner: String,
    /// Where the chunk starts in the input (from its [`ChunkPlan`]).
    pub start: Position,
    /// Where the next chunk starts in the input (from its [`ChunkPlan`]).
    pub end: Position,
    /// When the lease runs out unless a heartbeat extends it; after this time another owner
    /// may claim the chunk.
    pub lease_expires_at: SystemTime,
}

/// A read-only view of the ledger for `herdsman status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerStatus {
    /// The stored identity; `None` if no job was ever opened (or after a reset).
    pub identity: Option<JobIdentity>,
    /// Every committed chunk, sorted by chunk number.
    pub commits: Vec<ChunkCommit>,
    /// Sums over `commits`.
    pub totals: Totals,
    /// When the job was first opened.
    pub created_at: Option<SystemTime>,
    /// When the job last changed (a commit, or finishing).
    pub updated_at: Option<SystemTime>,
    /// When the job was marked finished.
    pub finished_at: Option<SystemTime>,
    /// The summary stored by [`Ledger::mark_finished`].
    pub summary_json: Option<String>,
}

impl LedgerStatus {
    /// Whether the job was marked finished.
    pub fn finished(&self) -> bool {
        self.finished_at.is_some()
    }
}

/// Where to pick up after a restart, derived from the committed chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// The lowest chunk number that is not committed.
    pub next_chunk: u64,
    /// Where `next_chunk` starts in the input: the end of chunk `next_chunk - 1`, or `None`
    /// for the start of the input when `next_chunk` is 0.
    pub position: Option<Position>,
    /// Truncate `<output>.partial` to this length (the largest committed `output_end`).
    pub output_end: u64,
    /// Truncate `<failures>.partial` to this length (the largest committed `failures_end`).
    pub failures_end: u64,
    /// Chunks above `next_chunk` that are already committed (unordered mode) and must be
    /// skipped when reprocessing, sorted.
    pub committed_after: Vec<u64>,
}

impl ResumePoint {
    /// Computes the resume point from commits (any order).
    ///
    /// The partial files only grow and each commit records their length after its own append,
    /// so the largest committed offsets are the lengths of the last committed state.
    ///
    /// ```
    /// use herdsman_ledger::{ChunkCommit, Counts, Position, ResumePoint};
    /// let c = |chunk: u64, out: u64| ChunkCommit {
    ///     chunk, start: Position { seq: chunk * 10, ..Position::default() },
    ///     end: Position { seq: chunk * 10 + 10, ..Position::default() },
    ///     counts: Counts { records: 10, ok: 10, outputs: 10, ..Counts::default() },
    ///     output_end: out, failures_end: 0,
    /// };
    /// // Unordered mode: chunks 0, 1 and 3 committed (3 before 1), chunk 2 not.
    /// let p = ResumePoint::from_commits(&[c(0, 100), c(3, 200), c(1, 300)]);
    /// assert_eq!(p.next_chunk, 2);
    /// assert_eq!(p.position.unwrap().seq, 20);
    /// assert_eq!(p.output_end, 300);
    /// assert_eq!(p.committed_after, vec![3]);
    /// ```
    pub fn from_commits(commits: &[ChunkCommit]) -> ResumePoint {
        let mut sorted: Vec<&ChunkCommit> = commits.iter().collect();
        sorted.sort_by_key(|c| c.chunk);
        let mut next_chunk = 0u64;
        let mut position = None;
        let mut rest = sorted.as_slice();
        while let Some((first, tail)) = rest.split_first() {
            if first.chunk != next_chunk {
                break;
            }
            position = Some(first.end);
            next_chunk += 1;
            rest = tail;
        }
        ResumePoint {
            next_chunk,
            position,
            output_end: commits.iter().map(|c| c.output_end).max().unwrap_or(0),
            failures_end: commits.iter().map(|c| c.failures_end).max().unwrap_or(0),
            committed_after: rest.iter().map(|c| c.chunk).collect(),
        }
    }
}

/// The checkpoint store. One job per ledger.
///
/// Object safe: callers hold a `Box<dyn Ledger>` from [`open`]. Every implementation passes the
/// conformance suite in `herdsman_ledger::conformance` (feature `test-support`).
///
/// Two ways to commit a chunk:
///
/// - **Directly** ([`commit_chunk`](Ledger::commit_chunk), [`commit_chunks`](Ledger::commit_chunks)),
///   by the one process that holds the job (the state directory's lock): no claim is needed.
/// - **Through a claim** ([`claim`](Ledger::claim), [`heartbeat`](Ledger::heartbeat),
///   [`commit`](Ledger::commit), [`release`](Ledger::release)), when several workers share
///   a job: chunks planned with [`plan_chunks`](Ledger::plan_chunks) are handed to one owner at
///   a time under a lease, and the claim's attempt number fences late commits.
///
/// Protocol for a crash-safe run: append a chunk's lines to the partial files, fsync them,
/// then commit with the lengths they reached. On resume, truncate the partial files to
/// [`ResumePoint::output_end`] / [`ResumePoint::failures_end`] and reprocess from
/// [`ResumePoint::next_chunk`], skipping [`ResumePoint::committed_after`].
pub trait Ledger: Send {
    /// Start or resume the job. `Fresh` if the ledger is empty; `Resumed`/`Finished` if the
    /// stored identity equals `id`; [`LedgerError::IdentityChanged`] otherwise (and nothing
    /// changes).
    fn open_job(&mut self, id: &JobIdentity) -> Result<Opened, LedgerError>;

    /// Forget everything (for `--restart`).
    fn reset(&mut self) -> Result<(), LedgerError>;

    /// Record chunks as pending, ready to be claimed. A chunk that is already recorded
    /// (pending, claimed or committed) is left as it is, so every node may plan the same
    /// chunks, and chunks may be planned as they are discovered. One transaction.
    fn plan_chunks(&mut self, chunks: &[ChunkPlan]) -> Result<(), LedgerError>;

    /// Hand the lowest-numbered claimable chunk to `owner` until `lease` from now, with an
    /// attempt number one higher than the chunk's previous one. Claimable: pending, or
    /// claimed under a lease that ran out. `None` when nothing is claimable now (every
    /// planned chunk is committed or held under a live lease, or the job is finished).
    fn claim(&mut self, owner: &str, lease: Duration) -> Result<Option<Claim>, LedgerError>;

    /// Extend the claim's lease to `lease` from now and return the new expiry. Fails with
    /// [`LedgerError::StaleClaim`] if the claim is no longer current (the chunk was claimed
    /// again, released or committed): stop working on the chunk and discard its output.
    fn heartbeat(&mut self, claim: &Claim, lease: Duration) -> Result<SystemTime, LedgerError>;

    /// Give the claimed chunk back (pending again, for anyone to claim). Fails with
    /// [`LedgerError::StaleClaim`], changing nothing, if the claim is no longer current.
    fn release(&mut self, claim: &Claim) -> Result<(), LedgerError>;

    /// Commit a claimed chunk, fenced by the claim's attempt number: the chunk's state, counts,
    /// positions and output offsets change together in one durable transaction, and only if
    /// `claim` is still the chunk's current claim. Otherwise nothing changes and the error is
    /// [`LedgerError::StaleClaim`] (claimed again since), [`LedgerError::AlreadyCommitted`]
    /// (this claim already committed it) or [`LedgerError::ClaimMismatch`] (`c` is another
    /// chunk); the refusals of [`commit_chunk`](Ledger::commit_chunk) apply too.
    fn commit(&mut self, claim: &Claim, c: &ChunkCommit) -> Result<(), LedgerError>;

    /// Record one chunk as committed without a claim, in one durable transaction, for the
    /// process that holds the job alone. Committing the same chunk twice, committing after the
    /// job finished, committing offsets smaller than ones already committed, or committing a
    /// chunk another owner holds under a live lease ([`LedgerError::ClaimHeld`]) is an error
    /// and changes nothing.
    fn commit_chunk(&mut self, c: &ChunkCommit) -> Result<(), LedgerError> {
        self.commit_chunks(std::slice::from_ref(c))
    }

    /// Record several chunks as committed in one durable transaction: all of them or none.
    /// One fsync for the batch instead of one per chunk, for a caller that fsyncs the partial
    /// files once for several chunks. The same refusals as
    /// [`commit_chunk`](Ledger::commit_chunk) apply, checked in slice order (so a batch that
    /// repeats a chunk, or whose offsets go down, is refused whole). An empty slice does
    /// nothing.
    fn commit_chunks(&mut self, commits: &[ChunkCommit]) -> Result<(), LedgerError>;

    /// Mark the job finished (after the final rename), storing the summary JSON. Calling it
    /// again replaces the summary.
    fn mark_finished(&mut self, summary_json: &str) -> Result<(), LedgerError>;

    /// Sums over the committed chunks (all zero when no job is recorded).
    fn totals(&self) -> Result<Totals, LedgerError>;

    /// Read-only view for `herdsman status`: the identity, commits, totals, timestamps and
    /// finished flag.
    fn status(&self) -> Result<LedgerStatus, LedgerError>;

    /// Appends samples to the job's history (see [`HistorySample`]), in one transaction.
    ///
    /// Contract: history is an observation, not a checkpoint. An implementation must not make
    /// the call wait for durability of its own (a later chunk commit makes the samples
    /// durable), must keep the samples when the job is reset only until the reset (a reset
    /// forgets them), and must keep earlier runs' samples when a job resumes. Fails with
    /// [`LedgerError::NoJob`] before [`open_job`](Ledger::open_job), and with
    /// [`LedgerError::Unsupported`] on a backend that keeps no history (the default).
    fn append_history(&mut self, samples: &[HistorySample]) -> Result<(), LedgerError> {
        let _ = samples;
        Err(LedgerError::Unsupported {
            what: "the run's history",
        })
    }

    /// Every sample of the job's history, ordered by run and time; empty when there are none
    /// (also for a ledger written before history existed). [`LedgerError::Unsupported`] on a
    /// backend that keeps no history (the default).
    fn history(&self) -> Result<Vec<HistorySample>, LedgerError> {
        Err(LedgerError::Unsupported {
            what: "the run's history",
        })
    }

    /// The highest run number in the job's history (0 when there is none): the next run
    /// numbers its samples one higher.
    fn last_history_run(&self) -> Result<u32, LedgerError> {
        Ok(self.history()?.iter().map(|s| s.run).max().unwrap_or(0))
    }

    /// Replaces the slowest records kept for `run` with `records` (at most
    /// [`SLOWEST_PER_RUN`] are meant to be kept), in one transaction, with the same durability
    /// contract as [`append_history`](Ledger::append_history).
    fn replace_slowest(&mut self, run: u32, records: &[SlowRecord]) -> Result<(), LedgerError> {
        let _ = (run, records);
        Err(LedgerError::Unsupported {
            what: "the slowest records",
        })
    }

    /// The slowest records of every run, ordered by run, then slowest first.
    fn slowest(&self) -> Result<Vec<SlowRecord>, LedgerError> {
        Err(LedgerError::Unsupported {
            what: "the slowest records",
        })
    }
}

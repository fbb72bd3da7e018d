//! A call whose statement the server carried out but whose reply never arrived (the
//! connection broke in between) is retried on a new connection and recognised as done: the
//! commit is neither refused as a duplicate nor applied twice, the claim returns the chunk it
//! took instead of taking another.
//!
//! A small TCP proxy between the ledger and the server drops the connection instead of
//! forwarding the next reply that holds a given command tag (`UPDATE 1`, `COMMIT`) once it is
//! armed: the server has then carried the statement out and committed it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herdsman_ledger::Ledger;
use herdsman_ledger_postgres::{ChunkParts, PostgresLedger};

use crate::common::{self, commit_of, identity, part, plans};

/// Forwards 127.0.0.1:`port` to the server; once armed with a pattern, the next reply from
/// the server that contains it is thrown away and both sides of that connection are closed.
struct Proxy {
    port: u16,
    cut: Cut,
}

type Cut = Arc<Mutex<Option<&'static [u8]>>>;

impl Proxy {
    fn start(server_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut: Cut = Arc::default();
        let armed = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    continue;
                };
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || pump(client, upstream, None));
                let armed = armed.clone();
                std::thread::spawn(move || pump(u2, c2, Some(armed)));
            }
        });
        Proxy { port, cut }
    }

    /// Cuts the connection instead of forwarding the next reply holding `tag`.
    fn arm(&self, tag: &'static [u8]) {
        *self.cut.lock().unwrap() = Some(tag);
    }

    /// Whether the armed cut happened.
    fn cut_done(&self) -> bool {
        self.cut.lock().unwrap().is_none()
    }
}

/// Copies `from` to `to` until either closes; with `cut`, drops the connection instead of
/// forwarding data that holds the armed pattern.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: Option<Cut>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(cut) = &cut {
            let mut armed = cut.lock().unwrap();
            if armed.is_some_and(|tag| buf[..n].windows(tag.len()).any(|w| w == tag)) {
                *armed = None;
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[test]
fn a_commit_and_a_claim_whose_replies_were_lost_are_recognised_on_retry() {
    let server = crate::server_or_skip!(
        "a_commit_and_a_claim_whose_replies_were_lost_are_recognised_on_retry"
    );
    let proxy = Proxy::start(server.port());
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port);
    let options = common::options("lost");
    let mut ledger = PostgresLedger::connect(&url, options).unwrap();
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(3)).unwrap();
    let lease = Duration::from_secs(120);

    // The claim's reply is lost: the retry returns the chunk the first try took.
    proxy.arm(b"UPDATE 1\0");
    let c0 = ledger.claim("node-a", lease).unwrap().unwrap();
    assert!(proxy.cut_done(), "the reply was cut");
    assert_eq!((c0.chunk, c0.attempt), (0, 1));

    // The commit's reply is lost: the retry finds it done.
    proxy.arm(b"UPDATE 1\0");
    ledger
        .commit_with_parts(&c0, &commit_of(&c0), &part(&c0))
        .unwrap();
    assert!(proxy.cut_done(), "the reply was cut");

    // A direct commit (one transaction) whose reply is lost.
    let c1 = ledger.claim("node-a", lease).unwrap().unwrap();
    assert_eq!((c1.chunk, c1.attempt), (1, 1));
    ledger.release(&c1).unwrap();
    proxy.arm(b"COMMIT\0");
    let mut direct = commit_of(&c1);
    direct.counts.retries = 7;
    ledger.commit_chunk(&direct).unwrap();
    assert!(proxy.cut_done(), "the reply was cut");

    // A release whose reply is lost.
    let c2 = ledger.claim("node-a", lease).unwrap().unwrap();
    assert_eq!(c2.chunk, 2);
    proxy.arm(b"UPDATE 1\0");
    ledger.release(&c2).unwrap();
    assert!(proxy.cut_done(), "the reply was cut");
    let c2 = ledger.claim("node-a", lease).unwrap().unwrap();
    assert_eq!((c2.chunk, c2.attempt), (2, 2));

    let status = ledger.status().unwrap();
    assert_eq!(status.commits.len(), 2);
    assert_eq!(status.totals.counts.records, 200);
    assert_eq!(status.totals.counts.retries, 7);
    assert_eq!(
        ledger.manifest().unwrap()[0],
        ChunkParts {
            chunk: 0,
            attempt: 1,
            parts: vec!["part-0-1".into()]
        }
    );
}

#[test]
fn a_commit_and_claim_whose_reply_was_lost_returns_the_claim_it_made() {
    let server =
        crate::server_or_skip!("a_commit_and_claim_whose_reply_was_lost_returns_the_claim_it_made");
    let proxy = Proxy::start(server.port());
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port);
    let mut ledger = PostgresLedger::connect(&url, common::options("lost-chain")).unwrap();
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(3)).unwrap();
    let lease = Duration::from_secs(120);
    let c0 = ledger.claim("node-a", lease).unwrap().unwrap();

    // The statement committed chunk 0 and claimed chunk 1; its reply is lost. The retry
    // neither commits again nor claims another chunk: it returns the claim made.
    proxy.arm(b"SELECT 1\0");
    let next = ledger
        .commit_and_claim(&c0, &commit_of(&c0), &part(&c0), "node-a", lease)
        .unwrap()
        .expect("chunk 1 was claimed with the commit");
    assert!(proxy.cut_done(), "the reply was cut");
    assert_eq!((next.chunk, next.attempt), (1, 1));
    let rows = ledger.chunk_rows().unwrap();
    assert_eq!(rows[1].attempt, 1, "chunk 1 was claimed once");
    assert_eq!(rows[2].attempt, 0, "chunk 2 was not claimed");
    assert_eq!(ledger.totals().unwrap().chunks, 1);

    // The last commit's reply is lost when nothing was left to claim: the retry says so.
    let c2 = ledger
        .commit_and_claim(&next, &commit_of(&next), &part(&next), "node-a", lease)
        .unwrap()
        .expect("chunk 2 is pending");
    proxy.arm(b"SELECT 1\0");
    let none = ledger
        .commit_and_claim(&c2, &commit_of(&c2), &part(&c2), "node-a", lease)
        .unwrap();
    assert!(proxy.cut_done(), "the reply was cut");
    assert!(none.is_none(), "nothing was left to claim: {none:?}");
    assert_eq!(ledger.totals().unwrap().chunks, 3);
    assert_eq!(ledger.manifest().unwrap().len(), 3);
}

#[test]
fn a_batch_commit_whose_reply_was_lost_returns_its_results_and_claim() {
    let server =
        crate::server_or_skip!("a_batch_commit_whose_reply_was_lost_returns_its_results_and_claim");
    let proxy = Proxy::start(server.port());
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port);
    let mut ledger = PostgresLedger::connect(&url, common::options("lost-batch")).unwrap();
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(4)).unwrap();
    let lease = Duration::from_secs(120);
    let batch: Vec<_> = (0..3)
        .map(|_| {
            let c = ledger.claim("node-a", lease).unwrap().unwrap();
            let commit = commit_of(&c);
            let parts = part(&c);
            (c, commit, parts)
        })
        .collect();

    // The transaction committed on the server; its COMMIT reply never arrived.
    proxy.arm(b"COMMIT\0");
    let (results, next) = ledger
        .commit_batch(&batch, Some(("node-a", lease)))
        .unwrap();
    assert!(proxy.cut_done(), "the reply was cut");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let next = next.expect("chunk 3 was claimed with the batch");
    assert_eq!((next.chunk, next.attempt), (3, 1));
    let rows = ledger.chunk_rows().unwrap();
    assert_eq!(rows[3].attempt, 1, "chunk 3 was claimed once");
    assert_eq!(ledger.totals().unwrap().chunks, 3);
    assert_eq!(ledger.manifest().unwrap().len(), 3);
}

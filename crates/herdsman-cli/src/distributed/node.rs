//! A node's claims: the engine's input, a thread that claims chunks from the shared ledger
//! (two in one transaction when none waits) and reads their records ahead of the engine
//! ([`ClaimReader`], [`ClaimedRecords`]), the
//! claims waiting for it, made by a commit in its own transaction or by a grouped claim
//! ([`Ahead`]), the heartbeat that keeps the node's leases alive ([`Heartbeat`]), and the
//! node's ear for the end of the job, which the ledger announces when the publishing node
//! marks it finished ([`EndNotice`]).
//!
//! This module must never hand the engine a record of a chunk this node did not claim, and
//! never wait in `next()` for a chunk to become claimable (records the engine's puller holds
//! would never be run): it waits only for a read or a claim in progress.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herdsman::StopToken;
use herdsman_io::{InputSpec, Source, SourceOptions};
use herdsman_ledger::{Claim, Ledger, LedgerError};
use herdsman_ledger_postgres::{PostgresLedger, FINISHED_CHANNEL};

use crate::chunks::{ChunkInfo, CliItem, Payload};
use crate::distributed::parts::Claims;

/// The first wait of a node without a claimable chunk before it looks again.
pub(crate) const IDLE_POLL_FIRST: Duration = Duration::from_millis(20);

/// The longest wait of a node without a claimable chunk before it looks again.
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(200);

/// The engine's window on a node: at most this many records are pulled (so claimed) and
/// not yet written, so a node holds only the chunk its workers are on, the next one, and
/// what the workers' queues take (`jobs` records each, twice), never the chunks other
/// nodes could run now. A smaller `--window` stays.
pub(crate) fn claim_window(window: usize, chunk_size: usize, jobs: usize) -> usize {
    let ahead = chunk_size
        .saturating_mul(2)
        .saturating_add(jobs.saturating_mul(2));
    window.min(ahead).max(1)
}

/// The wait of a node that found nothing claimable: short at first, so that it notices a
/// chunk given up or the job's end promptly, then doubling up to [`IDLE_POLL`] so that idle
/// nodes do not hammer the ledger.
pub(crate) struct IdlePoll {
    next: Duration,
}

impl IdlePoll {
    /// A poll that waits [`IDLE_POLL_FIRST`] first.
    pub(crate) fn new() -> IdlePoll {
        IdlePoll {
            next: IDLE_POLL_FIRST,
        }
    }

    /// Waits before the next look, unless the run is stopped or the job's end is announced.
    pub(crate) fn wait(&mut self, notice: &mut EndNotice) {
        let wait = self.next;
        self.next = (self.next * 2).min(IDLE_POLL);
        notice.wait(wait);
    }

    /// A claim succeeded: the next idle stretch starts with a short wait again.
    pub(crate) fn reset(&mut self) {
        self.next = IDLE_POLL_FIRST;
    }
}

/// A node's ear for the end of its job: a connection that listens for the announcement the
/// ledger makes when the publishing node marks the job finished
/// ([`herdsman_ledger_postgres::FINISHED_CHANNEL`]), so that a node waiting for the end
/// (nothing left to claim, or the output being assembled elsewhere) leaves as soon as the job
/// is finished instead of at its next look at the ledger. It connects, on a thread of its
/// own, when the node first waits (a node that never waits, such as a lone node that
/// finishes the job itself, costs the server no connection); until it is ready, or if it
/// cannot connect (only a debug log says so), waits are plain sleeps and the nodes' looks at
/// the ledger find the end as before.
pub(crate) struct EndNotice {
    url: String,
    job: String,
    stop: StopToken,
    connecting: Option<std::thread::JoinHandle<Option<postgres::Client>>>,
    client: Option<postgres::Client>,
    /// Whether the connection was asked for.
    started: bool,
}

impl EndNotice {
    /// An ear for the end of the job named `job` in the ledger at `url`; it connects when
    /// first needed.
    pub(crate) fn start(url: &str, job: &str, stop: StopToken) -> EndNotice {
        EndNotice {
            url: url.to_string(),
            job: job.to_string(),
            stop,
            connecting: None,
            client: None,
            started: false,
        }
    }

    /// The listening connection, once it is made; the first call starts making it.
    fn ready(&mut self) -> Option<&mut postgres::Client> {
        if !self.started {
            self.started = true;
            let url = self.url.clone();
            self.connecting = std::thread::Builder::new()
                .name("herdsman-end-notice".into())
                .spawn(move || match listen(&url) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot listen for the job's end; polling instead");
                        None
                    }
                })
                .ok();
        }
        if self.client.is_none() && self.connecting.as_ref().is_some_and(|h| h.is_finished()) {
            self.client = self.connecting.take().and_then(|h| h.join().ok()).flatten();
        }
        self.client.as_mut()
    }

    /// Waits `d`, or less when the run is stopped or this job's end is announced (then
    /// returns true).
    pub(crate) fn wait(&mut self, d: Duration) -> bool {
        self.wait_with(d, true)
    }

    /// [`EndNotice::wait`] that a stopped run does not cut short (the wait for another node's
    /// assembly, which a stop does not end either).
    pub(crate) fn wait_for_end(&mut self, d: Duration) -> bool {
        self.wait_with(d, false)
    }

    fn wait_with(&mut self, d: Duration, watch_stop: bool) -> bool {
        use postgres::fallible_iterator::FallibleIterator;
        let until = Instant::now() + d;
        let job = self.job.clone();
        while !(watch_stop && self.stop.is_stopped()) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let slice = left.min(Duration::from_millis(20));
            let Some(client) = self.ready() else {
                std::thread::sleep(slice);
                continue;
            };
            let heard = client.notifications().timeout_iter(slice).next();
            match heard {
                Ok(Some(n)) if n.payload() == job => return true,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "lost the connection that listens for the job's end; polling instead");
                    self.client = None;
                }
            }
        }
        false
    }
}

/// A connection to `url` that listens on [`FINISHED_CHANNEL`].
fn listen(url: &str) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(10));
    if config.get_application_name().is_none() {
        config.application_name("herdsman");
    }
    let mut client = config.connect(postgres::NoTls)?;
    client.batch_execute(&format!("LISTEN {FINISHED_CHANNEL}"))?;
    Ok(client)
}

/// Chunks the node's input claims in one transaction when no claim waits, at least: the one
/// it reads now and the next, as many as the claim window ([`claim_window`]) holds. Chunks
/// that its workers finish within a few milliseconds are claimed more at a time
/// ([`Ahead::want`]).
pub(crate) const CLAIM_AT_ONCE: u32 = 2;

/// The most chunks a node claims at a time, however fast its workers.
pub(crate) const CLAIM_AT_MOST: u32 = 64;

/// How much of its own work a node holds claimed ahead: a claim per chunk its workers finish
/// within this time (at least [`CLAIM_AT_ONCE`], at most [`CLAIM_AT_MOST`]), so that a node
/// whose chunks take a few milliseconds claims in one transaction what it runs in this time,
/// instead of one per chunk, while a node with slow chunks holds only the next one or two
/// (the other nodes take the rest).
pub(crate) const CLAIM_HORIZON: Duration = Duration::from_millis(100);

/// How many chunks a node claims at a time when it starts one every `interval`.
pub(crate) fn claims_wanted(interval: Duration) -> u32 {
    let per = interval.max(Duration::from_micros(1));
    let n = CLAIM_HORIZON.as_nanos().div_ceil(per.as_nanos());
    (n.min(u128::from(CLAIM_AT_MOST)) as u32).max(CLAIM_AT_ONCE)
}

/// Why the claimer stopped early: a ledger or input error, for the run's message.
pub(crate) type Fatal = Arc<Mutex<Option<anyhow::Error>>>;

/// The claim a commit made of the next chunk (in the commit's transaction), or the later
/// claims of a grouped claim or batch commit, waiting for the claimer. Each is in the node's
/// claims from the moment it is made, so the heartbeat keeps its lease alive; at most
/// [`Ahead::want`] wait.
#[derive(Clone)]
pub(crate) struct Ahead {
    /// By chunk: the lowest is read first, so consecutive chunks read on
    /// ([`ClaimReader::source`]) whichever transaction claimed them first.
    slot: Arc<Mutex<std::collections::BTreeMap<u64, Claim>>>,
    /// How many chunks the node claims at a time ([`claims_wanted`] of its chunk rate).
    want: Arc<std::sync::atomic::AtomicU32>,
    /// The node's name, the owner of its claims.
    pub(crate) node: String,
    /// The lease a claim takes.
    pub(crate) lease: Duration,
}

impl Ahead {
    pub(crate) fn new(node: String, lease: Duration) -> Ahead {
        Ahead {
            slot: Arc::default(),
            want: Arc::new(std::sync::atomic::AtomicU32::new(CLAIM_AT_ONCE)),
            node,
            lease,
        }
    }

    /// Whether no claim is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// How many chunks the node claims at a time, and at most holds waiting.
    pub(crate) fn want(&self) -> u32 {
        self.want.load(Ordering::Relaxed)
    }

    /// How many claims wait.
    pub(crate) fn len(&self) -> usize {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Keeps `claim` for the claimer, among the node's claims.
    pub(crate) fn put(&self, claim: Claim, claims: &Claims) {
        claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(claim.chunk, claim.clone());
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(claim.chunk, claim);
    }

    /// The lowest waiting claim, unless the heartbeat found its lease lost meanwhile.
    pub(crate) fn take(&self, claims: &Claims) -> Option<Claim> {
        let claim = self
            .slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_first()?
            .1;
        let held = claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&claim.chunk)
            == Some(&claim);
        held.then_some(claim)
    }
}

/// The engine's input: the records of the chunks this node claims, in claim order.
pub(crate) struct ClaimReader {
    pub(crate) ledger: PostgresLedger,
    pub(crate) node: String,
    pub(crate) lease: Duration,
    pub(crate) specs: Vec<InputSpec>,
    pub(crate) options: SourceOptions,
    pub(crate) claims: Claims,
    pub(crate) announce: Sender<ChunkInfo>,
    pub(crate) stop: StopToken,
    pub(crate) fatal: Fatal,
    pub(crate) next_index: u64,
    /// The items of the chunk just read, until the reading thread hands them on.
    pub(crate) pending: Vec<CliItem>,
    /// Chunks this node claimed, for its summary.
    pub(crate) claimed: Arc<Mutex<HashSet<u64>>>,
    /// Set when this node's commit left no chunk open (it assembles the output).
    pub(crate) completed_job: Arc<AtomicBool>,
    /// The claim the pass starts with.
    pub(crate) first: Option<Claim>,
    /// Claims made by commits, taken before claiming anew.
    pub(crate) ahead: Ahead,
    /// When the last chunk was started, and the mean time between chunk starts (a moving
    /// average), which sets [`Ahead::want`].
    pub(crate) pace: Option<(Instant, Duration)>,
    /// The input as the last chunk left it: the next chunk, when it starts where that one
    /// ended (a node's claims are mostly consecutive), reads on instead of opening the input
    /// again and seeking.
    pub(crate) source: Option<Source>,
}

impl ClaimReader {
    fn fail(&self, e: anyhow::Error) -> bool {
        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        false
    }

    /// Claims the next chunk and announces it; false when nothing is claimable now (the
    /// pass ends; the caller starts another while chunks are open), the run stops, or an
    /// error ends it. It never waits: the engine's puller may hold records of this node's
    /// chunks until `next()` returns, so waiting here for a chunk to commit could wait forever.
    fn fill(&mut self) -> bool {
        if self.stop.is_stopped() {
            return false;
        }
        self.keep_pace();
        if let Some(claim) = self.first.take() {
            return self.read(claim);
        }
        if let Some(claim) = self.ahead.take(&self.claims) {
            return self.read(claim);
        }
        match self
            .ledger
            .claim_many(&self.node, self.lease, self.ahead.want())
        {
            Ok(claims) => {
                if claims.is_empty() {
                    return false;
                }
                // With the claims a commit made meanwhile, lowest first: a node writes its
                // chunks in chunk order as far as it can (the assembler then reads them as
                // one range).
                for claim in claims {
                    self.ahead.put(claim, &self.claims);
                }
                match self.ahead.take(&self.claims) {
                    Some(first) => self.read(first),
                    None => self.fill(),
                }
            }
            Err(e) => self.fail(anyhow::Error::new(e).context("cannot claim a chunk")),
        }
    }

    /// A chunk starts: the time since the last start goes into the moving average of the
    /// node's pace, and sets how many chunks it claims at a time.
    fn keep_pace(&mut self) {
        let now = Instant::now();
        let mean = match self.pace {
            None => CLAIM_HORIZON,
            Some((last, mean)) => (mean * 3 + now.saturating_duration_since(last)) / 4,
        };
        self.pace = Some((now, mean));
        self.ahead
            .want
            .store(claims_wanted(mean), Ordering::Relaxed);
    }

    /// Reads the records of a claimed chunk and announces it.
    fn read(&mut self, claim: Claim) -> bool {
        let start = match crate::assemble::from_ledger(claim.start) {
            Ok(p) => p,
            Err(e) => return self.fail(anyhow::anyhow!("chunk {} has a start this version cannot read ({e}); the job was planned by another version of herdsman", claim.chunk)),
        };
        let end = match crate::assemble::from_ledger(claim.end) {
            Ok(p) => p,
            Err(e) => return self.fail(anyhow::anyhow!("chunk {} has an end this version cannot read ({e}); the job was planned by another version of herdsman", claim.chunk)),
        };
        tracing::info!(
            chunk = claim.chunk,
            attempt = claim.attempt,
            "chunk claimed"
        );
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(claim.chunk, claim.clone());
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(claim.chunk);
        let at = (claim.start.seq > 0).then_some(start);
        let mut source = match self.source.take() {
            Some(s) if s.next_position() == start => s,
            _ => match Source::open(self.specs.clone(), self.options.clone(), at) {
                Ok(s) => s,
                Err(e) => return self.fail(crate::inputs::source_error(e)),
            },
        };
        let n = claim.end.seq.saturating_sub(claim.start.seq);
        if n == 0 {
            // The one chunk of an empty input: nothing to write.
            let done = herdsman_ledger::ChunkCommit {
                chunk: claim.chunk,
                start: claim.start,
                end: claim.end,
                counts: herdsman_ledger::Counts::default(),
                output_end: 0,
                failures_end: 0,
            };
            let result = self.ledger.commit_with_parts(&claim, &done, &[]);
            self.claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&claim.chunk);
            if result.is_ok() && self.ledger.all_committed().unwrap_or(false) {
                self.completed_job.store(true, Ordering::SeqCst);
            }
            return match result {
                Ok(()) | Err(LedgerError::StaleClaim { .. }) => self.fill(),
                Err(e) => self.fail(anyhow::Error::new(e).context("cannot commit a chunk")),
            };
        }
        let mut records: Vec<(herdsman_io::Position, Payload)> = Vec::new();
        for _ in 0..n {
            match source.next() {
                Some(Ok(r)) => {
                    let payload: Payload = match r.data {
                        Ok(json) => Ok(Arc::from(json)),
                        Err(e) => Err(Arc::new(e)),
                    };
                    records.push((r.pos, payload));
                }
                Some(Err(e)) => return self.fail(crate::inputs::source_error(e)),
                None => {
                    return self.fail(anyhow::anyhow!(
                        "chunk {} ends after the end of the input; the input changed after the job was planned",
                        claim.chunk
                    ))
                }
            }
        }
        self.source = Some(source);
        let items: Vec<CliItem> = records
            .iter()
            .map(|(pos, data)| CliItem {
                seq: pos.seq,
                data: data.clone(),
            })
            .collect();
        let info = ChunkInfo {
            id: claim.chunk,
            first_index: self.next_index,
            start,
            end,
            records,
        };
        self.next_index += items.len() as u64;
        if self.announce.send(info).is_err() {
            return false;
        }
        self.pending = items;
        true
    }

    /// Starts the thread that claims and reads this node's chunks, at most [`READ_AHEAD`]
    /// chunks ahead of the engine, so that neither a chunk's read nor a claim's round trip
    /// stalls the engine's input (on one machine the reader thread of `chunks.rs` does the
    /// same). The thread ends with the pass: when nothing is claimable, the run stops, an error
    /// ends it, or the engine no longer pulls. Join it before the node claims again: it gives
    /// back the ledger connection it claimed with.
    pub(crate) fn spawn(
        mut self,
    ) -> std::io::Result<(ClaimedRecords, std::thread::JoinHandle<PostgresLedger>)> {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD);
        let thread = std::thread::Builder::new()
            .name("herdsman-claimer".into())
            .spawn(move || {
                while self.fill() {
                    if tx.send(std::mem::take(&mut self.pending)).is_err() {
                        break;
                    }
                }
                self.ledger
            })?;
        let records = ClaimedRecords {
            chunks: rx,
            pending: Vec::new().into_iter(),
        };
        Ok((records, thread))
    }
}

/// How many chunks a node's reading thread holds read ahead of the engine.
const READ_AHEAD: usize = 2;

/// The engine's input on a node: the records of the chunks the reading thread
/// ([`ClaimReader::spawn`]) claimed and read, in claim order.
pub(crate) struct ClaimedRecords {
    chunks: std::sync::mpsc::Receiver<Vec<CliItem>>,
    pending: std::vec::IntoIter<CliItem>,
}

impl Iterator for ClaimedRecords {
    type Item = CliItem;

    fn next(&mut self) -> Option<CliItem> {
        loop {
            if let Some(item) = self.pending.next() {
                return Some(item);
            }
            // The thread never waits for a claimable chunk: it ends the pass instead.
            self.pending = self.chunks.recv().ok()?.into_iter();
        }
    }
}

/// The thread that extends the leases of this node's claims every third of the lease, and
/// forgets a claim the ledger says is lost (its chunk was taken over).
pub(crate) struct Heartbeat {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    pub(crate) fn start(
        mut ledger: PostgresLedger,
        claims: Claims,
        lease: Duration,
    ) -> std::io::Result<Heartbeat> {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let thread = std::thread::Builder::new()
            .name("herdsman-heartbeat".into())
            .spawn(move || {
                let every = lease / 3;
                let mut next = Instant::now() + every;
                while !flag.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if now < next {
                        // Woken early by the drop (the node's end), which then joins this thread.
                        std::thread::park_timeout(next - now);
                        continue;
                    }
                    next = Instant::now() + every;
                    let held: Vec<Claim> = claims
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                        .cloned()
                        .collect();
                    for claim in held {
                        match ledger.heartbeat(&claim, lease) {
                            Ok(_) => {}
                            Err(LedgerError::StaleClaim { .. })
                            | Err(LedgerError::AlreadyFinished { .. }) => {
                                tracing::warn!(
                                    chunk = claim.chunk,
                                    "lease lost: another node took the chunk over"
                                );
                                let mut map = claims.lock().unwrap_or_else(|p| p.into_inner());
                                if map.get(&claim.chunk) == Some(&claim) {
                                    map.remove(&claim.chunk);
                                }
                            }
                            Err(e) => {
                                tracing::warn!(chunk = claim.chunk, error = %e, "heartbeat failed; trying again");
                            }
                        }
                    }
                }
            })?;
        Ok(Heartbeat {
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_chunks_are_claimed_many_at_a_time_and_slow_ones_two() {
        // What the node runs in the horizon, at least two and at most the cap.
        assert_eq!(claims_wanted(Duration::from_millis(2)), 50);
        assert_eq!(claims_wanted(Duration::from_millis(5)), 20);
        assert_eq!(claims_wanted(Duration::from_millis(30)), 4);
        assert_eq!(claims_wanted(Duration::from_millis(125)), CLAIM_AT_ONCE);
        assert_eq!(claims_wanted(Duration::from_secs(60)), CLAIM_AT_ONCE);
        assert_eq!(claims_wanted(Duration::ZERO), CLAIM_AT_MOST);
        assert_eq!(claims_wanted(Duration::from_micros(100)), CLAIM_AT_MOST);
    }
}

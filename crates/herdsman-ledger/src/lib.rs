//! The checkpoint ledger: which job this is, and which chunks are committed to the output.
//!
//! The ledger must never report a chunk as committed before its output bytes are durable: the
//! caller fsyncs the partial files first, then calls [`Ledger::commit_chunk`], which returns only
//! once the commit is on disk. See the crate README for the schema and the protocol.
//!
//! ```
//! use herdsman_ledger::{ChunkCommit, JobIdentity, Ledger, Opened, Position, SqliteLedger, StateDir, Token};
//! let tmp = tempfile::tempdir().unwrap();
//! let id = JobIdentity::new().with("input.0.path", "in.csv").with("input.0.size", "100");
//! let commit = ChunkCommit {
//!     chunk: 0,
//!     start: Position::default(),
//!     end: Position { file_index: 0, seq: 10, token: Token::new(&[1, 100, 11]).unwrap() },
//!     records: 10, ok: 9, failed: 1, filtered: 0, outputs: 9, retries: 2,
//!     output_end: 450, failures_end: 80,
//! };
//! {
//!     let state = StateDir::open(&tmp.path().join("state")).unwrap();
//!     let mut ledger = SqliteLedger::open(&state).unwrap();
//!     assert!(matches!(ledger.open_job(&id).unwrap(), Opened::Fresh));
//!     ledger.commit_chunk(&commit).unwrap();
//! } // crash here, or not: the commit is durable
//! let state = StateDir::open(&tmp.path().join("state")).unwrap();
//! let mut ledger = SqliteLedger::open(&state).unwrap();
//! match ledger.open_job(&id).unwrap() {
//!     Opened::Resumed { commits } => assert_eq!(commits, vec![commit]),
//!     other => panic!("expected Resumed, got {other:?}"),
//! }
//! ```

#![warn(missing_docs)]

mod error;
mod identity;
mod sqlite;
mod state_dir;

use std::time::SystemTime;

pub use error::LedgerError;
pub use identity::{IdentityChange, JobIdentity};
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
    /// Records in the chunk.
    pub records: u64,
    /// Records processed successfully.
    pub ok: u64,
    /// Records that went to the failures (dead-letter) file.
    pub failed: u64,
    /// Records dropped by a filter.
    pub filtered: u64,
    /// Output lines written (differs from `ok` with filter/explode).
    pub outputs: u64,
    /// Retries spent on the chunk's records.
    pub retries: u64,
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
    /// Sum of [`ChunkCommit::records`].
    pub records: u64,
    /// Sum of [`ChunkCommit::ok`].
    pub ok: u64,
    /// Sum of [`ChunkCommit::failed`].
    pub failed: u64,
    /// Sum of [`ChunkCommit::filtered`].
    pub filtered: u64,
    /// Sum of [`ChunkCommit::outputs`].
    pub outputs: u64,
    /// Sum of [`ChunkCommit::retries`].
    pub retries: u64,
}

impl Totals {
    /// Sums `commits`.
    pub fn of(commits: &[ChunkCommit]) -> Totals {
        commits.iter().fold(Totals::default(), |t, c| Totals {
            chunks: t.chunks + 1,
            records: t.records + c.records,
            ok: t.ok + c.ok,
            failed: t.failed + c.failed,
            filtered: t.filtered + c.filtered,
            outputs: t.outputs + c.outputs,
            retries: t.retries + c.retries,
        })
    }
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
    /// use herdsman_ledger::{ChunkCommit, Position, ResumePoint};
    /// let c = |chunk: u64, out: u64| ChunkCommit {
    ///     chunk, start: Position { seq: chunk * 10, ..Position::default() },
    ///     end: Position { seq: chunk * 10 + 10, ..Position::default() },
    ///     records: 10, ok: 10, failed: 0, filtered: 0, outputs: 10, retries: 0,
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
/// Protocol for a crash-safe run: append a chunk's lines to the partial files, fsync them,
/// then [`commit_chunk`](Ledger::commit_chunk) with the lengths they reached. On resume,
/// truncate the partial files to [`ResumePoint::output_end`] / [`ResumePoint::failures_end`]
/// and reprocess from [`ResumePoint::next_chunk`], skipping [`ResumePoint::committed_after`].
pub trait Ledger: Send {
    /// Start or resume the job. `Fresh` if the ledger is empty; `Resumed`/`Finished` if the
    /// stored identity equals `id`; [`LedgerError::IdentityChanged`] otherwise.
    fn open_job(&mut self, id: &JobIdentity) -> Result<Opened, LedgerError>;
    /// Forget everything (for `--restart`).
    fn reset(&mut self) -> Result<(), LedgerError>;
    /// Record one chunk as committed, in one durable transaction. Committing the same chunk
    /// twice, committing after the job finished, or committing offsets smaller than ones
    /// already committed is an error and changes nothing.
    fn commit_chunk(&mut self, c: &ChunkCommit) -> Result<(), LedgerError>;
    /// Record several chunks as committed in one durable transaction: all of them or none.
    /// One fsync for the batch instead of one per chunk, for a caller that fsyncs the partial
    /// files once for several chunks. The same refusals as
    /// [`commit_chunk`](Ledger::commit_chunk) apply, checked in slice order (so a batch that
    /// repeats a chunk, or whose offsets go down, is refused whole). An empty slice does
    /// nothing.
    ///
    /// The default implementation calls `commit_chunk` for each, which is not atomic;
    /// implementations override it.
    fn commit_chunks(&mut self, commits: &[ChunkCommit]) -> Result<(), LedgerError> {
        commits.iter().try_for_each(|c| self.commit_chunk(c))
    }
    /// Mark the job finished (after the final rename), storing the summary JSON. Calling it
    /// again replaces the summary.
    fn mark_finished(&mut self, summary_json: &str) -> Result<(), LedgerError>;
    /// Read-only view for `herdsman status`: the identity, commits, totals, timestamps and
    /// finished flag.
    fn status(&self) -> Result<LedgerStatus, LedgerError>;
}

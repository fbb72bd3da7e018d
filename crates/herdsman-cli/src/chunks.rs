//! Cuts the record stream into chunks and hands the engine one item per record.
//!
//! A chunk is a run of consecutive records with a deterministic id, the unit that is written
//! and committed. The reader announces each chunk (with the records it holds, for dead-letter
//! entries) before the engine sees its first item. It must never read ahead more than one
//! chunk, and never yield a record of a chunk that an earlier run already committed.

use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use herdsman_io::{Position, Record, RecordError, Source, SourceError};

/// A record's payload: its JSON text, or why it could not be read.
pub type Payload = Result<Arc<[u8]>, Arc<RecordError>>;

/// One item for the engine: a record and its number in the whole input.
#[derive(Clone, Debug)]
pub struct CliItem {
    pub seq: u64,
    pub data: Payload,
}

/// What the assembler needs to know about a chunk.
#[derive(Debug)]
pub struct ChunkInfo {
    pub id: u64,
    /// Engine index of the chunk's first record.
    pub first_index: u64,
    pub start: Position,
    /// Where the next chunk starts.
    pub end: Position,
    /// Every record of the chunk, in input order, with its position.
    pub records: Vec<(Position, Payload)>,
}

/// Limits on one chunk: whichever is reached first ends it.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    pub records: usize,
    pub bytes: usize,
    /// Records to read in all (`--limit`); `None` reads the whole input.
    pub total: Option<u64>,
}

/// A chunk as read, before the engine numbers its records.
struct RawChunk {
    id: u64,
    start: Position,
    end: Position,
    records: Vec<(Position, Payload)>,
}

/// How many chunks the reading thread may prepare ahead of the engine.
const READ_AHEAD: usize = 2;

/// The engine's input iterator. Records are read and parsed on a thread of their own, at
/// most [`READ_AHEAD`] chunks ahead, so parsing does not compete with scheduling.
pub struct ChunkReader {
    chunks: Receiver<RawChunk>,
    next_index: u64,
    announce: Sender<ChunkInfo>,
    pending: std::vec::IntoIter<CliItem>,
}

impl ChunkReader {
    /// `first_chunk` is the id of the chunk that starts at the source's current position;
    /// chunks in `skip` are read but not yielded (already committed by an earlier run).
    /// A read error ends the input and is left in `fatal`.
    pub fn new(
        source: Source,
        limits: ChunkLimits,
        first_chunk: u64,
        skip: HashSet<u64>,
        announce: Sender<ChunkInfo>,
        fatal: Arc<Mutex<Option<SourceError>>>,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> std::io::Result<ChunkReader> {
        let (tx, rx) = sync_channel(READ_AHEAD);
        std::thread::Builder::new()
            .name("herdsman-reader".into())
            .spawn(move || read_chunks(source, limits, first_chunk, skip, tx, fatal, metrics))?;
        Ok(ChunkReader {
            chunks: rx,
            next_index: 0,
            announce,
            pending: Vec::new().into_iter(),
        })
    }

    /// Takes the next chunk and announces it; false at the end of the input.
    fn fill(&mut self) -> bool {
        let Ok(raw) = self.chunks.recv() else {
            return false;
        };
        match self.announce_chunk(raw) {
            Some(items) => {
                self.pending = items.into_iter();
                true
            }
            None => false,
        }
    }

    /// The next chunk's items, announced, waiting at most `wait` for it: for a caller that
    /// runs whole chunks itself, without the engine (`--copy`). Only for a reader whose
    /// items were never taken one at a time.
    pub fn next_chunk_within(&mut self, wait: std::time::Duration) -> NextChunk {
        debug_assert!(self.pending.len() == 0);
        match self.chunks.recv_timeout(wait) {
            Ok(raw) => match self.announce_chunk(raw) {
                Some(items) => NextChunk::Items(items),
                None => NextChunk::Ended,
            },
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => NextChunk::Pending,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => NextChunk::Ended,
        }
    }

    /// Numbers a chunk's records and announces the chunk; `None` when the assembler is gone.
    fn announce_chunk(&mut self, raw: RawChunk) -> Option<Vec<CliItem>> {
        let items: Vec<CliItem> = raw
            .records
            .iter()
            .map(|(pos, data)| CliItem {
                seq: pos.seq,
                data: data.clone(),
            })
            .collect();
        if let Some(live) = crate::live::current() {
            live.input_at(
                raw.end.file_index,
                raw.end.byte_offset,
                raw.records.len() as u64,
            );
        }
        let info = ChunkInfo {
            id: raw.id,
            first_index: self.next_index,
            start: raw.start,
            end: raw.end,
            records: raw.records,
        };
        self.next_index += items.len() as u64;
        // An error: the assembler is gone, the run is over.
        self.announce.send(info).ok()?;
        Some(items)
    }
}

/// What [`ChunkReader::next_chunk_within`] found.
pub enum NextChunk {
    /// A chunk's items, in input order.
    Items(Vec<CliItem>),
    /// Nothing within the wait; the input goes on.
    Pending,
    /// The input ended (or cannot be read further: see the reader's fatal error).
    Ended,
}

/// The reading thread: cuts the source into chunks, skipping committed ones, until the
/// input ends, a read fails, or the run no longer wants chunks. With `metrics`, counts the
/// bytes of input read, once per chunk.
fn read_chunks(
    mut source: Source,
    limits: ChunkLimits,
    mut next_chunk: u64,
    mut skip: HashSet<u64>,
    tx: SyncSender<RawChunk>,
    fatal: Arc<Mutex<Option<SourceError>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) {
    let mut left = limits.total.unwrap_or(u64::MAX);
    let mut read_to = source.next_position();
    loop {
        let mut read = 0u64;
        let start = source.next_position();
        let mut records = Vec::with_capacity(limits.records.min(4096));
        let mut bytes = 0usize;
        let mut ended = false;
        while records.len() < limits.records && bytes < limits.bytes {
            if left == 0 {
                ended = true;
                break;
            }
            match source.next() {
                None => {
                    ended = true;
                    break;
                }
                Some(Err(e)) => {
                    *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return;
                }
                Some(Ok(Record { pos, data })) => {
                    let payload: Payload = match data {
                        Ok(json) => {
                            bytes += json.len();
                            Ok(Arc::from(json))
                        }
                        Err(e) => {
                            bytes += e.raw.len();
                            Err(Arc::new(e))
                        }
                    };
                    records.push((pos, payload));
                    left -= 1;
                    if let Some(m) = &metrics {
                        let at = source.next_position();
                        read += m.input_read(&read_to, &at);
                        read_to = at;
                    }
                }
            }
        }
        if let Some(m) = &metrics {
            m.add_input_bytes(read);
        }
        if records.is_empty() {
            return;
        }
        let id = next_chunk;
        next_chunk += 1;
        if !skip.remove(&id) {
            let chunk = RawChunk {
                id,
                start,
                end: source.next_position(),
                records,
            };
            if tx.send(chunk).is_err() {
                return;
            }
        }
        if ended {
            return;
        }
    }
}
impl Iterator for ChunkReader {
    type Item = CliItem;

    fn next(&mut self) -> Option<CliItem> {
        loop {
            if let Some(item) = self.pending.next() {
                return Some(item);
            }
            if !self.fill() {
                return None;
            }
        }
    }
}

//! Cuts the record stream into chunks and hands the engine one item per record.
//!
//! A chunk is a run of consecutive records with a deterministic id, the unit that is written
//! and committed. The reader announces each chunk (with the records it holds, for dead-letter
//! entries) before the engine sees its first item. It must never read ahead more than one
//! chunk, and never yield a record of a chunk that an earlier run already committed.

use std::collections::HashSet;
use std::sync::mpsc::Sender;
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
}

/// The engine's input iterator.
pub struct ChunkReader {
    source: Source,
    limits: ChunkLimits,
    next_chunk: u64,
    next_index: u64,
    skip: HashSet<u64>,
    announce: Sender<ChunkInfo>,
    pending: std::vec::IntoIter<CliItem>,
    fatal: Arc<Mutex<Option<SourceError>>>,
    done: bool,
}

impl ChunkReader {
    /// `first_chunk` is the id of the chunk that starts at the source's current position;
    /// chunks in `skip` are read but not yielded (already committed by an earlier run).
    pub fn new(
        source: Source,
        limits: ChunkLimits,
        first_chunk: u64,
        skip: HashSet<u64>,
        announce: Sender<ChunkInfo>,
        fatal: Arc<Mutex<Option<SourceError>>>,
    ) -> ChunkReader {
        ChunkReader {
            source,
            limits,
            next_chunk: first_chunk,
            next_index: 0,
            skip,
            announce,
            pending: Vec::new().into_iter(),
            fatal,
            done: false,
        }
    }

    /// Reads the next chunk that is not skipped; false at the end of the input.
    fn fill(&mut self) -> bool {
        while !self.done {
            let start = self.source.next_position();
            let mut records = Vec::new();
            let mut bytes = 0usize;
            while records.len() < self.limits.records && bytes < self.limits.bytes {
                match self.source.next() {
                    None => {
                        self.done = true;
                        break;
                    }
                    Some(Err(e)) => {
                        *self.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        self.done = true;
                        return false;
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
                    }
                }
            }
            if records.is_empty() {
                return false;
            }
            let id = self.next_chunk;
            self.next_chunk += 1;
            if self.skip.remove(&id) {
                continue;
            }
            let items: Vec<CliItem> = records
                .iter()
                .map(|(pos, data)| CliItem {
                    seq: pos.seq,
                    data: data.clone(),
                })
                .collect();
            let info = ChunkInfo {
                id,
                first_index: self.next_index,
                start,
                end: self.source.next_position(),
                records,
            };
            self.next_index += items.len() as u64;
            if self.announce.send(info).is_err() {
                // The assembler is gone: the run is over.
                self.done = true;
                return false;
            }
            self.pending = items.into_iter();
            return true;
        }
        false
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

//! The I/O threads of one worker process: a writer that feeds its stdin from a channel, and a
//! reader that splits its stdout into lines (bounded by the pool's `max_line_bytes`) and
//! sends them to the pool as events.
//!
//! The pool's own thread never blocks on a worker's pipe; these threads do, and they must
//! never interpret what they carry (that is the protocols' job), never hold more than one
//! line's cap of an unfinished line, and never outlive their pipe: each ends at end of file,
//! on a broken pipe, or when the pool stops listening.

use std::io::{BufWriter, Read, Write};
use std::process::{ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use crate::bounded_lines::{LineSplitter, Piece};

/// Longest part of an incomplete last line quoted in a message.
pub(super) const PARTIAL_QUOTE: usize = 200;
/// After a small read from a worker's stdout, how long its reader waits before reading
/// again, so that the answers of a worker that answers many records per millisecond are
/// taken (and handed to the engine, and answered with new records) a few at a time, not
/// one wake-up each. An answer is never held back longer than this.
const READ_LINGER: Duration = Duration::from_millis(2);
/// A read at least this large means answers arrive faster than lingering could gather
/// them (and the pipe could fill meanwhile): read again at once.
const LINGER_BELOW: usize = 16 * 1024;

pub(super) enum Event {
    /// Complete lines (each ending with `\n`) from a worker's stdout.
    Stdout {
        slot: usize,
        gen: u64,
        chunk: Vec<u8>,
    },
    /// A line longer than the limit; it was discarded.
    TooLong { slot: usize, gen: u64 },
    /// The worker's stdout reached end of file. `partial`: the start of a last line that
    /// was not ended by a newline (it answers nothing).
    Eof {
        slot: usize,
        gen: u64,
        partial: Vec<u8>,
    },
}

pub(super) fn write_loop(stdin: ChildStdin, rx: Receiver<Vec<u8>>) {
    let mut w = BufWriter::with_capacity(64 * 1024, stdin);
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                if w.flush().is_err() {
                    return;
                }
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => {
                let _ = w.flush();
                return;
            }
        };
        if w.write_all(&msg).is_err() {
            return;
        }
    }
}

/// Reads a worker's stdout until end of file: complete lines go to the pool in one event per
/// read, a line longer than `max_line` as [`Event::TooLong`] (the moment it goes over, so a
/// worker that never ends its line cannot stall its record), and at the end an [`Event::Eof`]
/// with the start of an unfinished last line. After a read smaller than [`LINGER_BELOW`]
/// that leaves more of `in_flight` unanswered, it waits [`READ_LINGER`] before reading again.
pub(super) fn read_loop(
    mut stdout: ChildStdout,
    slot: usize,
    gen: u64,
    tx: SyncSender<Event>,
    max_line: usize,
    in_flight: Arc<AtomicUsize>,
) {
    let mut tmp = vec![0u8; 64 * 1024];
    let mut lines = LineSplitter::new(max_line);
    loop {
        let n = match stdout.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let listening = lines.push(&tmp[..n], |piece| {
            let ev = match piece {
                Piece::Lines(chunk) => Event::Stdout { slot, gen, chunk },
                // A line longer than the limit: the rest of it is discarded.
                Piece::Cut(_) => Event::TooLong { slot, gen },
            };
            tx.send(ev).is_ok()
        });
        if !listening {
            return;
        }
        // Let the next answers gather in the pipe (one wake-up of this thread, of the
        // engine's and of the writer's for several answers instead of one each), but only
        // when more answers are on their way: a worker given one record at a time must not
        // wait for this thread after each answer. (A framed record may take several lines,
        // so this undercounts what is still to come, and lingers less, never more.)
        if n < LINGER_BELOW
            && in_flight.load(Ordering::Relaxed) > memchr::memchr_iter(b'\n', &tmp[..n]).count()
        {
            std::thread::sleep(READ_LINGER);
        }
    }
    // A last line without its newline answers nothing: the worker died while writing it.
    let mut partial = lines.finish();
    partial.truncate(PARTIAL_QUOTE);
    let _ = tx.send(Event::Eof { slot, gen, partial });
}

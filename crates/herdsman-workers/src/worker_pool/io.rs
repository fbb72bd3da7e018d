//! The pipes of one worker process: its stdin, written by the engine's thread itself
//! (non-blocking) with a writer thread for what the pipe has no room for, and a reader thread
//! that splits its stdout into lines (bounded by the pool's `max_line_bytes`) and sends them
//! to the pool as events.
//!
//! The pool's own thread never blocks on a worker's pipe; these threads do, and they must
//! never interpret what they carry (that is the protocols' job), never reorder what is
//! written to a worker, never hold more than one line's cap of an unfinished line, and never
//! outlive their pipe: each ends at end of file, on a broken pipe, or when the pool stops
//! listening.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
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

/// A worker's stdin.
///
/// Requests are written by the engine's thread itself, straight into the pipe (which is
/// non-blocking on this side): with the usual pipeline depth they fit in the pipe's buffer,
/// and a direct write costs one system call where a hand-over to a thread cost a wake-up of
/// that thread too, once per batch of records. Whatever the pipe has no room for goes to the
/// writer thread, which waits until the worker reads; while the thread has anything left to
/// write, everything goes through it, so requests reach the worker in the order sent.
pub(super) struct StdinPipe {
    /// Our end of the pipe; `None` once closed.
    pipe: Option<Arc<ChildStdin>>,
    /// To the writer thread; `None` once closed.
    backlog: Option<Sender<Vec<u8>>>,
    /// Pieces handed to the writer thread and not yet written in full. Only the engine's
    /// thread adds to it, so reading 0 there means the thread has written everything.
    queued: Arc<AtomicUsize>,
    /// The pipe could be made non-blocking: direct writes are possible.
    direct: bool,
}

impl StdinPipe {
    /// Takes over a worker's stdin and starts its writer thread (`name`).
    pub(super) fn start(stdin: ChildStdin, name: String) -> std::io::Result<StdinPipe> {
        let direct = set_nonblocking(&stdin).is_ok();
        let pipe = Arc::new(stdin);
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (thread_pipe, thread_queued) = (Arc::clone(&pipe), Arc::clone(&queued));
        std::thread::Builder::new()
            .name(name)
            .spawn(move || backlog_loop(&thread_pipe, &rx, &thread_queued))?;
        Ok(StdinPipe {
            pipe: Some(pipe),
            backlog: Some(tx),
            queued,
            direct,
        })
    }

    /// Writes `bytes` to the worker after everything sent before, without blocking, and
    /// empties it (keeping its memory when the pipe took it all). A broken pipe (the worker
    /// is gone) is not an error here: the worker's end is noticed through its stdout and its
    /// process.
    pub(super) fn send(&mut self, bytes: &mut Vec<u8>) {
        let Some(pipe) = &self.pipe else {
            bytes.clear();
            return;
        };
        let mut done = 0;
        if self.direct && self.queued.load(Ordering::Acquire) == 0 {
            while done < bytes.len() {
                match (&**pipe).write(&bytes[done..]) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.close();
                        break;
                    }
                }
            }
        }
        if done == bytes.len() || self.backlog.is_none() {
            bytes.clear();
            return;
        }
        let rest = if done == 0 {
            std::mem::take(bytes)
        } else {
            let rest = bytes[done..].to_vec();
            bytes.clear();
            rest
        };
        if let Some(tx) = &self.backlog {
            self.queued.fetch_add(1, Ordering::AcqRel);
            let _ = tx.send(rest);
        }
    }

    /// Closes the worker's stdin once everything sent so far is written (at once if it is).
    pub(super) fn close(&mut self) {
        self.pipe = None;
        self.backlog = None;
    }
}

fn set_nonblocking(stdin: &ChildStdin) -> std::io::Result<()> {
    let fd = stdin.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The writer thread: writes what the pipe had no room for, waiting until the worker reads,
/// in order. Ends when the pool closes the stdin (after writing what is left) or the pipe
/// breaks; the pipe is closed when both the pool and this thread have let go of it.
fn backlog_loop(pipe: &ChildStdin, rx: &Receiver<Vec<u8>>, queued: &AtomicUsize) {
    while let Ok(bytes) = rx.recv() {
        if write_waiting(pipe, &bytes).is_err() {
            return;
        }
        queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Writes all of `bytes` to a non-blocking (or blocking) pipe, waiting for room.
fn write_waiting(mut pipe: &ChildStdin, bytes: &[u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match pipe.write(&bytes[done..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut fds = libc::pollfd {
                    fd: pipe.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, for the duration of the call. An error (EINTR)
                // just tries the write again.
                unsafe { libc::poll(&mut fds, 1, -1) };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

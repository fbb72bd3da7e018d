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
use std::time::{Duration, Instant};

use crate::bounded_lines::{LineSplitter, Piece};

/// Longest part of an incomplete last line quoted in a message.
pub(super) const PARTIAL_QUOTE: usize = 200;
/// The longest a worker's reader waits, after a small read, before reading again, so that
/// the answers of a worker that answers many records per millisecond are taken (and handed
/// to the engine, and answered with new records) many at a time, not one wake-up each:
/// every wake-up of herdsman's threads takes a core from a worker. An answer is never held
/// back longer than this (nor than a twentieth of the per-record timeout).
const MAX_LINGER: Duration = Duration::from_millis(10);
/// A read at least this large means answers arrive faster than lingering could gather
/// them (and the pipe could fill meanwhile): read again at once.
const LINGER_BELOW: usize = 16 * 1024;
/// A wait shorter than this is not worth a sleep.
const MIN_LINGER: Duration = Duration::from_micros(50);

/// How long to wait before the next read: half the time the records still in flight should
/// take at the pace just seen (`since_last` for `answered` answers), so that the worker
/// still has about half of its queue when its answers are taken and new records sent; at
/// most `cap`, and not at all when nothing more is expected.
fn linger_for(since_last: Duration, answered: usize, remaining: usize, cap: Duration) -> Duration {
    if answered == 0 || remaining == 0 {
        return Duration::ZERO;
    }
    let answered = u32::try_from(answered).unwrap_or(u32::MAX);
    let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
    let wait = (since_last / answered).saturating_mul(remaining) / 2;
    if wait < MIN_LINGER {
        Duration::ZERO
    } else {
        wait.min(cap)
    }
}

/// The longest lingering for a pool whose per-record timeout is `timeout`.
pub(super) fn linger_cap(timeout: Option<Duration>) -> Duration {
    timeout.map_or(MAX_LINGER, |t| (t / 20).min(MAX_LINGER))
}

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
/// that leaves more of `in_flight` unanswered, it waits before reading again: half the time
/// those records should take at the pace of the answers just read, at most `max_linger`.
pub(super) fn read_loop(
    mut stdout: ChildStdout,
    slot: usize,
    gen: u64,
    tx: SyncSender<Event>,
    max_line: usize,
    in_flight: Arc<AtomicUsize>,
    max_linger: Duration,
) {
    let mut tmp = vec![0u8; 64 * 1024];
    let mut lines = LineSplitter::new(max_line);
    let mut last_read = Instant::now();
    loop {
        let n = match stdout.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let now = Instant::now();
        let since_last = now.saturating_duration_since(last_read);
        last_read = now;
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
        // engine's and of the writer's for many answers instead of one each), but only when
        // more answers are on their way, and only for half the time they should take: a
        // worker given one record at a time must not wait for this thread after each
        // answer, and a worker with a queue must not run out of it. (A framed record may
        // take several lines, so this undercounts what is still to come, and lingers less,
        // never more.)
        if n < LINGER_BELOW {
            let answered = memchr::memchr_iter(b'\n', &tmp[..n]).count();
            let remaining = in_flight.load(Ordering::Relaxed).saturating_sub(answered);
            let wait = linger_for(since_last, answered, remaining, max_linger);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }
    // A last line without its newline answers nothing: the worker died while writing it.
    let mut partial = lines.finish();
    partial.truncate(PARTIAL_QUOTE);
    let _ = tx.send(Event::Eof { slot, gen, partial });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn lingering_follows_the_pace_and_keeps_half_the_queue() {
        // 10 answers in 1 ms with 40 more in flight: 0.1 ms each, the 40 take 4 ms; wait 2.
        assert_eq!(linger_for(MS, 10, 40, MAX_LINGER), 2 * MS);
        // A worker with a deep queue: never longer than the cap.
        assert_eq!(linger_for(MS, 1, 256, MAX_LINGER), MAX_LINGER);
        // A slow worker's second record: at most the cap, though it takes 100 ms.
        assert_eq!(linger_for(100 * MS, 1, 1, MAX_LINGER), MAX_LINGER);
    }

    #[test]
    fn no_lingering_when_nothing_more_is_expected_or_the_wait_is_tiny() {
        assert_eq!(linger_for(MS, 3, 0, MAX_LINGER), Duration::ZERO);
        // Part of a line read: nothing answered, so no pace to follow.
        assert_eq!(linger_for(MS, 0, 10, MAX_LINGER), Duration::ZERO);
        // 100 answers in 1 ms, one more in flight: 5 us, not worth a sleep.
        assert_eq!(linger_for(MS, 100, 1, MAX_LINGER), Duration::ZERO);
    }

    #[test]
    fn lingering_stays_far_below_the_timeout() {
        assert_eq!(linger_cap(None), MAX_LINGER);
        assert_eq!(linger_cap(Some(Duration::from_secs(30))), MAX_LINGER);
        assert_eq!(linger_cap(Some(Duration::from_millis(40))), 2 * MS);
        assert_eq!(
            linger_for(Duration::from_secs(3600), 1, usize::MAX, 2 * MS),
            2 * MS
        );
    }
}

//! Pulling the user's input off the scheduler thread: a puller thread calls `next()` only
//! for items the scheduler granted (never beyond the window), and hands them over in pieces.
//!
//! A `next()` that blocks must never block stop, deadline or results: the scheduler never
//! waits on the puller for longer than a tick, and after the scheduler closes the feed the
//! puller calls `next()` no more (a call already in progress finishes and its item is
//! dropped, never run or counted). Items are handed over one by one until the input has
//! proved fast, so a blocking call does not hold back the items pulled before it; a fast
//! input is handed over in pieces (one message per batch), and goes back to one by one as
//! soon as it slows down.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

/// Largest piece the puller collects before handing it over.
const MAX_PIECE: usize = 1 << 14;
/// Emptied buffers kept for reuse: a reused buffer's memory is already mapped, while a
/// fresh one costs a page fault per 4 KiB.
const SPARES: usize = 32;
/// Smallest piece, unless less was granted (an idle scheduler takes any piece at once).
const MIN_PIECE: usize = 64;
/// A `next()` at most this slow counts as fast.
const FAST_PULL: Duration = Duration::from_micros(20);
/// Consecutive fast pulls after which items are handed over in pieces. Until then (and
/// after any slow stretch) each item is handed over alone.
const PROVEN: usize = 64;
/// Items pulled between two clock readings when pulling in pieces.
const CHECK_EVERY: usize = 256;

enum Msg<T> {
    Items(Vec<T>),
    End,
    /// The puller saw the feed closed and stopped.
    Closed,
    Panicked(Box<dyn Any + Send>),
}

struct Grant {
    /// Items the puller may still pull.
    credit: usize,
    /// Preferred piece size (the scheduler's batch size).
    piece: usize,
    closed: bool,
    /// The puller sleeps on `wake` (only then is a wake-up worth a system call).
    waiting: bool,
}

struct Shared {
    grant: Mutex<Grant>,
    wake: Condvar,
    /// Set with `grant.closed`, read without the lock between two `next()` calls.
    closed: AtomicBool,
    /// The scheduler has free slots and no item: hand over what was pulled at once.
    hungry: AtomicBool,
}

impl Shared {
    fn grant(&self) -> std::sync::MutexGuard<'_, Grant> {
        self.grant.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The scheduler's end of the feed.
pub(crate) struct Feed<T> {
    shared: Arc<Shared>,
    rx: Receiver<Msg<T>>,
    /// Emptied buffers going back to the puller.
    spare_tx: Sender<Vec<T>>,
    /// Pieces received and not yet taken.
    ready: VecDeque<Vec<T>>,
    ready_len: usize,
    /// Items granted and neither taken nor known to be missing (input ended).
    outstanding: usize,
    ended: bool,
}

/// The puller's end: call [`Puller::run`] on its own thread.
pub(crate) struct Puller<I: Iterator> {
    input: I,
    shared: Arc<Shared>,
    tx: Sender<Msg<I::Item>>,
    spare_rx: Receiver<Vec<I::Item>>,
    /// Consecutive fast pulls (see `PROVEN`).
    fast_run: usize,
    /// Returned buffers waiting for reuse.
    stash: Vec<Vec<I::Item>>,
}

/// A feed over `input`; the puller must be run on another thread.
pub(crate) fn feed<I: Iterator>(input: I) -> (Feed<I::Item>, Puller<I>) {
    let shared = Arc::new(Shared {
        grant: Mutex::new(Grant {
            credit: 0,
            piece: 1,
            closed: false,
            waiting: false,
        }),
        wake: Condvar::new(),
        closed: AtomicBool::new(false),
        hungry: AtomicBool::new(false),
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    let (spare_tx, spare_rx) = crossbeam_channel::bounded(SPARES);
    (
        Feed {
            shared: Arc::clone(&shared),
            rx,
            spare_tx,
            ready: VecDeque::new(),
            ready_len: 0,
            outstanding: 0,
            ended: false,
        },
        Puller {
            input,
            shared,
            tx,
            spare_rx,
            fast_run: 0,
            stash: Vec::new(),
        },
    )
}

impl<I: Iterator> Puller<I> {
    /// Pull granted items until the input ends or the feed is closed.
    pub(crate) fn run(mut self) {
        loop {
            let n = {
                let mut g = self.shared.grant();
                while g.credit == 0 && !g.closed {
                    g.waiting = true;
                    g = self.shared.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                    g.waiting = false;
                }
                if g.closed {
                    drop(g);
                    let _ = self.tx.send(Msg::Closed);
                    return;
                }
                // Pieces of at least a few dozen items: one hand-over each.
                let n = g.credit.min(g.piece.max(MIN_PIECE)).clamp(1, MAX_PIECE);
                g.credit -= n;
                n
            };
            let mut piece = self.buffer(n);
            let mut ended = false;
            let shared = &self.shared;
            let input = &mut self.input;
            let fast_run = &mut self.fast_run;
            let pulled = catch_unwind(AssertUnwindSafe(|| {
                // Nothing is pulled once the feed is closed: the flag is looked at before
                // every `next()`.
                while piece.len() < n {
                    if shared.closed.load(Ordering::Relaxed) {
                        break;
                    }
                    if *fast_run < PROVEN {
                        // Careful: each item is handed over at once, so a `next()` that
                        // blocks never holds back items pulled before it.
                        let t0 = Instant::now();
                        match input.next() {
                            Some(x) => piece.push(x),
                            None => ended = true,
                        }
                        *fast_run = if t0.elapsed() <= FAST_PULL {
                            *fast_run + 1
                        } else {
                            0
                        };
                        break;
                    }
                    // Proven fast: fill the piece, timing every few hundred items; a slow
                    // stretch goes back to careful pulls.
                    let k = (n - piece.len()).min(CHECK_EVERY);
                    let t0 = Instant::now();
                    for _ in 0..k {
                        if shared.closed.load(Ordering::Relaxed) {
                            break;
                        }
                        match input.next() {
                            Some(x) => piece.push(x),
                            None => {
                                ended = true;
                                break;
                            }
                        }
                    }
                    if ended {
                        break;
                    }
                    if t0.elapsed() > FAST_PULL * k as u32 {
                        *fast_run = 0;
                        break;
                    }
                    if shared.hungry.load(Ordering::Relaxed) {
                        shared.hungry.store(false, Ordering::Relaxed);
                        break;
                    }
                }
            }));
            let unused = n - piece.len();
            if !piece.is_empty() {
                let _ = self.tx.send(Msg::Items(piece));
            }
            if let Err(p) = pulled {
                let _ = self.tx.send(Msg::Panicked(p));
                return;
            }
            if ended {
                let _ = self.tx.send(Msg::End);
                return;
            }
            if unused > 0 {
                // Handed over early (or closed): the rest of the credit goes back.
                self.shared.grant().credit += unused;
            }
        }
    }
}

impl<I: Iterator> Puller<I> {
    /// An empty buffer for `n` items: a returned one that is large enough if any.
    fn buffer(&mut self, n: usize) -> Vec<I::Item> {
        while self.stash.len() < SPARES {
            match self.spare_rx.try_recv() {
                Ok(v) => self.stash.push(v),
                Err(_) => break,
            }
        }
        let fit = self.stash.iter().position(|v| v.capacity() >= n);
        let mut v = match fit {
            Some(i) => self.stash.swap_remove(i),
            None => match self.stash.pop() {
                Some(v) if v.capacity() > 0 => v,
                _ => Vec::new(),
            },
        };
        v.clear();
        v.reserve(n);
        v
    }
}

impl<T> Feed<T> {
    /// Take every piece the puller has handed over so far.
    fn receive(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(m) => self.accept(m),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return,
            }
        }
    }

    fn accept(&mut self, m: Msg<T>) {
        match m {
            Msg::Items(v) => {
                self.ready_len += v.len();
                self.ready.push_back(v);
                self.shared.hungry.store(false, Ordering::Relaxed);
            }
            Msg::End | Msg::Closed => {
                self.ended = true;
                self.outstanding = self.ready_len;
            }
            Msg::Panicked(p) => {
                self.close_now();
                resume_unwind(p);
            }
        }
    }

    /// Items pulled and not yet taken.
    pub(crate) fn ready(&mut self) -> usize {
        self.receive();
        self.ready_len
    }

    /// The input has ended and every item pulled was taken.
    pub(crate) fn exhausted(&mut self) -> bool {
        self.receive();
        self.ended && self.ready_len == 0
    }

    /// Let the puller run ahead until `ahead` items are granted and not taken, in pieces of
    /// about `piece`.
    pub(crate) fn want(&mut self, ahead: usize, piece: usize) {
        if self.ended || ahead <= self.outstanding {
            return;
        }
        let more = ahead - self.outstanding;
        self.outstanding = ahead;
        let mut g = self.shared.grant();
        g.credit += more;
        g.piece = piece.max(1);
        let waiting = g.waiting;
        drop(g);
        if waiting {
            self.shared.wake.notify_one();
        }
    }

    /// Give an emptied item buffer back to the puller (dropped if it has enough).
    pub(crate) fn recycle(&self, v: Vec<T>) {
        let _ = self.spare_tx.try_send(v);
    }

    /// Ask the puller to hand over whatever it has at once (the scheduler has nothing to do).
    pub(crate) fn hungry(&self) {
        self.shared.hungry.store(true, Ordering::Relaxed);
    }

    /// Wait up to `timeout` for the puller to hand something over.
    pub(crate) fn wait(&mut self, timeout: Duration) {
        match self.rx.recv_timeout(timeout) {
            Ok(m) => {
                self.accept(m);
                self.receive();
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
        }
    }

    /// Take up to `n` pulled items, in input order (a whole piece, not copied, when it is
    /// exactly what fits).
    pub(crate) fn take(&mut self, n: usize) -> Vec<T> {
        self.receive();
        let Some(front) = self.ready.front_mut() else {
            return Vec::new();
        };
        let mut v = if front.len() <= n {
            self.ready.pop_front().unwrap_or_default()
        } else {
            front.drain(..n).collect()
        };
        // Small pieces (handed over early) are joined up to `n`.
        while v.len() < n {
            let Some(front) = self.ready.front_mut() else {
                break;
            };
            let k = (n - v.len()).min(front.len());
            if k == front.len() {
                let mut piece = self.ready.pop_front().unwrap_or_default();
                v.append(&mut piece);
            } else {
                v.extend(front.drain(..k));
            }
        }
        self.ready_len -= v.len();
        self.outstanding = self.outstanding.saturating_sub(v.len());
        v
    }

    fn close_now(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.grant().closed = true;
        self.shared.wake.notify_all();
    }

    /// Stop pulling. Returns the items pulled before the stop and not taken; waits at most
    /// `grace` for a puller that is between two `next()` calls to say it stopped (a call in
    /// progress is not waited for: its item is dropped when it returns).
    pub(crate) fn close(mut self, grace: Duration) -> Vec<T> {
        self.close_now();
        let until = Instant::now() + grace;
        while !self.ended {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => self.accept(m),
                Err(_) => break,
            }
        }
        self.receive();
        self.ready.drain(..).flatten().collect()
    }
}

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        self.close_now();
    }
}

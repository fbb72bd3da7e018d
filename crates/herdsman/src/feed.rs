//! Pulling the user's input off the scheduler thread: a puller thread calls `next()` only
//! for items the scheduler granted (never beyond the window), and hands them over in pieces.
//!
//! A `next()` that blocks must never block stop, deadline or results: the scheduler never
//! waits on the puller for longer than a tick, and after the scheduler closes the feed the
//! puller calls `next()` no more (a call already in progress finishes and its item is
//! dropped, never run or counted).

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

/// Largest piece the puller collects before handing it over.
const MAX_PIECE: usize = 1 << 14;

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
}

/// A feed over `input`; the puller must be run on another thread.
pub(crate) fn feed<I: Iterator>(input: I) -> (Feed<I::Item>, Puller<I>) {
    let shared = Arc::new(Shared {
        grant: Mutex::new(Grant {
            credit: 0,
            piece: 1,
            closed: false,
        }),
        wake: Condvar::new(),
        closed: AtomicBool::new(false),
        hungry: AtomicBool::new(false),
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    (
        Feed {
            shared: Arc::clone(&shared),
            rx,
            ready: VecDeque::new(),
            ready_len: 0,
            outstanding: 0,
            ended: false,
        },
        Puller { input, shared, tx },
    )
}

impl<I: Iterator> Puller<I> {
    /// Pull granted items until the input ends or the feed is closed.
    pub(crate) fn run(mut self) {
        loop {
            let n = {
                let mut g = self.shared.grant();
                while g.credit == 0 && !g.closed {
                    g = self.shared.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                if g.closed {
                    drop(g);
                    let _ = self.tx.send(Msg::Closed);
                    return;
                }
                let n = g.credit.min(g.piece).clamp(1, MAX_PIECE);
                g.credit -= n;
                n
            };
            let mut piece = Vec::with_capacity(n);
            let mut ended = false;
            let shared = &self.shared;
            let input = &mut self.input;
            let pulled = catch_unwind(AssertUnwindSafe(|| {
                while piece.len() < n {
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
                    if shared.hungry.load(Ordering::Relaxed) {
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
        drop(g);
        self.shared.wake.notify_one();
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
        let until = std::time::Instant::now() + grace;
        while !self.ended {
            let left = until.saturating_duration_since(std::time::Instant::now());
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

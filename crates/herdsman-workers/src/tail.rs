//! Draining a child's stderr on its own thread, keeping only a bounded tail.
//!
//! A child may write megabytes to stderr, or one line with no newline at all; this module
//! must never let that block the child or grow memory without bound (lines are split by the
//! bounded [`LineSplitter`], cut at [`MAX_STDERR_LINE`] bytes).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

use crate::bounded_lines::{each_line, LineSplitter, Piece};
use crate::StderrSink;

/// How many stderr lines a tail keeps.
pub(crate) const TAIL_LINES: usize = 20;
/// Longest stderr line kept (longer lines are cut and marked with `…`).
pub(crate) const MAX_STDERR_LINE: usize = 2000;

/// The last few lines a child wrote to stderr.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    fn push(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// A copy of the kept lines, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

/// A shared tail, written by the stderr thread and read by whoever reports a failure.
pub(crate) type SharedTail = Arc<Mutex<Tail>>;

/// Reads lines from a child's stderr until end of file.
pub(crate) struct StderrReader {
    /// The lines kept so far.
    pub(crate) tail: SharedTail,
    /// Disconnects (returns `Err`) once the stream reached end of file.
    pub(crate) done: Receiver<()>,
}

impl StderrReader {
    /// Starts a thread that drains `stream`, keeps its tail, and forwards each line to `sink`.
    pub(crate) fn spawn<R: Read + Send + 'static>(
        stream: R,
        worker: usize,
        sink: Option<StderrSink>,
    ) -> StderrReader {
        let tail: SharedTail = Arc::default();
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let thread_tail = tail.clone();
        std::thread::Builder::new()
            .name(format!("herdsman-stderr-{worker}"))
            .spawn(move || drain(stream, worker, sink, thread_tail, done_tx))
            .expect("cannot start a thread to read a worker's stderr");
        StderrReader { tail, done }
    }

    /// Waits up to `limit` for end of file, then returns the kept lines.
    pub(crate) fn finish(&self, limit: std::time::Duration) -> Vec<String> {
        let _ = self.done.recv_timeout(limit);
        self.tail.lock().map(|t| t.snapshot()).unwrap_or_default()
    }
}

fn drain<R: Read>(
    mut stream: R,
    worker: usize,
    sink: Option<StderrSink>,
    tail: SharedTail,
    _done: Sender<()>,
) {
    let emit = |line: &[u8], cut: bool| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut text = String::from_utf8_lossy(line).into_owned();
        if cut {
            text.push('…');
        }
        if let Some(sink) = &sink {
            sink(worker, &text);
        }
        if let Ok(mut t) = tail.lock() {
            t.push(text);
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = LineSplitter::new(MAX_STDERR_LINE);
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        lines.push(&buf[..n], |piece| {
            match piece {
                Piece::Lines(chunk) => each_line(&chunk).for_each(|line| emit(line, false)),
                Piece::Cut(start) => emit(&start, true),
            }
            true
        });
    }
    let last = lines.finish();
    if !last.is_empty() {
        emit(&last, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keeps_last_lines_and_cuts_long_ones() {
        let mut input = Vec::new();
        for i in 0..100 {
            input.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        input.extend_from_slice(&vec![b'x'; MAX_STDERR_LINE * 3]);
        let seen = Arc::new(Mutex::new(0usize));
        let seen2 = seen.clone();
        let sink: StderrSink = Arc::new(move |w, _l| {
            assert_eq!(w, 3);
            *seen2.lock().unwrap() += 1;
        });
        let r = StderrReader::spawn(std::io::Cursor::new(input), 3, Some(sink));
        let tail = r.finish(Duration::from_secs(10));
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail[0], "line 81");
        assert_eq!(tail[18], "line 99");
        assert_eq!(tail[19].chars().count(), MAX_STDERR_LINE + 1);
        assert!(tail[19].ends_with('…'));
        assert_eq!(*seen.lock().unwrap(), 101);
    }
}

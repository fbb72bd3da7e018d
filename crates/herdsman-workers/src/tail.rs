//! Draining a child's stderr on its own thread, keeping only a bounded tail.
//!
//! A child may write megabytes to stderr, or one line with no newline at all; this module
//! must never let that block the child or grow memory without bound.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

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
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    let emit = |line: &mut Vec<u8>, cut: &mut bool| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut text = String::from_utf8_lossy(line).into_owned();
        if *cut {
            text.push('…');
        }
        if let Some(sink) = &sink {
            sink(worker, &text);
        }
        if let Ok(mut t) = tail.lock() {
            t.push(text);
        }
        line.clear();
        *cut = false;
    };
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(pos) => {
                    append_capped(&mut line, &rest[..pos], &mut cut);
                    emit(&mut line, &mut cut);
                    rest = &rest[pos + 1..];
                }
                None => {
                    append_capped(&mut line, rest, &mut cut);
                    rest = &[];
                }
            }
        }
    }
    if !line.is_empty() || cut {
        emit(&mut line, &mut cut);
    }
}

fn append_capped(line: &mut Vec<u8>, bytes: &[u8], cut: &mut bool) {
    let room = MAX_STDERR_LINE.saturating_sub(line.len());
    if bytes.len() > room {
        line.extend_from_slice(&bytes[..room]);
        *cut = true;
    } else {
        line.extend_from_slice(bytes);
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

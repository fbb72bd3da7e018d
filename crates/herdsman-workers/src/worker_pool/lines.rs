//! The `lines` protocol (see `docs/protocol.md`): one JSON record per line to the worker,
//! exactly one JSON line back per record, in order.
//!
//! Answers carry no id, so this module must never match an answer to anything but the
//! oldest record in flight on its worker, and never let bytes that are not one valid JSON
//! value (or not UTF-8) reach the output.

use crate::text::quote_start;
use crate::{AttemptOutcome, FailureKind};

use super::{InflightSet, Outcome, WorkerPool};

/// Writes one record as a `lines` request: the record and a newline.
pub(super) fn encode(outbox: &mut Vec<u8>, json: &[u8]) {
    super::push_record(outbox, json);
    outbox.push(b'\n');
}

impl WorkerPool {
    pub(super) fn lines_chunk(&mut self, s: usize, chunk: &[u8], out: &mut Vec<Outcome>) {
        let mut answered = 0;
        // Every chunk ends with a newline; without it, `split` would yield one more line.
        let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
        for raw in super::lines_of(body) {
            let InflightSet::Lines(q) = &mut self.slots[s].inflight else {
                unreachable!("lines protocol uses an ordered queue")
            };
            let Some(inf) = q.pop_front() else {
                // A line that answers no record: the worker printed more lines than it was
                // sent. Nothing can be attributed to it.
                continue;
            };
            answered += 1;
            if inf.abandoned {
                continue;
            }
            let line = raw.trim_ascii();
            let outcome = match std::str::from_utf8(line)
                .map_err(|e| format!("not valid UTF-8: {e}"))
                .and_then(|_| check_json(line).map_err(|why| format!("not valid JSON ({why})")))
            {
                Ok(()) => AttemptOutcome::Success(vec![line.to_vec()]),
                Err(why) => {
                    let msg = format!(
                        "worker {s} answered with a line that is {why}: {}",
                        quote_start(line)
                    );
                    AttemptOutcome::Failure(self.failure(s, FailureKind::BadOutput, msg, false))
                }
            };
            self.report(out, s, &inf, outcome);
        }
        if answered > 0 {
            self.note_answer(s, answered);
        }
    }
}

fn check_json(line: &[u8]) -> Result<(), String> {
    if line.is_empty() {
        return Err("empty line".into());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(line)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_json_rejects_garbage() {
        assert!(check_json(b"{\"a\":1}").is_ok());
        assert!(check_json(b"null").is_ok());
        assert!(check_json(b"hello").is_err());
        assert!(check_json(b"").is_err());
        assert!(check_json(b"{\"a\":1} x").is_err());
    }
}

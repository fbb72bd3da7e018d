//! The `framed` protocol (see `docs/protocol.md`): each record goes in an envelope with a wire
//! id; replies carry that id, may come in any order, and give zero or more outputs, `done`,
//! or an error (with `retryable` and `retry_after`).
//!
//! This module must never attribute a reply to a record other than the one its id names
//! (a reply it cannot attribute charges the oldest record in flight, as bad output), never
//! report a record twice, and never honour a `retry_after` longer than
//! [`MAX_RETRY_AFTER`].

use std::io::Write;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::text::quote_start;
use crate::{AttemptOutcome, FailureKind, MAX_RETRY_AFTER};

use super::{InflightSet, Outcome, WorkerPool};

/// Writes one record as a `framed` request: `{"id":WIRE,"record":RECORD}` and a newline.
pub(super) fn encode(outbox: &mut Vec<u8>, wire: u64, json: &[u8]) {
    outbox.extend_from_slice(b"{\"id\":");
    let _ = write!(outbox, "{wire}");
    outbox.extend_from_slice(b",\"record\":");
    super::push_record(outbox, json);
    outbox.extend_from_slice(b"}\n");
}

impl WorkerPool {
    pub(super) fn framed_chunk(&mut self, s: usize, chunk: &[u8], out: &mut Vec<Outcome>) {
        for raw in chunk.split(|&b| b == b'\n') {
            let line = raw.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let reply = match serde_json::from_slice::<Reply>(line) {
                Ok(r) if r.id.is_some() => r,
                other => {
                    let why = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "no \"id\" field".to_string(),
                    };
                    // The reply cannot be attributed: charge the oldest unanswered record.
                    if let Some(inf) = self.slots[s].inflight.pop_oldest() {
                        self.note_answer(s, 1);
                        let msg = format!(
                            "worker {s} wrote a line that is not a valid reply ({why}): {}",
                            quote_start(line)
                        );
                        let f = self.failure(s, FailureKind::BadOutput, msg, false);
                        out.push((inf.id, AttemptOutcome::Failure(f)));
                    }
                    continue;
                }
            };
            let wire = reply.id.unwrap_or_default();
            let InflightSet::Framed(map) = &mut self.slots[s].inflight else {
                unreachable!("framed protocol uses a map by id")
            };
            let Some(inf) = map.get_mut(&wire) else {
                // A reply for a record that is no longer in flight here; ignore it.
                continue;
            };
            let mut used = false;
            if let Some(output) = reply.output {
                inf.outputs.push(output.get().as_bytes().to_vec());
                used = true;
            }
            // Err((kind, message, retryable, server-mandated wait))
            let finished = if let Some(err) = reply.error {
                let text = match serde_json::from_str::<String>(err.get()) {
                    Ok(s) => s,
                    Err(_) => err.get().to_string(),
                };
                let retryable = reply.retryable.unwrap_or(false);
                // `retry_after` only means something on a retryable error: a record that
                // fails for good is not tried again, so there is nothing to wait for.
                match reply.retry_after.filter(|_| retryable).map(retry_after) {
                    None => Some(Err((FailureKind::Reported, text, retryable, None))),
                    Some(Ok(wait)) => Some(Err((FailureKind::Reported, text, true, wait))),
                    Some(Err(why)) => Some(Err((
                        FailureKind::BadOutput,
                        format!(
                            "worker {s} sent an error reply whose \"retry_after\" is {why}; \
                             send a number of seconds such as 1.5 (its error was: {text})"
                        ),
                        false,
                        None,
                    ))),
                }
            } else if reply.done == Some(true) {
                Some(Ok(()))
            } else if !used {
                Some(Err((
                    FailureKind::BadOutput,
                    format!(
                        "worker {s} sent a reply with none of \"output\", \"done\" or \"error\": {}",
                        quote_start(line)
                    ),
                    false,
                    None,
                )))
            } else {
                None
            };
            if let Some(result) = finished {
                let inf = map.remove(&wire).expect("present");
                self.note_answer(s, 1);
                let outcome = match result {
                    Ok(()) => AttemptOutcome::Success(inf.outputs),
                    Err((kind, msg, retryable, wait)) => {
                        let mut f = self.failure(s, kind, msg, retryable);
                        f.retry_after = wait;
                        AttemptOutcome::Failure(f)
                    }
                };
                out.push((inf.id, outcome));
            }
        }
    }
}

#[derive(Deserialize)]
struct Reply<'a> {
    id: Option<u64>,
    #[serde(default, borrow, deserialize_with = "present")]
    output: Option<&'a RawValue>,
    #[serde(default)]
    done: Option<bool>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default, borrow, deserialize_with = "present")]
    retry_after: Option<&'a RawValue>,
}

/// Reads the `retry_after` of a framed error reply: a JSON number of seconds, at least 0,
/// fractions allowed, capped at [`MAX_RETRY_AFTER`]; `null` is no wait. `Err` says what is
/// wrong with any other value.
fn retry_after(raw: &RawValue) -> Result<Option<Duration>, String> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let wrong = || format!("`{}`, not a number of seconds of 0 or more", truncate(text));
    // A JSON number too large for f64 (1e400) fails to parse but is still "very long".
    let huge = text.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let secs = match serde_json::from_str::<f64>(text) {
        Ok(secs) if secs >= 0.0 => secs.abs(),
        Ok(_) => return Err(wrong()),
        Err(_) if huge => return Ok(Some(MAX_RETRY_AFTER)),
        Err(_) => return Err(wrong()),
    };
    Ok(Some(
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_RETRY_AFTER)
            .min(MAX_RETRY_AFTER),
    ))
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A field that is present (even as `null`) becomes `Some`.
fn present<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&'de RawValue>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_keeps_null_output() {
        let r: Reply = serde_json::from_slice(br#"{"id":3,"output":null}"#).unwrap();
        assert_eq!(r.id, Some(3));
        assert_eq!(r.output.map(|o| o.get()), Some("null"));
        let r: Reply = serde_json::from_slice(br#"{"id":3,"done":true}"#).unwrap();
        assert!(r.output.is_none());
        assert_eq!(r.done, Some(true));
    }

    #[test]
    fn reply_reads_retry_after_seconds() {
        let wait = |line: &str| {
            let r: Reply = serde_json::from_str(line).unwrap();
            r.retry_after.map(retry_after)
        };
        let secs = |s: f64| Ok(Some(Duration::from_secs_f64(s)));
        assert_eq!(
            wait(r#"{"id":1,"error":"busy","retryable":true,"retry_after":1.5}"#),
            Some(secs(1.5))
        );
        assert_eq!(wait(r#"{"id":1,"retry_after":2}"#), Some(secs(2.0)));
        assert_eq!(wait(r#"{"id":1,"retry_after":0}"#), Some(secs(0.0)));
        assert_eq!(wait(r#"{"id":1,"retry_after":-0.0}"#), Some(secs(0.0)));
        assert_eq!(wait(r#"{"id":1,"retry_after":1e-3}"#), Some(secs(0.001)));
        assert_eq!(wait(r#"{"id":1,"retry_after":null}"#), Some(Ok(None)));
        assert_eq!(wait(r#"{"id":1,"error":"x"}"#), None);
        // Absurd waits are cut to an hour.
        let hour = Some(Ok(Some(MAX_RETRY_AFTER)));
        assert_eq!(wait(r#"{"id":1,"retry_after":1764474000}"#), hour);
        assert_eq!(wait(r#"{"id":1,"retry_after":1e300}"#), hour);
        assert_eq!(wait(r#"{"id":1,"retry_after":1e400}"#), hour);
        // Anything else is a malformed reply, said in words.
        for bad in [r#""2""#, "-1", "true", "[1]", r#"{"s":1}"#, "-1e400"] {
            let line = format!(r#"{{"id":1,"retry_after":{bad}}}"#);
            let err = wait(&line).unwrap().unwrap_err();
            assert!(err.contains("not a number of seconds"), "{bad}: {err}");
        }
    }
}

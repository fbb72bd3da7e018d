//! The `framed` protocol (see `docs/protocol.md`): each record goes in an envelope with a wire
//! id; replies carry that id, may come in any order, and give zero or more outputs, `done`,
//! or an error (with `retryable` and `retry_after`).
//!
//! This module must never attribute a reply to a record other than the one its id names
//! (a reply it cannot attribute charges the oldest record in flight, as bad output), never
//! report a record twice, and never honour a `retry_after` longer than
//! [`MAX_RETRY_AFTER`].

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::text::quote_start;
use crate::{AttemptOutcome, FailureKind, MAX_RETRY_AFTER};

use super::{InflightSet, Outcome, WorkerPool};

/// Writes one record as a `framed` request: `{"id":WIRE,"record":RECORD}` and a newline.
pub(super) fn encode(outbox: &mut Vec<u8>, wire: u64, json: &[u8]) {
    outbox.extend_from_slice(b"{\"id\":");
    push_decimal(outbox, wire);
    outbox.extend_from_slice(b",\"record\":");
    super::push_record(outbox, json);
    outbox.extend_from_slice(b"}\n");
}

/// Appends `n` in decimal (what `write!(out, "{n}")` writes, without the formatting
/// machinery: this runs once per record).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

impl WorkerPool {
    pub(super) fn framed_chunk(&mut self, s: usize, chunk: &[u8], out: &mut Vec<Outcome>) {
        for raw in super::lines_of(chunk) {
            let line = raw.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let reply = match parse_reply(line) {
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
                        self.report(out, s, &inf, AttemptOutcome::Failure(f));
                    }
                    continue;
                }
            };
            let wire = reply.id.unwrap_or_default();
            let InflightSet::Framed(queue) = &mut self.slots[s].inflight else {
                unreachable!("framed protocol uses a queue sorted by id")
            };
            let Some(pos) = super::slot::framed_position(queue, wire) else {
                // A reply for a record that is no longer in flight here; ignore it.
                continue;
            };
            let inf = &mut queue[pos];
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
                let mut inf = if pos == 0 {
                    queue.pop_front()
                } else {
                    queue.remove(pos)
                }
                .expect("present");
                self.note_answer(s, 1);
                let outcome = match result {
                    Ok(()) => AttemptOutcome::Success(std::mem::take(&mut inf.outputs)),
                    Err((kind, msg, retryable, wait)) => {
                        let mut f = self.failure(s, kind, msg, retryable);
                        f.retry_after = wait;
                        AttemptOutcome::Failure(f)
                    }
                };
                self.report(out, s, &inf, outcome);
            }
        }
    }
}

/// Reads one reply line: the usual replies (`{"id":N,"output":V,"done":true}`,
/// `{"id":N,"output":V}` and `{"id":N,"done":true}`, written without spaces, as
/// `herdsman_worker` and most workers write them) by their shape, checking only that the
/// output is one valid JSON value; anything else through the full parser. Both read a line
/// the same way: the fast path only takes lines whose meaning it cannot get wrong.
fn parse_reply(line: &[u8]) -> Result<Reply<'_>, serde_json::Error> {
    if let Some(reply) = usual_reply(line) {
        return Ok(reply);
    }
    serde_json::from_slice::<Reply>(line)
}

/// The fast path of [`parse_reply`], or `None` to leave the line to the full parser.
fn usual_reply(line: &[u8]) -> Option<Reply<'_>> {
    const DONE: &[u8] = b",\"done\":true}";
    const OUTPUT: &[u8] = b",\"output\":";
    let rest = line.strip_prefix(b"{\"id\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // JSON numbers have no leading zeros; 20 digits may not fit a u64: the full parser
    // says what is wrong with those.
    if digits == 0 || digits > 19 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let id = rest[..digits]
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    let rest = &rest[digits..];
    let mut reply = Reply {
        id: Some(id),
        output: None,
        done: None,
        error: None,
        retryable: None,
        retry_after: None,
    };
    if rest == DONE {
        reply.done = Some(true);
        return Some(reply);
    }
    let value = rest.strip_prefix(OUTPUT)?;
    let value = match value.strip_suffix(DONE) {
        Some(v) => {
            reply.done = Some(true);
            v
        }
        None => value.strip_suffix(b"}")?,
    };
    // Exactly one JSON value with nothing around it (the parser would accept spaces, which
    // the raw output must not carry); then the line is exactly the object read above.
    if value.first().is_none_or(u8::is_ascii_whitespace)
        || value.last().is_none_or(u8::is_ascii_whitespace)
    {
        return None;
    }
    let raw = serde_json::from_slice::<&RawValue>(value).ok()?;
    if raw.get().len() != value.len() {
        return None;
    }
    reply.output = Some(raw);
    Some(reply)
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

    /// What a reply means: (id, output, done, error, retryable, retry_after).
    type Meaning = (
        Option<u64>,
        Option<String>,
        Option<bool>,
        Option<String>,
        Option<bool>,
        Option<String>,
    );

    fn meaning(r: &Reply) -> Meaning {
        let text = |v: Option<&RawValue>| v.map(|v| v.get().to_string());
        (
            r.id,
            text(r.output),
            r.done,
            text(r.error),
            r.retryable,
            text(r.retry_after),
        )
    }

    /// The fast path reads every line it takes exactly as the full parser does, and leaves
    /// every other line (including every invalid one) to the full parser.
    #[test]
    fn the_usual_replies_read_as_the_full_parser_reads_them() {
        let taken = [
            r#"{"id":0,"done":true}"#,
            r#"{"id":7,"output":{"id":1,"value":17,"primes_up_to_value":7},"done":true}"#,
            r#"{"id":18446744073709551,"output":null}"#,
            r#"{"id":3,"output":[1,{"done":true}],"done":true}"#,
            r#"{"id":3,"output":{"x":1,"done":true}}"#,
            r#"{"id":3,"output":"a,\"done\":true}","done":true}"#,
            r#"{"id":3,"output":"é ","done":true}"#,
            r#"{"id":3,"output":1.5e3}"#,
        ];
        for line in taken {
            let fast = usual_reply(line.as_bytes()).unwrap_or_else(|| panic!("not taken: {line}"));
            let full: Reply = serde_json::from_str(line).unwrap();
            assert_eq!(meaning(&fast), meaning(&full), "{line}");
        }
        let left = [
            r#"{"id":01,"done":true}"#,
            r#"{"id":99999999999999999999,"done":true}"#,
            r#"{"id":-1,"done":true}"#,
            r#"{"id":1,"done":false}"#,
            r#"{"id":1, "done":true}"#,
            r#"{"id":1,"output": 5,"done":true}"#,
            r#"{"id":1,"output":5 ,"done":true}"#,
            r#"{"id":1,"output":,"done":true}"#,
            r#"{"id":1,"output":1,"done":true,"done":true}"#,
            r#"{"id":1,"output":{"a":1},"done":true"#,
            r#"{"id":1,"output":nul}"#,
            r#"{"id":1,"output":1 2}"#,
            r#"{"id":1,"output":1}}"#,
            r#"{"id":1,"error":"boom","retryable":false}"#,
            r#"{"id":1,"done":true} "#,
            r#"{"done":true,"id":1}"#,
            "{\"id\":1,\"output\":\"\u{1}\",\"done\":true}",
        ];
        for line in left {
            assert!(usual_reply(line.as_bytes()).is_none(), "taken: {line}");
            // Whatever the full parser makes of it stays as it was.
            let _ = parse_reply(line.as_bytes());
        }
        // Invalid UTF-8 inside the output is never taken.
        assert!(usual_reply(b"{\"id\":1,\"output\":\"\xff\",\"done\":true}").is_none());
    }

    #[test]
    fn decimals_are_written_as_format_writes_them() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

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

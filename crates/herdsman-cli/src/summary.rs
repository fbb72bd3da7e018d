//! The run summary: counts that add up, retries, duration, throughput and latency.
//!
//! The counts here are the accounting contract made visible: input records = succeeded +
//! failed + filtered + not run. This module must never print numbers it did not count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The signal that stopped this process's run (0 until one arrives).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Records the signal that stopped the run; only the first one counts. A run that then ends
/// interrupted exits with 128 + its number, as shells report a process killed by it.
pub fn note_stop_signal(signal: i32) {
    let _ = STOP_SIGNAL.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// The exit code of an interrupted run: 128 + the stopping signal (130 for SIGINT, 143 for
/// SIGTERM, 129 for SIGHUP), 130 when no signal was recorded.
pub fn interrupted_exit_code() -> i32 {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        0 => 130,
        sig => 128 + sig,
    }
}

/// How a run ended, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Every record resolved.
    Completed,
    /// Stopped by --max-errors.
    Aborted,
    /// Stopped by Ctrl-C, SIGTERM or SIGHUP.
    Interrupted,
}

/// Counters for one run, including what earlier runs of the same job committed: the
/// ledger's [`herdsman_ledger::Counts`] (what a committed chunk records) plus the records a
/// stopped run never ran. It dereferences to the ledger's counts, so `c.records`, `c.ok`,
/// `c.failed`… read as one set of fields.
///
/// Serialized with the summary's field names (`succeeded` for the ledger's `ok`), in the
/// order `records, succeeded, failed, filtered, not_run, outputs, retries`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CountsJson", into = "CountsJson")]
pub struct Counts {
    /// Records read from the input (or resolved by earlier runs) and their outcomes;
    /// `ok` is the records that produced at least one output record.
    pub counts: herdsman_ledger::Counts,
    /// Records admitted but never run because the run stopped.
    pub not_run: u64,
}

impl Counts {
    /// `records` records read, none resolved yet.
    pub fn of_records(records: u64) -> Counts {
        Counts {
            counts: herdsman_ledger::Counts {
                records,
                ..herdsman_ledger::Counts::default()
            },
            not_run: 0,
        }
    }

    /// `records` records read, none of them run.
    pub fn none_run(records: u64) -> Counts {
        Counts {
            not_run: records,
            ..Counts::of_records(records)
        }
    }

    pub fn add(&mut self, o: &Counts) {
        self.counts.add(&o.counts);
        self.not_run += o.not_run;
    }
}

impl From<herdsman_ledger::Counts> for Counts {
    fn from(counts: herdsman_ledger::Counts) -> Counts {
        Counts { counts, not_run: 0 }
    }
}

impl std::ops::Deref for Counts {
    type Target = herdsman_ledger::Counts;

    fn deref(&self) -> &herdsman_ledger::Counts {
        &self.counts
    }
}

impl std::ops::DerefMut for Counts {
    fn deref_mut(&mut self) -> &mut herdsman_ledger::Counts {
        &mut self.counts
    }
}

/// [`Counts`] as the summary JSON spells it.
#[derive(Serialize, Deserialize)]
struct CountsJson {
    records: u64,
    succeeded: u64,
    failed: u64,
    filtered: u64,
    not_run: u64,
    outputs: u64,
    retries: u64,
}

impl From<CountsJson> for Counts {
    fn from(j: CountsJson) -> Counts {
        Counts {
            counts: herdsman_ledger::Counts {
                records: j.records,
                ok: j.succeeded,
                failed: j.failed,
                filtered: j.filtered,
                outputs: j.outputs,
                retries: j.retries,
            },
            not_run: j.not_run,
        }
    }
}

impl From<Counts> for CountsJson {
    fn from(c: Counts) -> CountsJson {
        CountsJson {
            records: c.records,
            succeeded: c.ok,
            failed: c.failed,
            filtered: c.filtered,
            not_run: c.not_run,
            outputs: c.outputs,
            retries: c.retries,
        }
    }
}

/// Per-record latency, in microseconds: from when each attempt was handed to the workers to
/// its outcome, summed over the record's attempts. Time a record waited in a worker's queue
/// behind other records counts here (it never counts against `--timeout`); time waiting for a
/// retry's backoff does not.
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"))
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.0.record(us);
    }

    fn percentiles(&self) -> Option<Percentiles> {
        if self.0.is_empty() {
            return None;
        }
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        Some(Percentiles {
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: self.0.max() as f64 / 1000.0,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Everything the summary shows, also written by --summary-json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub ending: Ending,
    pub exit_code: i32,
    /// All runs of this job together.
    pub total: Counts,
    /// Resolved by earlier, interrupted runs of the same job.
    pub earlier: Counts,
    /// Resolved by this run.
    pub this_run: Counts,
    pub duration_s: f64,
    pub records_per_s: f64,
    /// Per-record latency: from hand-off to the workers to the answer, all attempts, time
    /// queued behind other records included (see [`Latency`]).
    pub latency: Option<Percentiles>,
    pub output: Option<String>,
    pub failures: String,
    /// This run re-ran the dead-letter file of a finished job (`--retry-failed`).
    #[serde(default)]
    pub retry_pass: bool,
    /// Failed records by the kind their dead-letter entries name (`timeout`,
    /// `worker_exited`…), earlier runs of the job included; empty when none failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures_by_kind: BTreeMap<String, u64>,
}

impl Summary {
    pub fn new(
        ending: Ending,
        earlier: Counts,
        this_run: Counts,
        elapsed: Duration,
        latency: &Latency,
        output: Option<String>,
        failures: String,
    ) -> Summary {
        let mut total = earlier.clone();
        total.add(&this_run);
        let exit_code = match ending {
            Ending::Interrupted => interrupted_exit_code(),
            Ending::Aborted => 3,
            Ending::Completed if total.failed > 0 => 1,
            Ending::Completed => 0,
        };
        let secs = elapsed.as_secs_f64();
        Summary {
            ending,
            exit_code,
            records_per_s: if secs > 0.0 {
                this_run.resolved() as f64 / secs
            } else {
                0.0
            },
            total,
            earlier,
            this_run,
            duration_s: secs,
            latency: latency.percentiles(),
            output,
            failures,
            retry_pass: false,
            failures_by_kind: BTreeMap::new(),
        }
    }

    /// The failed records by kind, most frequent first: `2 timeout, 1 reported`.
    pub fn kinds_text(&self) -> String {
        let mut kinds: Vec<(&String, &u64)> = self.failures_by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The summary as the last JSON event on stderr (`--log-format json`): the first line of
    /// [`Summary::render`] as its message, and every number in a `summary` field, as
    /// `--summary-json` writes them.
    pub fn event(&self) -> String {
        let text = self.render();
        let head = text.lines().next().unwrap_or("");
        let head = head.strip_prefix("herdsman: ").unwrap_or(head);
        let mut fields = serde_json::Map::new();
        fields.insert(
            "summary".into(),
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        );
        let level = if self.exit_code == 0 {
            crate::logging::Level::Info
        } else {
            crate::logging::Level::Warn
        };
        crate::logging::console(level, "herdsman::summary", head, fields)
    }

    /// For a stopped run that will be resumed: names the partial files that hold its output
    /// and dead letters (`out.jsonl.partial`), where the records are until the job finishes.
    /// A file written in place (a device such as `/dev/null`) has no partial file and keeps
    /// its name.
    pub fn point_at_partial_files(&mut self) {
        let partial = |p: &str| {
            let partial = herdsman_io::partial_path(std::path::Path::new(p));
            if partial.exists() {
                partial.display().to_string()
            } else {
                p.to_string()
            }
        };
        self.output = self.output.as_deref().map(partial);
        self.failures = partial(&self.failures);
    }

    /// The human summary printed on stderr.
    pub fn render(&self) -> String {
        let t = &self.total;
        let mut s = String::new();
        let head = match self.ending {
            Ending::Completed if t.failed == 0 => "done",
            Ending::Completed => "done with failures",
            Ending::Aborted => "stopped: too many failed records (--max-errors)",
            Ending::Interrupted => match self.exit_code {
                129 => "interrupted (SIGHUP)",
                143 => "interrupted (SIGTERM)",
                _ => "interrupted",
            },
        };
        s.push_str(&format!("herdsman: {head}\n"));
        s.push_str(&format!(
            "  records   {} = {} succeeded + {} failed + {} filtered{}\n",
            t.records,
            t.ok,
            t.failed,
            t.filtered,
            if t.not_run > 0 {
                format!(" + {} not run", t.not_run)
            } else {
                String::new()
            }
        ));
        if self.retry_pass {
            s.push_str(&format!(
                "  retried   {} dead-lettered records: {} now succeed, {} filtered, {} still fail\n",
                self.this_run.records,
                self.this_run.ok,
                self.this_run.filtered,
                self.this_run.failed
            ));
        } else if self.earlier.records > 0 {
            s.push_str(&format!(
                "  resumed   {} records were done by earlier runs, {} in this run\n",
                self.earlier.resolved(),
                self.this_run.resolved()
            ));
        }
        s.push_str(&format!(
            "  outputs   {}{}\n",
            crate::text::plural(t.outputs, "record"),
            self.output
                .as_deref()
                .map(|o| format!(" in {o}"))
                .unwrap_or_default()
        ));
        if t.failed > 0 {
            let kinds = if self.failures_by_kind.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.kinds_text())
            };
            s.push_str(&format!(
                "  failures  {} in {}{kinds}\n",
                t.failed, self.failures
            ));
        }
        s.push_str(&format!("  retries   {}\n", t.retries));
        s.push_str(&format!(
            "  time      {:.2}s, {} records/s",
            self.duration_s,
            crate::text::rate(self.records_per_s).trim_end_matches("/s")
        ));
        s.push('\n');
        if let Some(l) = &self.latency {
            s.push_str(&format!(
                "  latency   p50 {:.2}ms p90 {:.2}ms p99 {:.2}ms max {:.2}ms per record, from hand-off to the workers to its answer (queued behind other records included, all attempts)\n",
                l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_ending_and_failures() {
        let lat = Latency::default();
        let ok = Counts::from(herdsman_ledger::Counts {
            records: 3,
            ok: 3,
            outputs: 3,
            ..herdsman_ledger::Counts::default()
        });
        let failed = Counts::from(herdsman_ledger::Counts {
            records: 3,
            ok: 2,
            failed: 1,
            outputs: 2,
            ..herdsman_ledger::Counts::default()
        });
        let mk = |e, c: &Counts| {
            Summary::new(
                e,
                Counts::default(),
                c.clone(),
                Duration::from_secs(1),
                &lat,
                None,
                "f".into(),
            )
            .exit_code
        };
        assert_eq!(mk(Ending::Completed, &ok), 0);
        assert_eq!(mk(Ending::Completed, &failed), 1);
        assert_eq!(mk(Ending::Aborted, &failed), 3);
        assert_eq!(mk(Ending::Interrupted, &ok), 130);
    }

    /// The ledger's counts plus `not_run`, written with the summary's names in the summary's
    /// order, and read back the same.
    #[test]
    fn counts_keep_their_json_names_and_order() {
        let c = Counts {
            counts: herdsman_ledger::Counts {
                records: 7,
                ok: 3,
                failed: 2,
                filtered: 1,
                outputs: 4,
                retries: 5,
            },
            not_run: 1,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"records":7,"succeeded":3,"failed":2,"filtered":1,"not_run":1,"outputs":4,"retries":5}"#
        );
        assert_eq!(serde_json::from_str::<Counts>(&json).unwrap(), c);
        assert_eq!((c.resolved(), c.ok), (6, 3));
    }

    #[test]
    fn totals_include_earlier_runs_and_render_the_identity() {
        let mut lat = Latency::default();
        lat.record(Duration::from_millis(3));
        let earlier = Counts::from(herdsman_ledger::Counts {
            records: 10,
            ok: 9,
            failed: 1,
            outputs: 9,
            ..herdsman_ledger::Counts::default()
        });
        let now = Counts::from(herdsman_ledger::Counts {
            records: 5,
            ok: 4,
            filtered: 1,
            outputs: 4,
            retries: 2,
            ..herdsman_ledger::Counts::default()
        });
        let s = Summary::new(
            Ending::Completed,
            earlier,
            now,
            Duration::from_secs(1),
            &lat,
            Some("o.jsonl".into()),
            "f.jsonl".into(),
        );
        assert_eq!(s.total.records, 15);
        assert_eq!(s.total.resolved(), 15);
        let text = s.render();
        assert!(
            text.contains("15 = 13 succeeded + 1 failed + 1 filtered"),
            "{text}"
        );
        assert!(
            text.contains("10 records were done by earlier runs, 5 in this run"),
            "{text}"
        );
        assert!(s.latency.unwrap().p50_ms >= 2.9);
    }
}

//! What `herdsman run` does with its job: start it, resume it, re-run its failures, say that it
//! already finished, or refuse. A pure function of the options and the checkpoint's state;
//! `run` does what it decides.
//!
//! This module must never touch a file, the ledger or a process: everything it needs is
//! handed to [`decide`], so that each decision is unit-tested on its own.

use std::path::{Path, PathBuf};

use herdsman_ledger::{ChunkCommit, Opened};

use crate::summary::Summary;

/// What a run does.
#[derive(Debug)]
pub enum Decision {
    /// Run every record: there is no checkpoint, or it holds nothing of this job yet.
    Fresh,
    /// Run the records an earlier, interrupted run did not commit.
    Resume {
        /// Every chunk the earlier runs committed.
        commits: Vec<ChunkCommit>,
    },
    /// Re-run the dead-lettered records of the finished job (`--retry-failed`).
    RetryFailed {
        /// The finished job's summary, which the retry pass updates.
        previous: Box<Summary>,
    },
    /// Nothing to do: the job finished earlier; this is its summary.
    AlreadyFinished {
        /// The finished job's summary.
        summary: Box<Summary>,
    },
    /// Not run, for this reason (a usage error).
    Refused(Refusal),
}

/// Why a run is refused before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `--retry-failed` on a job that has not finished.
    RetryUnfinished,
    /// `--retry-failed` on a finished job whose stored summary cannot be read.
    RetryWithoutSummary,
    /// The job finished, but its output file is gone.
    OutputGone {
        /// The output the job wrote.
        output: PathBuf,
    },
    /// The job finished, but its stored summary cannot be read.
    FinishedWithoutSummary {
        /// The output, as shown to the user (empty for none).
        output: String,
    },
}

impl Refusal {
    /// One sentence saying what happened and what to do.
    pub fn message(&self) -> String {
        match self {
            Refusal::RetryUnfinished => "--retry-failed re-runs the failures of a finished job, and this job has not finished; run it without --retry-failed first".into(),
            Refusal::RetryWithoutSummary => "the checkpoint's summary is unreadable; run with --restart to start over".into(),
            Refusal::OutputGone { output } => format!(
                "this job finished earlier, but its output {} is gone; run with --restart to run it again",
                output.display()
            ),
            Refusal::FinishedWithoutSummary { output } => format!(
                "this job already finished ({output}) but its summary is unreadable; run with --restart to run it again"
            ),
        }
    }
}

/// The state a decision depends on.
#[derive(Debug)]
pub struct JobState<'a> {
    /// What the checkpoint held for this job once opened (after `--restart` cleared it and an
    /// interrupted retry pass was finished); `None` when the run is not checkpointed.
    pub opened: Option<Opened>,
    /// `--retry-failed` was given.
    pub retry_failed: bool,
    /// The output file, when the run writes one.
    pub output: Option<&'a Path>,
    /// Whether that output file exists now.
    pub output_exists: bool,
}

/// Decides what the run does.
pub fn decide(state: JobState<'_>) -> Decision {
    let Some(opened) = state.opened else {
        return Decision::Fresh;
    };
    let summary = |json: Option<String>| -> Option<Summary> {
        json.and_then(|s| serde_json::from_str(&s).ok())
    };
    match opened {
        Opened::Fresh | Opened::Resumed { .. } if state.retry_failed => {
            Decision::Refused(Refusal::RetryUnfinished)
        }
        Opened::Fresh => Decision::Fresh,
        Opened::Resumed { commits } => Decision::Resume { commits },
        Opened::Finished { summary_json, .. } if state.retry_failed => {
            match summary(summary_json) {
                Some(previous) => Decision::RetryFailed {
                    previous: Box::new(previous),
                },
                None => Decision::Refused(Refusal::RetryWithoutSummary),
            }
        }
        Opened::Finished { summary_json, .. } => {
            if let Some(output) = state.output.filter(|_| !state.output_exists) {
                return Decision::Refused(Refusal::OutputGone {
                    output: output.to_path_buf(),
                });
            }
            match summary(summary_json) {
                Some(summary) => Decision::AlreadyFinished {
                    summary: Box::new(summary),
                },
                None => Decision::Refused(Refusal::FinishedWithoutSummary {
                    output: state
                        .output
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{Counts, Ending, Latency};
    use std::time::Duration;

    fn summary_json() -> String {
        let this_run = Counts::from(herdsman_ledger::Counts {
            records: 3,
            ok: 2,
            failed: 1,
            outputs: 2,
            ..herdsman_ledger::Counts::default()
        });
        let s = Summary::new(
            Ending::Completed,
            Counts::default(),
            this_run,
            Duration::from_secs(1),
            &Latency::default(),
            Some("out.jsonl".into()),
            "out.failures.jsonl".into(),
        );
        serde_json::to_string_pretty(&s).unwrap()
    }

    fn commit(chunk: u64) -> ChunkCommit {
        ChunkCommit {
            chunk,
            start: herdsman_ledger::Position::default(),
            end: herdsman_ledger::Position::default(),
            counts: herdsman_ledger::Counts {
                records: 1,
                ok: 1,
                outputs: 1,
                ..herdsman_ledger::Counts::default()
            },
            output_end: 10,
            failures_end: 0,
        }
    }

    fn finished(summary: Option<String>) -> Opened {
        Opened::Finished {
            commits: vec![commit(0)],
            summary_json: summary,
        }
    }

    fn decide_with(opened: Option<Opened>, retry_failed: bool, output_exists: bool) -> Decision {
        decide(JobState {
            opened,
            retry_failed,
            output: Some(Path::new("out.jsonl")),
            output_exists,
        })
    }

    #[test]
    fn a_run_without_a_checkpoint_starts_afresh() {
        assert!(matches!(decide_with(None, false, false), Decision::Fresh));
        let no_output = decide(JobState {
            opened: None,
            retry_failed: false,
            output: None,
            output_exists: false,
        });
        assert!(matches!(no_output, Decision::Fresh));
    }

    #[test]
    fn a_new_job_starts_afresh() {
        assert!(matches!(
            decide_with(Some(Opened::Fresh), false, false),
            Decision::Fresh
        ));
    }

    #[test]
    fn an_interrupted_job_resumes_from_its_commits() {
        let opened = Opened::Resumed {
            commits: vec![commit(0), commit(1)],
        };
        match decide_with(Some(opened), false, false) {
            Decision::Resume { commits } => assert_eq!(commits, vec![commit(0), commit(1)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_failed_reruns_a_finished_job_and_refuses_an_unfinished_one() {
        match decide_with(Some(finished(Some(summary_json()))), true, true) {
            Decision::RetryFailed { previous } => assert_eq!(previous.total.failed, 1),
            other => panic!("{other:?}"),
        }
        for opened in [Opened::Fresh, Opened::Resumed { commits: vec![] }] {
            match decide_with(Some(opened), true, true) {
                Decision::Refused(r) => {
                    assert_eq!(r, Refusal::RetryUnfinished);
                    assert!(r.message().contains("without --retry-failed"), "{r:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        match decide_with(Some(finished(Some("{".into()))), true, true) {
            Decision::Refused(r) => {
                assert_eq!(r, Refusal::RetryWithoutSummary);
                assert!(r.message().contains("--restart"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_finished_job_is_not_run_again() {
        match decide_with(Some(finished(Some(summary_json()))), false, true) {
            Decision::AlreadyFinished { summary } => assert_eq!(summary.total.records, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_finished_job_whose_output_is_gone_or_summary_unreadable_is_refused() {
        match decide_with(Some(finished(Some(summary_json()))), false, false) {
            Decision::Refused(r) => {
                assert_eq!(
                    r,
                    Refusal::OutputGone {
                        output: "out.jsonl".into()
                    }
                );
                assert!(r.message().contains("out.jsonl is gone"), "{}", r.message());
            }
            other => panic!("{other:?}"),
        }
        match decide_with(Some(finished(None)), false, true) {
            Decision::Refused(r) => {
                assert_eq!(
                    r,
                    Refusal::FinishedWithoutSummary {
                        output: "out.jsonl".into()
                    }
                );
                assert!(r.message().contains("summary is unreadable"));
            }
            other => panic!("{other:?}"),
        }
    }
}

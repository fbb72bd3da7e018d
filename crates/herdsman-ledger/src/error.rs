//! The ledger's error type: one variant per thing that can go wrong, each message saying what
//! happened and what the user can do about it, in the ledger's own terms ("reset the
//! checkpoint", "a different state directory"): a front end names its own flag or call for
//! that by matching the variant.
//!
//! It must never hide the underlying cause: wrapped errors stay reachable through `source()`.

use std::fmt;
use std::path::PathBuf;

use crate::identity::IdentityChange;

/// Everything that can go wrong while opening, reading or writing the checkpoint ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Another process (or another handle in this process) holds the state directory's lock.
    #[error(
        "another herdsman run holds {dir}{pid}; wait for it to finish or use a different state directory",
        dir = .dir.display(),
        pid = PidSuffix(*.holder_pid)
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// The pid the holder wrote into the lock file, if it could be read.
        holder_pid: Option<u32>,
    },

    /// Another process holds the lock of this output file (whatever its state directory).
    #[error(
        "another herdsman run{pid} is writing {output}; wait for it to finish or choose a different output",
        output = .output.display(),
        pid = PidSuffix(*.holder_pid)
    )]
    OutputLocked {
        /// The output file.
        output: PathBuf,
        /// The pid the holder wrote into the lock file, if it could be read.
        holder_pid: Option<u32>,
    },

    /// The stored job identity differs from the one being resumed.
    #[error(
        "the job changed since the checkpoint: {changes}; reset the checkpoint to start over, or restore the original inputs and settings",
        changes = JoinChanges(.changes)
    )]
    IdentityChanged {
        /// What differs, stored value first.
        changes: Vec<IdentityChange>,
    },

    /// The ledger file exists but cannot be trusted (not a database, damaged, or holding
    /// values this version cannot read).
    #[error(
        "the checkpoint at {path} is damaged ({detail}); reset the checkpoint to start over, or use a different state directory",
        path = .path.display()
    )]
    Corrupt {
        /// The ledger file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },

    /// The ledger was written by a newer herdsman whose schema this version does not know.
    #[error(
        "the checkpoint at {path} was written by a newer herdsman (schema version {found}, this one knows up to {supported}); upgrade herdsman, or reset the checkpoint to start over",
        path = .path.display()
    )]
    NewerSchema {
        /// The ledger file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build understands.
        supported: i64,
    },

    /// A read-only open found no ledger.
    #[error(
        "there is no checkpoint in {dir}; no run has used this state directory yet",
        dir = .dir.display()
    )]
    NotFound {
        /// The state directory that was looked in.
        dir: PathBuf,
    },

    /// A write was attempted through a ledger opened with [`crate::SqliteLedger::open_read_only`].
    #[error("the checkpoint was opened read-only (for status); open it through a locked StateDir to change it")]
    ReadOnly,

    /// `commit_chunk` or `mark_finished` was called before `open_job`.
    #[error("no job is open in this ledger; call open_job before committing chunks or finishing")]
    NoJob,

    /// The same chunk was committed twice.
    #[error("chunk {chunk} is already committed; a chunk's output must be written exactly once, so this run would duplicate records; reset the checkpoint to start over")]
    AlreadyCommitted {
        /// The chunk number.
        chunk: u64,
    },

    /// A chunk was committed after the job was marked finished.
    #[error("the job is already marked finished, so chunk {chunk} cannot be committed; reset the checkpoint to run it again")]
    AlreadyFinished {
        /// The chunk number.
        chunk: u64,
    },

    /// A commit's file offsets are smaller than ones already committed: the partial files only
    /// ever grow, so this means they were truncated or rewritten behind the ledger's back.
    #[error(
        "chunk {chunk} ends {file} at byte {got}, before byte {committed} already committed; the partial files must only grow, so they were changed outside this run; reset the checkpoint to start over"
    )]
    OffsetsWentBackwards {
        /// The chunk number.
        chunk: u64,
        /// `"output"` or `"failures"`.
        file: &'static str,
        /// The offset in the rejected commit.
        got: u64,
        /// The largest offset already committed.
        committed: u64,
    },

    /// A claim is no longer the chunk's current claim (its lease ran out and the chunk was
    /// claimed again, or it was released or committed): the fencing token is stale.
    #[error("the claim on chunk {chunk} (attempt {attempt}) is no longer held: its lease ran out and the chunk was claimed again, or it was released or committed; stop working on this chunk and discard its output, its current holder writes it")]
    StaleClaim {
        /// The chunk number.
        chunk: u64,
        /// The stale claim's attempt number.
        attempt: u64,
    },

    /// A direct commit met a chunk that another owner holds under a lease that has not run
    /// out.
    #[error("chunk {chunk} is claimed by {owner} under a lease that has not run out, so it can only be committed through that claim; wait for the lease to run out, or stop the other run")]
    ClaimHeld {
        /// The chunk number.
        chunk: u64,
        /// Who holds the claim.
        owner: String,
    },

    /// A claim was used to commit a different chunk.
    #[error("a claim on chunk {claimed} cannot commit chunk {committed}; commit each chunk with its own claim")]
    ClaimMismatch {
        /// The claimed chunk.
        claimed: u64,
        /// The chunk in the commit.
        committed: u64,
    },

    /// A count or offset does not fit the ledger's signed 64-bit integers.
    #[error("{field} = {value} is too large to store in the checkpoint (the limit is {max}); split the input into smaller files", max = i64::MAX)]
    ValueTooLarge {
        /// Which value.
        field: &'static str,
        /// The value.
        value: u64,
    },

    /// A position token is longer than a checkpoint stores.
    #[error(
        "an input position of {len} bytes is longer than the {max} bytes a checkpoint stores; the input format produced a position it should not, so run without a checkpoint and report this",
        max = crate::Token::CAPACITY
    )]
    TokenTooLong {
        /// The token's length.
        len: usize,
    },

    /// The checkpoint was written by an older herdsman whose input positions this version
    /// cannot read back, so the job cannot be resumed from it.
    #[error(
        "the checkpoint at {path} was written by an older herdsman (schema version {found}) whose input positions this version cannot read, so the job cannot resume from it; reset the checkpoint to start over, or finish the job with the herdsman that started it",
        path = .path.display()
    )]
    OlderSchema {
        /// The ledger file.
        path: PathBuf,
        /// The schema version its chunks were written with.
        found: i64,
    },

    /// SQLite reported an error.
    #[error(
        "the checkpoint at {path} could not {action} (check that the state directory is on a writable local disk with free space)",
        path = .path.display()
    )]
    Sqlite {
        /// The ledger file.
        path: PathBuf,
        /// What was being done, as a verb phrase ("be opened", "commit chunk 3").
        action: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },

    /// A file-system operation failed.
    #[error(
        "could not {action} {path} (check that the state directory is a writable directory with free space)",
        path = .path.display()
    )]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done, as a verb phrase ("create the state directory").
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// This ledger backend does not keep something a caller asked for (e.g. the run's
    /// history); the job itself is unaffected.
    #[error("this ledger backend does not keep {what}; use the default state-directory ledger to have it")]
    Unsupported {
        /// What is not kept, as a noun phrase ("the run's history").
        what: &'static str,
    },

    /// A shared ledger's database server could not be reached, or refused a statement.
    #[error("the {backend} ledger at {location} could not {action}; {remedy}")]
    Database {
        /// Which database (`"PostgreSQL"`).
        backend: &'static str,
        /// Where the ledger lives, without credentials (server, database, schema, job).
        location: String,
        /// What was being done, as a verb phrase ("commit chunk 3").
        action: String,
        /// What the user can do about it.
        remedy: String,
        /// The database client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

struct PidSuffix(Option<u32>);

impl fmt::Display for PidSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, " (pid {pid})"),
            None => Ok(()),
        }
    }
}

struct JoinChanges<'a>(&'a [IdentityChange]);

impl fmt::Display for JoinChanges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_message_names_dir_pid_and_remedy() {
        let e = LedgerError::Locked {
            dir: PathBuf::from("/tmp/st"),
            holder_pid: Some(1234),
        };
        assert_eq!(
            e.to_string(),
            "another herdsman run holds /tmp/st (pid 1234); wait for it to finish or use a different state directory"
        );
        let e = LedgerError::Locked {
            dir: PathBuf::from("/tmp/st"),
            holder_pid: None,
        };
        assert!(e
            .to_string()
            .starts_with("another herdsman run holds /tmp/st;"));
    }

    #[test]
    fn identity_changed_message_lists_every_change() {
        let e = LedgerError::IdentityChanged {
            changes: vec![
                IdentityChange {
                    key: "input.0.size".into(),
                    was: Some("100".into()),
                    now: Some("120".into()),
                },
                IdentityChange {
                    key: "worker".into(),
                    was: Some("a.py".into()),
                    now: Some("b.py".into()),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "the job changed since the checkpoint: input.0.size changed from 100 to 120; worker changed from a.py to b.py; reset the checkpoint to start over, or restore the original inputs and settings"
        );
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    /// One value of every variant; the match makes a new variant fail to compile here until
    /// it is added.
    fn every_variant() -> Vec<LedgerError> {
        let all = vec![
            LedgerError::Locked {
                dir: "st".into(),
                holder_pid: Some(7),
            },
            LedgerError::OutputLocked {
                output: "out.jsonl".into(),
                holder_pid: None,
            },
            LedgerError::IdentityChanged {
                changes: vec![IdentityChange {
                    key: "worker".into(),
                    was: Some("a".into()),
                    now: Some("b".into()),
                }],
            },
            LedgerError::Corrupt {
                path: "st/ledger".into(),
                detail: "not a database".into(),
            },
            LedgerError::NewerSchema {
                path: "st/ledger".into(),
                found: 9,
                supported: 2,
            },
            LedgerError::NotFound { dir: "st".into() },
            LedgerError::ReadOnly,
            LedgerError::NoJob,
            LedgerError::AlreadyCommitted { chunk: 3 },
            LedgerError::AlreadyFinished { chunk: 3 },
            LedgerError::OffsetsWentBackwards {
                chunk: 3,
                file: "output",
                got: 1,
                committed: 2,
            },
            LedgerError::StaleClaim {
                chunk: 3,
                attempt: 2,
            },
            LedgerError::ClaimHeld {
                chunk: 3,
                owner: "host:1".into(),
            },
            LedgerError::ClaimMismatch {
                claimed: 3,
                committed: 4,
            },
            LedgerError::ValueTooLarge {
                field: "offset",
                value: u64::MAX,
            },
            LedgerError::TokenTooLong { len: 40 },
            LedgerError::OlderSchema {
                path: "st/ledger".into(),
                found: 1,
            },
            LedgerError::Sqlite {
                path: "st/ledger".into(),
                action: "be opened".into(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(10),
                    Some("disk I/O error".into()),
                ),
            },
            LedgerError::Io {
                path: "st".into(),
                action: "create the state directory",
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "No space left on device",
                ),
            },
            LedgerError::Database {
                backend: "PostgreSQL",
                location: "postgres://u@db:5432/jobs (schema herdsman, job default)".into(),
                action: "claim a chunk".into(),
                remedy: "check that the server is running".into(),
                source: "connection refused".into(),
            },
            LedgerError::Unsupported {
                what: "the run's history",
            },
        ];
        for e in &all {
            match e {
                LedgerError::Locked { .. }
                | LedgerError::OutputLocked { .. }
                | LedgerError::IdentityChanged { .. }
                | LedgerError::Corrupt { .. }
                | LedgerError::NewerSchema { .. }
                | LedgerError::NotFound { .. }
                | LedgerError::ReadOnly
                | LedgerError::NoJob
                | LedgerError::AlreadyCommitted { .. }
                | LedgerError::AlreadyFinished { .. }
                | LedgerError::OffsetsWentBackwards { .. }
                | LedgerError::StaleClaim { .. }
                | LedgerError::ClaimHeld { .. }
                | LedgerError::ClaimMismatch { .. }
                | LedgerError::ValueTooLarge { .. }
                | LedgerError::TokenTooLong { .. }
                | LedgerError::OlderSchema { .. }
                | LedgerError::Sqlite { .. }
                | LedgerError::Io { .. }
                | LedgerError::Database { .. }
                | LedgerError::Unsupported { .. } => {}
            }
        }
        all
    }

    #[test]
    fn no_message_repeats_its_cause() {
        let mut with_source = 0;
        for e in every_variant() {
            let mut outer: &dyn std::error::Error = &e;
            with_source += usize::from(outer.source().is_some());
            while let Some(inner) = outer.source() {
                let (o, i) = (outer.to_string(), inner.to_string());
                assert!(!o.contains(&i), "`{o}` repeats its cause `{i}`");
                outer = inner;
            }
        }
        assert_eq!(
            with_source, 3,
            "Sqlite, Io and Database keep their cause as source()"
        );
    }

    #[test]
    fn no_message_names_a_command_line_flag() {
        for e in every_variant() {
            let text = e.to_string();
            let flag = text
                .split(|c: char| c.is_whitespace() || c == '(' || c == '`')
                .find(|w| w.starts_with("--"));
            assert!(flag.is_none(), "`{text}` names the flag {flag:?}");
        }
    }
}

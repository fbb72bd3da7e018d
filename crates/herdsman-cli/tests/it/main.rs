//! The crate's integration tests, one binary: each module is one former test file.

mod cli;
mod common;
mod corpora;
mod crash;
mod csv_delimiter;
mod csv_output;
#[cfg(feature = "database")]
mod db_input;
mod db_output;
mod dead_letters;
mod distributed;
mod distributed_commits;
mod distributed_fairness;
mod distributed_s3;
mod error_hints;
mod exec_args;
mod exec_first_run;
mod files;
mod inputs;
mod key_order;
mod live_status;
mod metrics;
mod module_layers;
mod object_storage;
mod observability;
mod old_checkpoint;
mod parallel_users;
mod parquet;
mod report;
mod resume_identity;
mod retry_after;
mod shard;
mod stdio;
mod timeouts_first_run;
mod wire_format;
mod workers_no_hang;

//! The crate's integration tests, one binary: each module is one former test file.

mod common;
mod exec;
mod exec_output;
mod framed_replies;
mod helpers;
mod no_hang;
mod on_start;
mod pool;
mod retry_after;
mod shell_contexts;
mod template_props;
mod timeouts;
mod wakeups;

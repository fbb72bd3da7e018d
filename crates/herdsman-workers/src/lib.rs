//! The process executor: pools of persistent worker processes and one-command-per-record
//! execution, behind herdsman's `Executor` trait.
//!
//! It must never pass record data through a shell unless asked, never deadlock on a worker
//! that floods or ignores its pipes, and never leave a killed worker's children running.

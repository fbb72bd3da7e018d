//! The crate's integration tests, one binary: each module is one former test file.

mod async_behaviour;
mod behaviour;
mod checkpoint;
mod executor_forwarding;
mod fast_path;
mod limits;
mod props;

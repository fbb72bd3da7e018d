//! The crate's integration tests, one binary: each module is one former test file.

#[cfg(feature = "test-support")]
mod conformance;
mod history;
mod ledger;
mod old_checkpoint;
mod processes;
mod roundtrip;

//! The crate's integration tests, one binary: each module is one former test file.

mod ledger;
mod processes;
mod roundtrip;

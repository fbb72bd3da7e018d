//! The crate's integration tests, one binary. Each test starts its own throwaway PostgreSQL
//! server (`test_server`); without PostgreSQL installed the tests skip with a printed reason,
//! except under CI (`CI` set), where they fail.

#![cfg(feature = "test-support")]

mod claim_many;
mod commit_and_claim;
mod commit_batch;
mod common;
mod conformance;
mod harness;
mod lost_reply;
mod nodes;
mod restart;
mod schema;

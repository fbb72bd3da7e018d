//! herdsman: run one function over every item of a large input, in parallel, with bounded
//! memory, and account for every item.
//!
//! This crate is the engine. It must never lose or duplicate an item, never pull more input
//! than its window allows, and never abort the process because a user function panicked.

pub mod executor;

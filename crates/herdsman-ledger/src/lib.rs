//! The checkpoint ledger: which job this is, and which chunks are committed to the output.
//!
//! The ledger must never report a chunk as committed before its output bytes are durable.

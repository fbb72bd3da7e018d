//! Sources and sinks for herdsman: stream CSV, JSONL and line inputs as JSON records with
//! their file positions, and write outputs atomically.
//!
//! Never load a whole input or output into memory, and never turn bad input into a crash:
//! a malformed record is a record that carries its error.

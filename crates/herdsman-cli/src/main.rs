//! The `herdsman` command.
fn main() {}

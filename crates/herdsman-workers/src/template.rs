//! Command templates for one-command-per-record execution.

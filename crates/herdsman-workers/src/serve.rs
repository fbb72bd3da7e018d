//! The worker side of the `framed` and `lines` protocols, for workers written in Rust.
//!
//! This module re-exports the [`herdsman_worker`] crate, which holds the serve loop on its
//! own (serde and serde_json only). New workers should depend on `herdsman-worker`
//! directly; this path keeps existing users compiling, and must never add code of its own
//! (the worker side of the protocols has one implementation).
//!
//! ```
//! use herdsman_workers::serve::{serve_framed, RecordError};
//! use serde_json::Value;
//!
//! let mut output = Vec::new();
//! serve_framed(&b"{\"id\":0,\"record\":{}}\n"[..], &mut output, |_: Value| {
//!     Err::<Vec<Value>, _>(RecordError::fatal("no text"))
//! })
//! .unwrap();
//! assert_eq!(output, b"{\"id\":0,\"error\":\"no text\",\"retryable\":false}\n");
//! ```

pub use herdsman_worker::*;

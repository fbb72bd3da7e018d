//! Job identity: the facts about a job (inputs, worker, settings) that must be unchanged for a
//! checkpoint to be resumed.
//!
//! It must never decide by itself what belongs in an identity; the caller chooses the keys.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The facts that make a job "the same job": if any differs on resume, the checkpoint's offsets
/// no longer describe the output, and resuming would corrupt it.
///
/// Keys are free-form dotted names such as `input.0.path`, `input.0.size`, `input.0.mtime`,
/// `input.0.fingerprint`, `worker`, `protocol`, `format`, `ordered`, `chunk_records`.
/// Stored as a JSON object.
///
/// ```
/// use herdsman_ledger::JobIdentity;
/// let a = JobIdentity::new().with("input.0.size", "100").with("worker", "w.py");
/// let b = JobIdentity::new().with("input.0.size", "120").with("worker", "w.py");
/// let changes = a.diff(&b);
/// assert_eq!(changes.len(), 1);
/// assert_eq!(changes[0].to_string(), "input.0.size changed from 100 to 120");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobIdentity {
    /// The facts, by key.
    pub entries: BTreeMap<String, String>,
}

impl JobIdentity {
    /// An empty identity.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder-style insert.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.insert(key.into(), value.into());
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Every key whose value differs between `self` (what was) and `other` (what is now),
    /// sorted by key.
    pub fn diff(&self, other: &JobIdentity) -> Vec<IdentityChange> {
        let mut out = Vec::new();
        for (key, was) in &self.entries {
            match other.entries.get(key) {
                Some(now) if now == was => {}
                now => out.push(IdentityChange {
                    key: key.clone(),
                    was: Some(was.clone()),
                    now: now.cloned(),
                }),
            }
        }
        for (key, now) in &other.entries {
            if !self.entries.contains_key(key) {
                out.push(IdentityChange {
                    key: key.clone(),
                    was: None,
                    now: Some(now.clone()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

/// One difference between a stored identity and the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityChange {
    /// The key that differs.
    pub key: String,
    /// The stored value (`None`: the key was not in the stored identity).
    pub was: Option<String>,
    /// The current value (`None`: the key is not in the current identity).
    pub now: Option<String>,
}

impl fmt::Display for IdentityChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.was, &self.now) {
            (Some(was), Some(now)) => write!(f, "{} changed from {was} to {now}", self.key),
            (None, Some(now)) => write!(f, "{} was not set and is now {now}", self.key),
            (Some(was), None) => write!(f, "{} was {was} and is no longer set", self.key),
            (None, None) => write!(f, "{} is unset in both", self.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_identities_have_no_diff() {
        let a = JobIdentity::new().with("a", "1").with("b", "2");
        assert!(a.diff(&a.clone()).is_empty());
    }

    #[test]
    fn diff_reports_changed_added_and_removed_keys_sorted() {
        let was = JobIdentity::new()
            .with("input.0.size", "100")
            .with("worker", "w.py")
            .with("format", "csv");
        let now = JobIdentity::new()
            .with("input.0.size", "120")
            .with("worker", "w.py")
            .with("ordered", "true");
        let msgs: Vec<String> = was.diff(&now).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "format was csv and is no longer set",
                "input.0.size changed from 100 to 120",
                "ordered was not set and is now true",
            ]
        );
    }

    #[test]
    fn identity_serializes_as_a_flat_json_object() {
        let a = JobIdentity::new().with("b", "2").with("a", "1");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"a":"1","b":"2"}"#);
        let back: JobIdentity = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }
}

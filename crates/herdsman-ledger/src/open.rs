//! Opening a ledger from its spec: the one place that decides which backend serves a job.
//!
//! It must never guess: a spec names exactly one backend. Today every spec is a state
//! directory served by SQLite; a shared backend (e.g. `postgres://…`) is registered by adding
//! its variant to `Backend` and its arm to the two matches below.

use std::ffi::OsStr;
use std::path::Path;

use crate::{Ledger, LedgerError, SqliteLedger, StateDir};

/// Which backend a spec names.
enum Backend<'a> {
    /// A state directory: the embedded SQLite ledger in `<dir>/ledger.sqlite`.
    Sqlite(&'a Path),
}

impl<'a> Backend<'a> {
    fn of(spec: &'a OsStr) -> Backend<'a> {
        Backend::Sqlite(Path::new(spec))
    }
}

/// Opens the ledger named by `spec` for a run: today `spec` is a state directory (created if
/// needed, then locked, so a second run fails at once with [`LedgerError::Locked`]), served by
/// [`SqliteLedger`]. The ledger keeps the lock until it is dropped.
///
/// ```
/// use herdsman_ledger::{JobIdentity, LedgerError, Opened};
/// let tmp = tempfile::tempdir().unwrap();
/// let mut ledger = herdsman_ledger::open(tmp.path().join("state")).unwrap();
/// assert_eq!(ledger.open_job(&JobIdentity::new().with("a", "1")).unwrap(), Opened::Fresh);
/// assert!(matches!(herdsman_ledger::open(tmp.path().join("state")), Err(LedgerError::Locked { .. })));
/// ```
pub fn open(spec: impl AsRef<OsStr>) -> Result<Box<dyn Ledger>, LedgerError> {
    match Backend::of(spec.as_ref()) {
        Backend::Sqlite(dir) => {
            let state = StateDir::open(dir)?;
            Ok(Box::new(SqliteLedger::open(&state)?))
        }
    }
}

/// Opens the ledger named by `spec` to look at it (for `herdsman status`), without taking the
/// lock, so it works while a run holds it. Fails with [`LedgerError::NotFound`] when no run
/// has used the state directory; every write through it fails with
/// [`LedgerError::ReadOnly`].
pub fn open_read_only(spec: impl AsRef<OsStr>) -> Result<Box<dyn Ledger>, LedgerError> {
    match Backend::of(spec.as_ref()) {
        Backend::Sqlite(dir) => Ok(Box::new(SqliteLedger::open_read_only(dir)?)),
    }
}

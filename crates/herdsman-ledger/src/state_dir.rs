//! The state directory and its lock: one herdsman run per state directory at a time.
//!
//! It must never wait for the lock: a second run fails at once with the holder's pid, so a user
//! never sees two runs silently interleave output.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::LedgerError;

/// The name of the lock file inside the state directory.
pub const LOCK_FILE_NAME: &str = "lock";

/// A state directory held exclusively by this process.
///
/// The lock is an advisory `flock`-style lock on `<dir>/lock` (through `std::fs::File::try_lock`),
/// released when this value (and every [`crate::SqliteLedger`] opened from it) is dropped, or by
/// the kernel when the process dies, even by `SIGKILL`. The lock is per open file, so a second
/// `StateDir::open` of the same directory fails even inside the same process.
///
/// ```
/// use herdsman_ledger::{LedgerError, StateDir};
/// let tmp = tempfile::tempdir().unwrap();
/// let dir = tmp.path().join("state");
/// let held = StateDir::open(&dir).unwrap();
/// match StateDir::open(&dir) {
///     Err(LedgerError::Locked { holder_pid, .. }) => assert_eq!(holder_pid, Some(std::process::id())),
///     other => panic!("expected Locked, got {other:?}"),
/// }
/// drop(held);
/// assert!(StateDir::open(&dir).is_ok());
/// ```
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    lock: File,
}

impl StateDir {
    /// Creates `dir` if needed and takes its lock, failing at once with
    /// [`LedgerError::Locked`] if another run holds it.
    pub fn open(dir: &Path) -> Result<StateDir, LedgerError> {
        std::fs::create_dir_all(dir).map_err(|source| LedgerError::Io {
            path: dir.to_path_buf(),
            action: "create the state directory",
            source,
        })?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| LedgerError::Io {
                path: lock_path.clone(),
                action: "open the lock file",
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    dir: dir.to_path_buf(),
                    holder_pid: read_pid(&mut lock),
                })
            }
            Err(TryLockError::Error(source)) => {
                return Err(LedgerError::Io {
                    path: lock_path,
                    action: "lock",
                    source,
                })
            }
        }
        write_pid(&mut lock).map_err(|source| LedgerError::Io {
            path: lock_path,
            action: "write this process's id into",
            source,
        })?;
        Ok(StateDir {
            path: dir.to_path_buf(),
            lock,
        })
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle to the locked file, so that whatever holds it keeps the lock alive.
    pub(crate) fn lock_handle(&self) -> Result<File, LedgerError> {
        self.lock.try_clone().map_err(|source| LedgerError::Io {
            path: self.path.join(LOCK_FILE_NAME),
            action: "duplicate the handle of",
            source,
        })
    }
}

fn read_pid(lock: &mut File) -> Option<u32> {
    let mut text = String::new();
    lock.seek(SeekFrom::Start(0)).ok()?;
    lock.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(lock: &mut File) -> std::io::Result<()> {
    lock.set_len(0)?;
    lock.seek(SeekFrom::Start(0))?;
    writeln!(lock, "{}", std::process::id())?;
    lock.flush()
}

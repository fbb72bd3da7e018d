//! The state directory and its lock: one herdsman run per state directory at a time; and the
//! output's own lock: one herdsman run per output file at a time, whatever its state directory.
//!
//! It must never wait for a lock: a second run fails at once with the holder's pid, so a user
//! never sees two runs silently interleave output.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    lock: Arc<HeldLock>,
}

/// A locked file that lets go of its lock explicitly when the last holder drops it.
///
/// Closing the file is not enough: a `fork` in another thread (any child process started
/// while the lock is held) briefly shares the open file, and the kernel releases a `flock`
/// only when every copy is closed. Unlocking first makes the release immediate.
#[derive(Debug)]
pub(crate) struct HeldLock(File);

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
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
            lock: Arc::new(HeldLock(lock)),
        })
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another hold on the lock, so that whatever keeps it keeps the directory locked.
    pub(crate) fn lock_handle(&self) -> Arc<HeldLock> {
        Arc::clone(&self.lock)
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

/// The name of the lock file of an output: `dir/out.jsonl` → `dir/.out.jsonl.herdsman-lock`.
///
/// ```
/// use std::path::Path;
/// assert_eq!(
///     herdsman_ledger::output_lock_path(Path::new("/data/out.jsonl")),
///     Path::new("/data/.out.jsonl.herdsman-lock")
/// );
/// ```
pub fn output_lock_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!(".{name}.herdsman-lock"))
}

/// An output file held exclusively by this process, whatever state directory each run uses,
/// so two runs can never both publish the same output.
///
/// The lock is an advisory `flock`-style lock on [`output_lock_path`] of the output, which
/// the caller gives in canonical form (symbolic links and `.`/`..` resolved) so that every
/// spelling of one file takes the same lock. The lock file is removed when this value is
/// dropped; a process killed with `SIGKILL` leaves it behind, unlocked, and the next run
/// reuses it.
///
/// ```
/// use herdsman_ledger::{LedgerError, OutputLock};
/// let tmp = tempfile::tempdir().unwrap();
/// let out = tmp.path().join("out.jsonl");
/// let held = OutputLock::acquire(&out).unwrap();
/// assert!(matches!(OutputLock::acquire(&out), Err(LedgerError::OutputLocked { .. })));
/// drop(held);
/// assert!(OutputLock::acquire(&out).is_ok());
/// ```
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    lock: Option<HeldLock>,
}

impl OutputLock {
    /// Takes the lock of `output` (its directory must exist), failing at once with
    /// [`LedgerError::OutputLocked`] if another run holds it.
    pub fn acquire(output: &Path) -> Result<OutputLock, LedgerError> {
        let path = output_lock_path(output);
        let io_err = |action, source| LedgerError::Io {
            path: path.clone(),
            action,
            source,
        };
        // A holder removes the file as it lets go; a file locked after that is no longer
        // the one at the path, so take the lock again on the new one.
        for _ in 0..100 {
            let mut lock = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| io_err("open the output's lock file", e))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(LedgerError::OutputLocked {
                        output: output.to_path_buf(),
                        holder_pid: read_pid(&mut lock),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io_err("lock", e)),
            }
            if !same_file(&lock, &path) {
                continue;
            }
            write_pid(&mut lock).map_err(|e| io_err("write this process's id into", e))?;
            return Ok(OutputLock {
                path,
                lock: Some(HeldLock(lock)),
            });
        }
        Err(io_err(
            "lock",
            std::io::Error::other("the lock file kept being replaced"),
        ))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, then let go.
        let _ = std::fs::remove_file(&self.path);
        drop(self.lock.take());
    }
}

/// Whether the open `file` is the file at `path` now.
fn same_file(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

//! Resumable collected maps: a checkpoint file that remembers every success, so that a run
//! interrupted by a crash or a stop can be started again without redoing finished items.
//!
//! The file is append-only JSON lines, one `{"k": key, "v": value}` per success, written
//! before the success is reported. This module must never report an item as done from the
//! file unless its whole line was read back, and never record a failure (failed items run
//! again).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::Hash;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::map::{Map, Threads};

/// Why a checkpoint file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file could not be opened, read, written or synced.
    #[error("cannot use checkpoint file {} (check the path, its permissions and free space)", path.display())]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A complete line of the file is not a checkpoint entry of this value type.
    #[error("checkpoint file {} line {line} is not an entry of this map ({message}); delete the file to start over, or give another path", path.display())]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What did not parse.
        message: String,
    },
}

#[derive(Serialize)]
struct EntryOut<'a, K, U> {
    k: &'a K,
    v: &'a U,
}

#[derive(Deserialize)]
struct EntryIn<K, U> {
    k: K,
    v: U,
}

struct State<K, U> {
    done: HashMap<K, U>,
    file: File,
    path: PathBuf,
    last_sync: Instant,
    error: Option<std::io::Error>,
    recorded: u64,
}

/// A checkpoint for one collected map: the successes of earlier runs, and the file that new
/// successes are appended to. Cheap to clone (shared).
///
/// Keys are item indices ([`Checkpoint::map`], for an input that is the same sequence every
/// run) or keys computed from the items ([`Checkpoint::map_by_key`], for inputs whose order
/// or content may change between runs).
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("squares.ckpt");
/// use herdsman::checkpoint::Checkpoint;
/// // First run: every item runs and its value is recorded.
/// let ckpt = Checkpoint::<u64, u64>::open(&path).unwrap();
/// let first = ckpt.map(1..=4u64, |x| Ok::<_, String>(x * x)).collect();
/// ckpt.sync().unwrap();
/// assert_eq!(first.into_values().unwrap(), vec![1, 4, 9, 16]);
///
/// // A later run finds the values in the file and does not call f for them.
/// let again = Checkpoint::<u64, u64>::open(&path).unwrap();
/// assert_eq!(again.done(), 4);
/// let second = again.map(1..=4u64, |_| Err::<u64, _>("not called")).collect();
/// assert_eq!(second.into_values().unwrap(), vec![1, 4, 9, 16]);
/// ```
pub struct Checkpoint<K, U> {
    state: Arc<Mutex<State<K, U>>>,
}

impl<K, U> Clone for Checkpoint<K, U> {
    fn clone(&self) -> Self {
        Checkpoint {
            state: Arc::clone(&self.state),
        }
    }
}

/// How often recorded successes are fsynced (they reach the OS at once: a crash of the
/// process loses none; a power cut loses at most this much).
const SYNC_EVERY: Duration = Duration::from_secs(1);

impl<K, U> Checkpoint<K, U>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Send + 'static,
    U: Serialize + DeserializeOwned + Send + 'static,
{
    /// Opens (or creates) the checkpoint file at `path` and reads the successes recorded by
    /// earlier runs. A last line cut short by a crash is dropped.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut done = HashMap::new();
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        let mut good_len = 0u64;
        let mut number = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break; // end, or a torn last line
            }
            number += 1;
            let entry: EntryIn<K, U> =
                serde_json::from_slice(&line).map_err(|e| CheckpointError::Corrupt {
                    path: path.clone(),
                    line: number,
                    message: e.to_string(),
                })?;
            done.insert(entry.k, entry.v);
            good_len += n as u64;
        }
        drop(reader);
        // Cut a torn last line so that new entries start on a line of their own.
        if file.seek(SeekFrom::End(0)).map_err(io)? != good_len {
            file.set_len(good_len).map_err(io)?;
        }
        Ok(Checkpoint {
            state: Arc::new(Mutex::new(State {
                done,
                file,
                path,
                last_sync: Instant::now(),
                error: None,
                recorded: 0,
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, U>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many recorded successes are waiting to be returned without running their item.
    pub fn done(&self) -> usize {
        self.lock().done.len()
    }

    /// Successes recorded by this process so far.
    pub fn recorded(&self) -> u64 {
        self.lock().recorded
    }

    /// The recorded value for `key`, removed from the checkpoint's memory (it stays in the
    /// file).
    fn take(&self, key: &K) -> Option<U> {
        let mut st = self.lock();
        if st.done.is_empty() {
            return None;
        }
        st.done.remove(key)
    }

    /// Appends one success. A write error is kept and reported by [`Checkpoint::sync`]; the
    /// value is still returned to the caller.
    fn record(&self, key: &K, value: &U) {
        let mut line = match serde_json::to_vec(&EntryOut { k: key, v: value }) {
            Ok(l) => l,
            Err(e) => {
                let mut st = self.lock();
                st.error.get_or_insert(std::io::Error::other(e));
                return;
            }
        };
        line.push(b'\n');
        let mut st = self.lock();
        if st.error.is_some() {
            return;
        }
        if let Err(e) = st.file.write_all(&line) {
            st.error = Some(e);
            return;
        }
        st.recorded += 1;
        if st.last_sync.elapsed() >= SYNC_EVERY {
            st.last_sync = Instant::now();
            if let Err(e) = st.file.sync_data() {
                st.error = Some(e);
            }
        }
    }

    /// Makes every recorded success durable (fsync), and reports the first write error of
    /// the run, if any. Call it when the run is over.
    pub fn sync(&self) -> Result<(), CheckpointError> {
        let mut st = self.lock();
        let path = st.path.clone();
        if let Some(e) = st.error.take() {
            return Err(CheckpointError::Io { path, source: e });
        }
        st.file
            .sync_data()
            .map_err(|source| CheckpointError::Io { path, source })
    }

    /// Like [`crate::map`] with keys computed from the items: an item whose key the file
    /// holds is not run and its recorded value is its result. For inputs whose order or
    /// content can change between runs. Keys must be unique within the input.
    pub fn map_by_key<I, T, E, F, KF>(
        &self,
        items: I,
        key: KF,
        f: F,
    ) -> Map<Keyed<I::IntoIter, ByFn<KF>>, U, E, Threads>
    where
        I: IntoIterator<Item = T>,
        T: Send + 'static,
        E: Send + 'static,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
        KF: FnMut(&T) -> K,
    {
        self.run(
            Keyed {
                inner: items.into_iter(),
                keys: ByFn(key),
            },
            f,
        )
    }

    fn run<II, T, E, F>(&self, keyed: II, f: F) -> Map<II, U, E, Threads>
    where
        II: Iterator<Item = (K, T)>,
        T: Send + 'static,
        E: Send + 'static,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    {
        let ckpt = self.clone();
        crate::map(keyed, move |(k, item): (K, T)| {
            if let Some(v) = ckpt.take(&k) {
                return Ok(v);
            }
            let r = f(item);
            if let Ok(v) = &r {
                ckpt.record(&k, v);
            }
            r
        })
    }
}

impl<U> Checkpoint<u64, U>
where
    U: Serialize + DeserializeOwned + Send + 'static,
{
    /// Like [`crate::map`], keyed by the item's 0-based index: an item whose index the file
    /// holds is not run and its recorded value is its result. The input must be the same
    /// sequence on every run (use [`Checkpoint::map_by_key`] otherwise).
    pub fn map<I, T, E, F>(&self, items: I, f: F) -> Map<Keyed<I::IntoIter, ByIndex>, U, E, Threads>
    where
        I: IntoIterator<Item = T>,
        T: Send + 'static,
        E: Send + 'static,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
    {
        self.run(
            Keyed {
                inner: items.into_iter(),
                keys: ByIndex(0),
            },
            f,
        )
    }
}

/// How a checkpointed map derives each item's key.
pub trait KeyOf<T> {
    /// The key type.
    type Key;
    /// The key of the next item.
    fn key_of(&mut self, item: &T) -> Self::Key;
}

/// Keys are 0-based input indices.
pub struct ByIndex(u64);

impl<T> KeyOf<T> for ByIndex {
    type Key = u64;
    fn key_of(&mut self, _item: &T) -> u64 {
        self.0 += 1;
        self.0 - 1
    }
}

/// Keys are computed by a function of the item.
pub struct ByFn<F>(F);

impl<T, K, F: FnMut(&T) -> K> KeyOf<T> for ByFn<F> {
    type Key = K;
    fn key_of(&mut self, item: &T) -> K {
        (self.0)(item)
    }
}

/// The input of a checkpointed map: each item with its key.
pub struct Keyed<I, KS> {
    inner: I,
    keys: KS,
}

impl<I: Iterator, KS: KeyOf<I::Item>> Iterator for Keyed<I, KS> {
    type Item = (KS::Key, I::Item);

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        Some((self.keys.key_of(&item), item))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

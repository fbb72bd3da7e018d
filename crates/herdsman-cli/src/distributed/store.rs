//! Where a shared job's parts live: a directory every node reaches (`--parts DIR`, default
//! `<output>.parts`) or an object-storage prefix (`--parts s3://bucket/prefix/`, default
//! `<output>.parts/` when the output is `s3://…`), behind one small trait, [`PartStore`].
//!
//! In a directory (the staging directory is the parts directory) a node appends its chunks
//! to segment files of its own and a part is a byte range of one
//! ([`PartStore::writes_segments`]); [`PartStore::sync_parts`] fsyncs the segments (and the
//! directory once per new file) before the commit that names the ranges. On object storage
//! a part is written locally, in the store's staging directory, to its end (renamed into
//! place by the part writer), and [`PartStore::put`] uploads it (one PUT or a multipart
//! upload, so the object appears whole or not at all). The assembler reads parts back with
//! [`PartStore::open`], streaming, a range by seeking to its start.
//!
//! This module must never make a part visible before it is complete (a range is visible
//! only once a commit names it, after its bytes are durable), never read past a range's
//! end, and never read or delete anything outside its directory or prefix.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::parts::split_part;

use herdsman_io::{is_object_url, ObjectErrorKind};

/// A store of a shared job's parts, named by [`super::parts::part_name`].
///
/// To add a store: implement this trait in this file and return it from [`open_store`] for
/// the `--parts` values it serves.
pub(crate) trait PartStore: Send + Sync {
    /// The local directory a part is written in before [`PartStore::put`].
    fn staging_dir(&self) -> &Path;
    /// Makes the finished part `staging_dir()/name` durable in the store under
    /// `name`. When this returns, every node can read the whole part; none ever sees half.
    fn put(&self, name: &str) -> std::io::Result<()>;
    /// Makes the parts `names`, written and put, durable before a commit names them. Nothing
    /// to do where [`PartStore::put`] is the durability point (object storage).
    fn sync_parts(&self, _names: &[String]) -> std::io::Result<()> {
        Ok(())
    }
    /// Whether chunks are written as byte ranges of segment files
    /// ([`super::parts::range_name`]), a node's chunks appended to files of its own, rather
    /// than a part file each: yes for a directory, where a file per chunk costs a creation,
    /// a rename and an fsync each; no for object storage, where a part is one upload.
    fn writes_segments(&self) -> bool {
        false
    }
    /// Opens the part `name` (a range of a segment file: its bytes) for a streaming read.
    fn open(&self, name: &str) -> std::io::Result<Box<dyn BufRead + Send>>;
    /// Deletes the part `name`; a part that is already gone is not an error. A range of a
    /// segment file stays in its file (other chunks' ranges share it), unnamed.
    fn delete(&self, name: &str) -> std::io::Result<()>;
    /// The names of the parts in the store.
    fn list(&self) -> std::io::Result<Vec<String>>;
    /// Deletes every part (the job finished and published its output).
    fn remove_all(&self) -> std::io::Result<()> {
        for name in self.list()? {
            self.delete(&name)?;
        }
        Ok(())
    }
    /// The store's location, for messages.
    fn location(&self) -> String;
}

/// Opens the parts store at `location`: an object-storage prefix for an object URL, a
/// directory otherwise.
pub(crate) fn open_store(location: &str) -> std::io::Result<Box<dyn PartStore>> {
    if is_object_url(location) {
        Ok(Box::new(ObjectParts::new(location)?))
    } else {
        Ok(Box::new(DirParts {
            dir: PathBuf::from(location),
            named: Mutex::default(),
        }))
    }
}

/// The default parts location of an output: `<output>.parts` beside a local file,
/// `<output>.parts/` in the same bucket for an object URL.
pub(crate) fn default_location(output: &Path, remote_output: Option<&str>) -> String {
    match remote_output {
        Some(url) => format!("{url}.parts/"),
        None => super::default_parts_dir(output).display().to_string(),
    }
}

/// Parts in a directory every node reaches: written in place, nothing to upload; a node's
/// chunks are ranges of its segment files.
struct DirParts {
    dir: PathBuf,
    /// The files whose names in `dir` were made durable (the directory fsynced after they
    /// appeared): a segment file's name needs it once, not at every commit of its ranges.
    named: Mutex<HashSet<String>>,
}

impl PartStore for DirParts {
    fn staging_dir(&self) -> &Path {
        &self.dir
    }
    fn put(&self, _name: &str) -> std::io::Result<()> {
        // The part is in place; `sync_parts` makes it durable before its commit.
        Ok(())
    }
    fn sync_parts(&self, names: &[String]) -> std::io::Result<()> {
        let mut files: Vec<&str> = names.iter().map(|n| split_part(n).0).collect();
        files.sort_unstable();
        files.dedup();
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        let new_names = files.iter().any(|f| !named.contains(*f));
        super::parts::sync_files(&self.dir, &files, new_names)?;
        named.extend(files.iter().map(|f| f.to_string()));
        Ok(())
    }
    fn writes_segments(&self) -> bool {
        true
    }
    fn open(&self, name: &str) -> std::io::Result<Box<dyn BufRead + Send>> {
        let (file, range) = split_part(name);
        let mut f = std::fs::File::open(self.dir.join(file))?;
        let Some((start, end)) = range else {
            return Ok(Box::new(BufReader::with_capacity(1 << 16, f)));
        };
        let len = f.metadata()?.len();
        if len < end {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the segment file {file} holds {len} bytes, but the part ends at byte {end}"
                ),
            ));
        }
        f.seek(SeekFrom::Start(start))?;
        let size = (end - start).clamp(1, 1 << 16) as usize;
        Ok(Box::new(BufReader::with_capacity(
            size,
            f.take(end - start),
        )))
    }
    fn delete(&self, name: &str) -> std::io::Result<()> {
        if split_part(name).1.is_some() {
            // Other chunks' ranges share the file; this one is never named.
            return Ok(());
        }
        match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    fn list(&self) -> std::io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for e in entries {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn remove_all(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    fn location(&self) -> String {
        self.dir.display().to_string()
    }
}

/// Parts under an object-storage prefix: written to a private local directory, then uploaded
/// (the object appears only when the upload completes) and the local copy removed.
struct ObjectParts {
    /// The prefix, ending with `/`.
    prefix: String,
    /// This process's staging directory, removed when the store is dropped.
    staging: PathBuf,
}

impl ObjectParts {
    fn new(location: &str) -> std::io::Result<ObjectParts> {
        let prefix = if location.ends_with('/') {
            location.to_string()
        } else {
            format!("{location}/")
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = std::env::temp_dir();
        remove_dead_staging(&tmp);
        let staging = tmp.join(format!("{STAGING_PREFIX}{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&staging)?;
        Ok(ObjectParts { prefix, staging })
    }

    fn url(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// The name every staging directory starts with, followed by `<pid>-<nanoseconds>`.
const STAGING_PREFIX: &str = "herdsman-parts-";

/// Removes the staging directories in `tmp` left by nodes that died (SIGKILL gives them no
/// chance to clean up): those whose pid no longer runs. A directory of a live process, or
/// one whose name does not parse, is left alone; errors are ignored (it is housekeeping).
fn remove_dead_staging(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() as i32
            || !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            );
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn io_error(e: herdsman_io::ObjectError) -> std::io::Error {
    let kind = match e.kind {
        ObjectErrorKind::NotFound => std::io::ErrorKind::NotFound,
        ObjectErrorKind::Denied => std::io::ErrorKind::PermissionDenied,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, e)
}

impl PartStore for ObjectParts {
    fn staging_dir(&self) -> &Path {
        &self.staging
    }
    fn put(&self, name: &str) -> std::io::Result<()> {
        let local = self.staging.join(name);
        herdsman_io::upload_file(&local, &self.url(name)).map_err(io_error)?;
        std::fs::remove_file(&local)
    }
    fn open(&self, name: &str) -> std::io::Result<Box<dyn BufRead + Send>> {
        herdsman_io::open_object(&self.url(name)).map_err(io_error)
    }
    fn delete(&self, name: &str) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.staging.join(name));
        herdsman_io::delete_object(&self.url(name)).map_err(io_error)
    }
    fn list(&self) -> std::io::Result<Vec<String>> {
        let listed = match herdsman_io::expand_object(&self.prefix) {
            Ok(l) => l,
            Err(e) if e.kind == ObjectErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(e)),
        };
        Ok(listed
            .iter()
            .filter_map(|o| o.url.strip_prefix(&self.prefix).map(String::from))
            .collect())
    }
    fn location(&self) -> String {
        self.prefix.clone()
    }
}

impl Drop for ObjectParts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::parts::range_name;

    fn read(store: &dyn PartStore, name: &str) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        store.open(name)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    #[test]
    fn a_range_of_a_segment_file_reads_exactly_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir.path().display().to_string()).unwrap();
        assert!(store.writes_segments());
        std::fs::write(dir.path().join("seg-1-0"), b"aaa\nbb\ncccc\n").unwrap();
        std::fs::write(dir.path().join("part-3-1"), b"whole\n").unwrap();
        assert_eq!(
            read(&*store, &range_name("seg-1-0", 0, 4)).unwrap(),
            b"aaa\n"
        );
        assert_eq!(
            read(&*store, &range_name("seg-1-0", 4, 7)).unwrap(),
            b"bb\n"
        );
        assert_eq!(
            read(&*store, &range_name("seg-1-0", 7, 12)).unwrap(),
            b"cccc\n"
        );
        assert_eq!(read(&*store, &range_name("seg-1-0", 7, 7)).unwrap(), b"");
        // A part file of its own is read whole.
        assert_eq!(read(&*store, "part-3-1").unwrap(), b"whole\n");
        // A range past the file's end is an error, never a short part.
        let e = read(&*store, &range_name("seg-1-0", 7, 13)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        // Both files, and their names, made durable; a range is never deleted on its own.
        let names = [range_name("seg-1-0", 0, 4), "part-3-1".to_string()];
        store.sync_parts(&names).unwrap();
        store.sync_parts(&names[..1]).unwrap();
        store.delete(&names[0]).unwrap();
        assert!(dir.path().join("seg-1-0").exists());
        store.delete("part-3-1").unwrap();
        assert!(!dir.path().join("part-3-1").exists());
        store.delete("seg-1-0").unwrap();
        assert!(!dir.path().join("seg-1-0").exists());
    }

    #[test]
    fn staging_left_by_a_dead_node_is_removed_and_a_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        // A pid that ran and exited: its process is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_dir = tmp.path().join(format!("{STAGING_PREFIX}{dead}-000000001"));
        let live_dir = tmp
            .path()
            .join(format!("{STAGING_PREFIX}{}-000000002", std::process::id()));
        let other = tmp.path().join("herdsman-parts-not-a-pid");
        for d in [&dead_dir, &live_dir, &other] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("part-0-1"), "x").unwrap();
        }
        remove_dead_staging(tmp.path());
        assert!(!dead_dir.exists(), "a dead node's staging directory stays");
        assert!(
            live_dir.exists(),
            "a live node's staging directory was removed"
        );
        assert!(
            other.exists(),
            "a directory whose name has no pid was removed"
        );
    }
}

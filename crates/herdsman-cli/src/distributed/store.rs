//! Where a shared job's parts live: a directory every node reaches (`--parts DIR`, default
//! `<output>.parts`) or an object-storage prefix (`--parts s3://bucket/prefix/`, default
//! `<output>.parts/` when the output is `s3://…`), behind one small trait, [`PartStore`].
//!
//! A part is written locally, in the store's staging directory, to its end (renamed into
//! place by the part writer), and then [`PartStore::put`] makes it durable in the
//! store: [`PartStore::sync_parts`] before the commit for a directory (the staging directory
//! is the parts directory), an upload
//! for object storage (one PUT or a multipart upload, so the object appears whole or not at
//! all). The assembler reads parts back with [`PartStore::open`], streaming.
//!
//! This module must never make a part visible before it is complete, and never read or
//! delete anything outside its directory or prefix.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

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
    /// Opens the part `name` for a streaming read.
    fn open(&self, name: &str) -> std::io::Result<Box<dyn BufRead + Send>>;
    /// Deletes the part `name`; a part that is already gone is not an error.
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

/// Parts in a directory every node reaches: written in place, nothing to upload.
struct DirParts {
    dir: PathBuf,
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
        super::parts::sync_files(&self.dir, names)
    }
    fn open(&self, name: &str) -> std::io::Result<Box<dyn BufRead + Send>> {
        let f = std::fs::File::open(self.dir.join(name))?;
        Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
    }
    fn delete(&self, name: &str) -> std::io::Result<()> {
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

//! Object storage: inputs read from, and finished outputs published to, `s3://bucket/key`
//! (and `file:///path`) through the `object_store` crate (feature `object-store`).
//!
//! The rest of herdsman is synchronous; this module owns a small tokio runtime and blocks on
//! it. Reads stream an object in ranged GETs of [`PART`] bytes (with one more part fetched
//! ahead), each pinned to the object's ETag, so memory is bounded by two parts and an object
//! replaced while it is read is an error, never a mix of two versions. A resume starts with
//! a ranged GET at the stored offset. Publishing uploads a finished local file with one PUT
//! (small files) or a multipart upload: either way the object appears only when the upload
//! completes, so a half-written object is never visible at the key.
//!
//! Credentials and endpoint come from the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` or
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for S3-compatible servers, `AWS_ALLOW_HTTP=true`
//! for a plain-http endpoint). Without the feature the types exist, and every operation says
//! that this build lacks object storage.

use std::path::Path;

/// Bytes fetched by one ranged GET, and the part size of a multipart upload.
pub const PART: usize = 8 << 20;

/// One object chosen as an input, with what identified it when it was listed: a changed
/// object (new ETag, size or modification time) is a changed job.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectInput {
    /// The object's URL, `s3://bucket/key`.
    pub url: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, when the store gives one.
    pub etag: Option<String>,
    /// Its last modification time, RFC 3339.
    pub last_modified: String,
}

impl ObjectInput {
    /// The object's key (the URL's path, without the leading `/`), for its extension.
    pub fn key(&self) -> &str {
        url_key(&self.url)
    }
}

/// The key part of an object URL: what follows `scheme://bucket/`.
fn url_key(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split_once('/').map_or("", |(_, k)| k)
}

/// What kind of trouble an [`ObjectError`] is, so a front end can tell a typo (a missing
/// bucket or key) from an environment problem (credentials, network).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectErrorKind {
    /// The bucket or the object does not exist, or a pattern matched nothing.
    NotFound,
    /// The credentials were refused or are missing.
    Denied,
    /// The URL scheme is not supported by this build, or the URL is malformed.
    Unsupported,
    /// The object changed while it was read.
    Changed,
    /// Anything else: the network, the server.
    Other,
}

/// A failed object-storage operation: what was done, on which URL, what the store said and
/// what to do.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {url}: {message}; {hint}")]
pub struct ObjectError {
    /// The kind of failure.
    pub kind: ObjectErrorKind,
    /// What was being done (`read`, `list`, `upload to`, ...).
    pub action: &'static str,
    /// The URL involved.
    pub url: String,
    /// What the store said.
    pub message: String,
    /// What to do about it.
    pub hint: &'static str,
}

#[cfg(feature = "object-store")]
const HINT_NOT_FOUND: &str =
    "check the bucket and key (and AWS_ENDPOINT_URL for an S3-compatible server)";
#[cfg(feature = "object-store")]
const HINT_DENIED: &str = "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) and the bucket's permissions";
#[cfg(feature = "object-store")]
const HINT_UNSUPPORTED: &str =
    "give an s3://bucket/key or file:///path URL (gs:// and az:// are not in this build)";
#[cfg(feature = "object-store")]
const HINT_CHANGED: &str =
    "an input must not change while a job reads it; start the job over to read the new object";
#[cfg(feature = "object-store")]
const HINT_OTHER: &str = "check the network and AWS_ENDPOINT_URL, then run the same command again";

#[cfg(feature = "object-store")]
impl ObjectError {
    fn new(kind: ObjectErrorKind, action: &'static str, url: &str, message: String) -> Self {
        let hint = match kind {
            ObjectErrorKind::NotFound => HINT_NOT_FOUND,
            ObjectErrorKind::Denied => HINT_DENIED,
            ObjectErrorKind::Unsupported => HINT_UNSUPPORTED,
            ObjectErrorKind::Changed => HINT_CHANGED,
            ObjectErrorKind::Other => HINT_OTHER,
        };
        ObjectError {
            kind,
            action,
            url: url.to_string(),
            message,
            hint,
        }
    }
}

/// Whether `s` names an object-storage URL (`s3://`, `s3a://`, `gs://`, `az://`, `abfs://`,
/// `file://`) rather than a local path. Database URLs are not object URLs.
///
/// ```
/// assert!(herdsman_io::is_object_url("s3://bucket/data/part-1.jsonl"));
/// assert!(herdsman_io::is_object_url("file:///tmp/x.csv"));
/// assert!(!herdsman_io::is_object_url("data/x.csv"));
/// assert!(!herdsman_io::is_object_url("postgres://u@h/db"));
/// ```
pub fn is_object_url(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "file"
    )
}

/// The last segment of an object URL's key (`s3://b/dir/out.jsonl` → `out.jsonl`), or
/// `output` for a key that ends with `/`.
pub fn object_file_name(url: &str) -> &str {
    match url_key(url).rsplit('/').next() {
        Some(n) if !n.is_empty() => n,
        _ => "output",
    }
}

/// Lists the objects an input pattern names, in a stable order: one object (`s3://b/k`),
/// every object under a prefix that ends with `/` (`s3://b/data/`), or the objects whose key
/// matches a glob (`s3://b/data/*.jsonl`; `*` does not cross `/`). Sorted by key; a pattern
/// that names nothing is an [`ObjectErrorKind::NotFound`] error.
pub fn expand_object(pattern: &str) -> Result<Vec<ObjectInput>, ObjectError> {
    imp::expand(pattern)
}

/// Checks, before any work, that an output can be published at `url`: the bucket exists and
/// the credentials may list it.
pub fn check_object_output(url: &str) -> Result<(), ObjectError> {
    imp::check_output(url)
}

/// Publishes the finished local file `local` at `url`: one PUT for a file of at most
/// [`PART`] bytes, a multipart upload of [`PART`]-byte parts otherwise (aborted on failure).
/// The object becomes visible only when the upload completes; an existing object at the key
/// is replaced at that moment.
pub fn upload_file(local: &Path, url: &str) -> Result<(), ObjectError> {
    imp::upload(local, url)
}

/// Opens the object at `url` for reading its bytes as stored (no decompression), from the
/// start: ranged GETs of [`PART`] bytes pinned to the ETag it has now, so memory stays
/// bounded and an object replaced while it is read is an [`ObjectErrorKind::Changed`] error.
pub fn open_object(url: &str) -> Result<Box<dyn std::io::BufRead + Send>, ObjectError> {
    imp::open_raw(url)
}

/// Deletes the object at `url`; an object that is already gone is not an error.
pub fn delete_object(url: &str) -> Result<(), ObjectError> {
    imp::delete(url)
}

/// Opens an object's decompressed byte stream (by its key's extension) at `offset`
/// decompressed bytes: a ranged GET from the offset for plain objects, decompress and
/// discard for compressed ones.
pub(crate) fn open_object_stream(
    obj: &ObjectInput,
    offset: u64,
    buf: usize,
) -> std::io::Result<Box<dyn std::io::BufRead + Send>> {
    imp::open_stream(obj, offset, buf)
}

#[cfg(feature = "parquet")]
pub(crate) use imp::ChunkSource;

#[cfg(not(feature = "object-store"))]
mod imp {
    use super::*;

    fn unsupported(url: &str) -> ObjectError {
        ObjectError {
            kind: ObjectErrorKind::Unsupported,
            action: "use",
            url: url.to_string(),
            message: "this herdsman was built without object storage".into(),
            hint: "install a build with the `object-store` feature (the released one has it)",
        }
    }

    pub(super) fn expand(pattern: &str) -> Result<Vec<ObjectInput>, ObjectError> {
        Err(unsupported(pattern))
    }

    pub(super) fn check_output(url: &str) -> Result<(), ObjectError> {
        Err(unsupported(url))
    }

    pub(super) fn upload(_local: &Path, url: &str) -> Result<(), ObjectError> {
        Err(unsupported(url))
    }

    pub(super) fn open_raw(url: &str) -> Result<Box<dyn std::io::BufRead + Send>, ObjectError> {
        Err(unsupported(url))
    }

    pub(super) fn delete(url: &str) -> Result<(), ObjectError> {
        Err(unsupported(url))
    }

    pub(super) fn open_stream(
        obj: &ObjectInput,
        _offset: u64,
        _buf: usize,
    ) -> std::io::Result<Box<dyn std::io::BufRead + Send>> {
        Err(std::io::Error::other(unsupported(&obj.url)))
    }

    /// Never built: Parquet from object storage needs the feature.
    #[cfg(feature = "parquet")]
    pub(crate) enum ChunkSource {}

    #[cfg(feature = "parquet")]
    impl ChunkSource {
        pub(crate) fn open(obj: &ObjectInput) -> Result<ChunkSource, ObjectError> {
            Err(unsupported(&obj.url))
        }
    }
}

#[cfg(feature = "object-store")]
mod imp {
    use std::collections::HashMap;
    use std::io::{self, BufRead, Read};
    use std::sync::{Arc, Mutex, OnceLock};

    use bytes::Bytes;
    use futures::TryStreamExt;
    use object_store::path::Path as ObjPath;
    use object_store::{
        GetOptions, GetRange, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutPayload,
        WriteMultipart,
    };

    use super::*;
    use crate::format::Compression;

    /// The runtime every object-store call runs on: two worker threads, started on first use.
    fn rt() -> &'static tokio::runtime::Runtime {
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        RT.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("herdsman-object-store")
                .enable_all()
                .build()
                .expect("a tokio runtime starts")
        })
    }

    type Store = Arc<dyn ObjectStore>;

    /// A parsed URL: its store (shared by every URL of the same bucket) and its key.
    struct Target {
        store: Store,
        path: ObjPath,
        /// `scheme://bucket`, to build each listed object's URL.
        base: String,
    }

    fn classify(action: &'static str, url: &str, e: object_store::Error) -> ObjectError {
        use object_store::Error as E;
        let message = e.to_string();
        let kind = match &e {
            E::NotFound { .. } => ObjectErrorKind::NotFound,
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => ObjectErrorKind::Denied,
            E::Precondition { .. } => ObjectErrorKind::Changed,
            E::InvalidPath { .. } | E::NotSupported { .. } | E::UnknownConfigurationKey { .. } => {
                ObjectErrorKind::Unsupported
            }
            _ if message.contains("NoSuchBucket") => ObjectErrorKind::NotFound,
            _ if message.contains("InvalidAccessKeyId")
                || message.contains("SignatureDoesNotMatch")
                || message.contains("AccessDenied")
                || message.contains("403 Forbidden") =>
            {
                ObjectErrorKind::Denied
            }
            _ => ObjectErrorKind::Other,
        };
        let message = match kind {
            ObjectErrorKind::Changed => "the object changed while it was read (its ETag is not the one it had when the job listed it)".to_string(),
            _ => message,
        };
        ObjectError::new(kind, action, url, message)
    }

    fn target(url: &str) -> Result<Target, ObjectError> {
        static STORES: OnceLock<Mutex<HashMap<String, Store>>> = OnceLock::new();
        let bad = |m: String| ObjectError::new(ObjectErrorKind::Unsupported, "use", url, m);
        let parsed =
            url::Url::parse(url).map_err(|e| bad(format!("it is not a valid URL ({e})")))?;
        let (scheme, path) = ObjectStoreScheme::parse(&parsed)
            .map_err(|e| bad(format!("it is not an object-storage URL ({e})")))?;
        let base = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
        let mut stores = STORES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(store) = stores.get(&base) {
            return Ok(Target {
                store: store.clone(),
                path,
                base,
            });
        }
        let store: Store = match scheme {
            ObjectStoreScheme::AmazonS3 => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()
                    .map_err(|e| classify("use", url, e))?,
            ),
            ObjectStoreScheme::Local => Arc::new(object_store::local::LocalFileSystem::new()),
            _ => return Err(bad("this scheme is not supported by this build".into())),
        };
        stores.insert(base.clone(), store.clone());
        Ok(Target { store, path, base })
    }

    fn input_of(base: &str, meta: &object_store::ObjectMeta) -> ObjectInput {
        ObjectInput {
            url: format!("{base}/{}", meta.location),
            size: meta.size,
            etag: meta.e_tag.clone(),
            last_modified: meta.last_modified.to_rfc3339(),
        }
    }

    pub(super) fn expand(pattern: &str) -> Result<Vec<ObjectInput>, ObjectError> {
        let key = url_key(pattern);
        let glob_at = key.find(['*', '?', '[']);
        if glob_at.is_none() && !key.ends_with('/') && !key.is_empty() {
            let t = target(pattern)?;
            let meta = rt()
                .block_on(t.store.head(&t.path))
                .map_err(|e| classify("read", pattern, e))?;
            return Ok(vec![input_of(&t.base, &meta)]);
        }
        // The prefix to list: everything before the glob's segment (or the whole key).
        let literal = &key[..glob_at.unwrap_or(key.len())];
        let prefix = match literal.rfind('/') {
            Some(i) => &literal[..i],
            None => "",
        };
        let base_url = &pattern[..pattern.len() - key.len()];
        let t = target(&format!("{base_url}{prefix}"))?;
        let matcher = match glob_at {
            Some(_) => Some(glob::Pattern::new(key).map_err(|e| {
                ObjectError::new(
                    ObjectErrorKind::Unsupported,
                    "list",
                    pattern,
                    format!("the key is not a valid glob ({})", e.msg),
                )
            })?),
            None => None,
        };
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let listed: Vec<object_store::ObjectMeta> = rt()
            .block_on(
                t.store
                    .list((!prefix.is_empty()).then_some(&t.path))
                    .try_collect(),
            )
            .map_err(|e| classify("list", pattern, e))?;
        let mut found: Vec<ObjectInput> = listed
            .iter()
            .filter(|m| {
                let k = m.location.as_ref();
                match &matcher {
                    Some(p) => p.matches_with(k, opts),
                    None => k.starts_with(key),
                }
            })
            .map(|m| input_of(&t.base, m))
            .collect();
        if found.is_empty() {
            return Err(ObjectError::new(
                ObjectErrorKind::NotFound,
                "list",
                pattern,
                "no object matches".into(),
            ));
        }
        found.sort_by(|a, b| a.url.cmp(&b.url));
        Ok(found)
    }

    pub(super) fn check_output(url: &str) -> Result<(), ObjectError> {
        let t = target(url)?;
        let parent = {
            let key = url_key(url);
            let dir = key.rfind('/').map_or("", |i| &key[..i]);
            ObjPath::from(dir)
        };
        let prefix = (!parent.as_ref().is_empty()).then_some(&parent);
        rt().block_on(t.store.list_with_delimiter(prefix))
            .map(drop)
            .map_err(|e| classify("write to", url, e))
    }

    pub(super) fn upload(local: &Path, url: &str) -> Result<(), ObjectError> {
        upload_in_parts(local, url, PART)
    }

    /// [`upload`] with parts of `part` bytes (tests use small ones).
    pub(super) fn upload_in_parts(local: &Path, url: &str, part: usize) -> Result<(), ObjectError> {
        let t = target(url)?;
        let io_err = |e: io::Error| {
            ObjectError::new(
                ObjectErrorKind::Other,
                "upload to",
                url,
                format!("reading {} failed ({e})", local.display()),
            )
        };
        let mut file = std::fs::File::open(local).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        if size <= part as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).map_err(io_err)?;
            rt().block_on(t.store.put(&t.path, PutPayload::from(data)))
                .map_err(|e| classify("upload to", url, e))?;
            return Ok(());
        }
        let upload = rt()
            .block_on(t.store.put_multipart(&t.path))
            .map_err(|e| classify("upload to", url, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, part);
        let mut buf = vec![0u8; part];
        let result = (|| -> Result<(), ObjectError> {
            loop {
                let n = read_full(&mut file, &mut buf).map_err(io_err)?;
                if n == 0 {
                    return Ok(());
                }
                // At most two parts in flight: memory stays bounded by a few parts.
                rt().block_on(w.wait_for_capacity(2))
                    .map_err(|e| classify("upload to", url, e))?;
                let _enter = rt().enter();
                w.write(&buf[..n]);
            }
        })();
        match result {
            Ok(()) => rt()
                .block_on(w.finish())
                .map(drop)
                .map_err(|e| classify("upload to", url, e)),
            Err(e) => {
                let _ = rt().block_on(w.abort());
                Err(e)
            }
        }
    }

    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// A handle on one listed object, pinned to its ETag.
    #[derive(Clone)]
    struct Handle {
        store: Store,
        path: ObjPath,
        url: String,
        etag: Option<String>,
        size: u64,
    }

    impl Handle {
        fn of(obj: &ObjectInput) -> Result<Handle, ObjectError> {
            let t = target(&obj.url)?;
            Ok(Handle {
                store: t.store,
                path: t.path,
                url: obj.url.clone(),
                etag: obj.etag.clone(),
                size: obj.size,
            })
        }

        /// The bytes `range` of the object, as it was listed.
        async fn fetch(self, range: std::ops::Range<u64>) -> Result<Bytes, ObjectError> {
            let want = range.end - range.start;
            let opts = GetOptions {
                if_match: self.etag.clone(),
                range: Some(GetRange::Bounded(range.clone())),
                ..Default::default()
            };
            let got = self
                .store
                .get_opts(&self.path, opts)
                .await
                .map_err(|e| classify("read", &self.url, e))?
                .bytes()
                .await
                .map_err(|e| classify("read", &self.url, e))?;
            if got.len() as u64 != want {
                return Err(ObjectError::new(
                    ObjectErrorKind::Changed,
                    "read",
                    &self.url,
                    format!(
                        "bytes {}..{} came back as {} bytes: the object is shorter than when it was listed",
                        range.start,
                        range.end,
                        got.len()
                    ),
                ));
            }
            Ok(got)
        }
    }

    fn to_io(e: ObjectError) -> io::Error {
        let kind = match e.kind {
            ObjectErrorKind::NotFound => io::ErrorKind::NotFound,
            ObjectErrorKind::Denied => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }

    /// A sequential reader of an object from an offset: ranged GETs of [`PART`] bytes, the
    /// next one fetched while the current one is consumed.
    struct ObjectStream {
        handle: Handle,
        part: u64,
        /// Offset of the first byte not yet requested.
        next: u64,
        cur: Bytes,
        ahead: Option<tokio::task::JoinHandle<Result<Bytes, ObjectError>>>,
    }

    impl ObjectStream {
        fn new(handle: Handle, offset: u64, part: usize) -> ObjectStream {
            let mut s = ObjectStream {
                handle,
                part: part as u64,
                next: offset,
                cur: Bytes::new(),
                ahead: None,
            };
            s.request();
            s
        }

        /// Starts fetching the next part, if any is left.
        fn request(&mut self) {
            if self.next >= self.handle.size {
                self.ahead = None;
                return;
            }
            let end = (self.next + self.part).min(self.handle.size);
            let fut = self.handle.clone().fetch(self.next..end);
            self.ahead = Some(rt().spawn(fut));
            self.next = end;
        }
    }

    impl Read for ObjectStream {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for ObjectStream {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            if self.cur.is_empty() {
                if let Some(task) = self.ahead.take() {
                    let got = rt()
                        .block_on(task)
                        .map_err(|e| io::Error::other(format!("a read task failed ({e})")))?
                        .map_err(to_io)?;
                    self.cur = got;
                    self.request();
                }
            }
            Ok(&self.cur)
        }

        fn consume(&mut self, n: usize) {
            let _ = self.cur.split_to(n.min(self.cur.len()));
        }
    }

    impl Drop for ObjectStream {
        fn drop(&mut self) {
            if let Some(t) = self.ahead.take() {
                t.abort();
            }
        }
    }

    pub(super) fn open_raw(url: &str) -> Result<Box<dyn BufRead + Send>, ObjectError> {
        let t = target(url)?;
        let meta = rt()
            .block_on(t.store.head(&t.path))
            .map_err(|e| classify("read", url, e))?;
        let handle = Handle {
            store: t.store,
            path: t.path,
            url: url.to_string(),
            etag: meta.e_tag,
            size: meta.size,
        };
        Ok(Box::new(ObjectStream::new(handle, 0, PART)))
    }

    pub(super) fn delete(url: &str) -> Result<(), ObjectError> {
        let t = target(url)?;
        match rt().block_on(t.store.delete(&t.path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify("delete", url, e)),
        }
    }

    pub(super) fn open_stream(
        obj: &ObjectInput,
        offset: u64,
        buf: usize,
    ) -> io::Result<Box<dyn BufRead + Send>> {
        open_stream_in_parts(obj, offset, buf, PART)
    }

    /// [`open_stream`] with ranged GETs of `part` bytes (tests use small ones).
    pub(super) fn open_stream_in_parts(
        obj: &ObjectInput,
        offset: u64,
        buf: usize,
        part: usize,
    ) -> io::Result<Box<dyn BufRead + Send>> {
        let handle = Handle::of(obj).map_err(to_io)?;
        let compression = Compression::from_path(Path::new(obj.key()));
        if compression == Compression::None {
            if offset > obj.size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the object has only {} bytes", obj.size),
                ));
            }
            return Ok(Box::new(ObjectStream::new(handle, offset, part)));
        }
        let raw = ObjectStream::new(handle, 0, part);
        let buf = buf.max(4);
        let mut rdr: Box<dyn BufRead + Send> = match compression {
            Compression::Gzip => Box::new(io::BufReader::with_capacity(
                buf,
                flate2::read::MultiGzDecoder::new(raw),
            )),
            Compression::Zstd => Box::new(io::BufReader::with_capacity(
                buf,
                zstd::stream::read::Decoder::with_buffer(raw)?,
            )),
            Compression::None => unreachable!("handled above"),
        };
        if offset > 0 {
            let skipped = io::copy(&mut Read::take(&mut rdr, offset), &mut io::sink())?;
            if skipped < offset {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the data has only {skipped} bytes"),
                ));
            }
        }
        Ok(rdr)
    }

    /// Random access to an object for the Parquet reader: its footer and the column chunks
    /// of the row groups it reads, each by a ranged GET pinned to the object's ETag.
    #[cfg(feature = "parquet")]
    #[derive(Clone)]
    pub(crate) struct ChunkSource {
        handle: Handle,
    }

    #[cfg(feature = "parquet")]
    impl ChunkSource {
        pub(crate) fn open(obj: &ObjectInput) -> Result<ChunkSource, ObjectError> {
            Ok(ChunkSource {
                handle: Handle::of(obj)?,
            })
        }

        fn get(&self, start: u64, len: u64) -> parquet::errors::Result<Bytes> {
            let end = (start + len).min(self.handle.size);
            if start >= end {
                return Ok(Bytes::new());
            }
            rt().block_on(self.handle.clone().fetch(start..end))
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
    }

    #[cfg(feature = "parquet")]
    impl parquet::file::reader::Length for ChunkSource {
        fn len(&self) -> u64 {
            self.handle.size
        }
    }

    #[cfg(feature = "parquet")]
    impl parquet::file::reader::ChunkReader for ChunkSource {
        type T = ObjectStreamRead;

        fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
            Ok(ObjectStreamRead(ObjectStream::new(
                self.handle.clone(),
                start,
                PART,
            )))
        }

        fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
            self.get(start, length as u64)
        }
    }

    /// A sequential read of an object from an offset (what Parquet's `get_read` returns).
    #[cfg(feature = "parquet")]
    pub(crate) struct ObjectStreamRead(ObjectStream);

    #[cfg(feature = "parquet")]
    impl Read for ObjectStreamRead {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.0.read(out)
        }
    }
}

#[cfg(all(test, feature = "object-store"))]
mod tests {
    use std::io::Read;

    use super::*;

    fn url(p: &Path) -> String {
        format!("file://{}", p.display())
    }

    #[test]
    fn globs_and_prefixes_list_in_key_order_and_reads_resume_by_range_across_parts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for (n, body) in [
            ("b.jsonl", "3\n4\n"),
            ("a.jsonl", "1\n2\n"),
            ("c.txt", "x\n"),
        ] {
            std::fs::write(d.join(n), body).unwrap();
        }
        std::fs::write(d.join("sub/d.jsonl"), "5\n").unwrap();
        let names = |v: Vec<ObjectInput>| -> Vec<String> {
            v.iter()
                .map(|o| object_file_name(&o.url).to_string())
                .collect()
        };
        let got = expand_object(&format!("{}/*.jsonl", url(d))).unwrap();
        assert_eq!(names(got.clone()), ["a.jsonl", "b.jsonl"]);
        assert_eq!(got[0].size, 4);
        let all = expand_object(&format!("{}/", url(d))).unwrap();
        assert_eq!(names(all), ["a.jsonl", "b.jsonl", "c.txt", "d.jsonl"]);
        let err = expand_object(&format!("{}/*.csv", url(d))).unwrap_err();
        assert_eq!(err.kind, ObjectErrorKind::NotFound, "{err}");
        let err = expand_object(&format!("{}/nope.csv", url(d))).unwrap_err();
        assert_eq!(err.kind, ObjectErrorKind::NotFound, "{err}");
        assert!(
            err.to_string().contains("check the bucket and key"),
            "{err}"
        );

        // A 1000-byte object read in ranges of 7 bytes, from the start and from an offset.
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(d.join("big.bin"), &body).unwrap();
        let obj = expand_object(&url(&d.join("big.bin"))).unwrap().remove(0);
        for offset in [0u64, 1, 7, 500, 999, 1000] {
            let mut r = imp::open_stream_in_parts(&obj, offset, 16, 7).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, body[offset as usize..], "offset {offset}");
        }
        assert!(imp::open_stream_in_parts(&obj, 1001, 16, 7).is_err());
    }

    #[test]
    fn uploads_in_one_put_or_in_parts_hold_the_file_and_a_gzip_object_reads_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let body: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        std::fs::write(d.join("local.bin"), &body).unwrap();
        for (part, name) in [(1 << 20, "one.bin"), (5 << 10, "parts.bin")] {
            imp::upload_in_parts(&d.join("local.bin"), &url(&d.join(name)), part).unwrap();
            assert_eq!(std::fs::read(d.join(name)).unwrap(), body, "{name}");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"one\ntwo\nthree\n").unwrap();
        std::fs::write(d.join("t.txt.gz"), gz.finish().unwrap()).unwrap();
        let obj = expand_object(&url(&d.join("t.txt.gz"))).unwrap().remove(0);
        let mut r = imp::open_stream_in_parts(&obj, 4, 16, 3).unwrap();
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "two\nthree\n");
        let err = upload_file(&d.join("missing"), &url(&d.join("x"))).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}

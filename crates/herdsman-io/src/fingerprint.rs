//! Input fingerprints: a cheap identity of a file's content, used to refuse a resume when an
//! input changed since the checkpoint.
//!
//! A fingerprint must be stable across runs and platforms (so no std hasher, whose output is
//! not guaranteed) and must never read more than 2 MiB of a file.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::str::FromStr;
use std::time::UNIX_EPOCH;

/// How much of each end of the file is hashed.
const EDGE: u64 = 1 << 20;

/// Size, modification time and a hash of the first and last MiB of a file.
///
/// Displays (and serializes) as `size:mtime_ns:hash` with the hash in hex, and parses back
/// from that text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// File size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (0 when unavailable).
    pub mtime_ns: u128,
    /// XXH3-128 of the first MiB followed by the last MiB (the whole file when smaller).
    pub hash: u128,
}

/// Computes the fingerprint of a file.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("a.csv");
/// std::fs::write(&p, "x\n1\n").unwrap();
/// let f = herdsman_io::fingerprint(&p).unwrap();
/// assert_eq!(f.size, 4);
/// assert_eq!(f.to_string().parse::<herdsman_io::Fingerprint>().unwrap(), f);
/// ```
pub fn fingerprint(path: &Path) -> io::Result<Fingerprint> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    let size = meta.len();
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut feed = |file: &mut File, mut n: u64| -> io::Result<()> {
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = file.read(&mut buf[..want])?;
            if got == 0 {
                break;
            }
            hasher.update(&buf[..got]);
            n -= got as u64;
        }
        Ok(())
    };
    if size <= 2 * EDGE {
        feed(&mut file, size)?;
    } else {
        feed(&mut file, EDGE)?;
        file.seek(SeekFrom::Start(size - EDGE))?;
        feed(&mut file, EDGE)?;
    }
    Ok(Fingerprint {
        size,
        mtime_ns,
        hash: hasher.digest128(),
    })
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{:032x}", self.size, self.mtime_ns, self.hash)
    }
}

/// The text is not `size:mtime_ns:hash`.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a fingerprint (expected size:mtime_ns:hex-hash); the checkpoint may be damaged"
)]
pub struct FingerprintParseError(String);

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FingerprintParseError(s.to_string());
        let mut parts = s.split(':');
        let (Some(a), Some(b), Some(c), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Fingerprint {
            size: a.parse().map_err(|_| bad())?,
            mtime_ns: b.parse().map_err(|_| bad())?,
            hash: u128::from_str_radix(c, 16).map_err(|_| bad())?,
        })
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_with_content_and_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let mut data = vec![7u8; 3 << 20];
        std::fs::write(&p, &data).unwrap();
        let a = fingerprint(&p).unwrap();
        // A change in the last MiB is seen.
        *data.last_mut().unwrap() = 8;
        std::fs::write(&p, &data).unwrap();
        let b = fingerprint(&p).unwrap();
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.size, b.size);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), b);
        assert!("1:2".parse::<Fingerprint>().is_err());
        assert!(fingerprint(&dir.path().join("none")).is_err());
    }
}

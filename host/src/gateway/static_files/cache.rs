//! Small static files kept in memory as complete answers, so that serving one again
//! costs a `statx` instead of an open, a stat, a read, a close and ServeDir's header work.
//!
//! An entry is the answer ServeDir and the compressor gave for one file of the root and
//! one negotiated encoding (identity, gzip or br), with the identity of the file it was
//! read from: device, inode, size, modification and change times. The key is what the
//! answer depends on, not how the request spelled it: every path that names the file and
//! every `Accept-Encoding` value that negotiates the encoding share the one entry, so
//! clients cannot fill the cache with keys, and each key is weighed with its entry. Each hit compares that identity with a
//! fresh `statx` of the file, so a file changed in place, replaced or removed is read
//! from disk again at once. The `statx` follows the path as it is now, even through a
//! symlink that leads out of the root; it can only confirm the file that the confined
//! open read, never reach another. Two more rules keep entries exact:
//! - a file changed less than [`RACY_WINDOW`] ago is not cached: file-system timestamps
//!   are coarse, and a second write within the same tick could leave them unchanged;
//! - an entry is refilled after [`MAX_AGE`], so a precompressed sibling added next to a
//!   cached file is picked up.

use bytes::Bytes;
use http::HeaderMap;
use quick_cache::Equivalent;
use rustix::fs::{AtFlags, StatxFlags, statx};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Files larger than this are always streamed from disk.
pub const MAX_FILE_LEN: u64 = 64 * 1024;
/// Bytes of answers kept, over all entries of one root.
const CAPACITY_BYTES: u64 = 32 << 20;
/// What an entry costs beyond the bytes of its body, headers, key and source path
/// (allocations, bookkeeping).
const ENTRY_OVERHEAD: u64 = 512;
const RACY_WINDOW: Duration = Duration::from_secs(1);
const MAX_AGE: Duration = Duration::from_secs(5);

pub struct FileCache {
    entries: quick_cache::sync::Cache<Key, Arc<Entry>, ByLength>,
}

#[derive(Hash, PartialEq, Eq)]
struct Key {
    file: Box<str>,
    encoding: Encoding,
}

/// A [`Key`] made of borrowed parts, for lookups that allocate nothing. Hashes as `Key`.
#[derive(Hash)]
pub struct KeyRef<'a> {
    /// The file's path relative to the root, as ServeDir resolves it.
    pub file: &'a str,
    pub encoding: Encoding,
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.file == *key.file && self.encoding == key.encoding
    }
}

/// The content coding of an answer.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Br,
}

impl Encoding {
    /// The Accept-Encoding value that asks for exactly this coding.
    pub fn accept_value(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Br => Some("br"),
        }
    }

    /// The coding a Content-Encoding header names; `None` for one wharf does not make.
    pub fn of_content(value: Option<&http::HeaderValue>) -> Option<Self> {
        match value.map(|v| v.as_bytes()) {
            None => Some(Encoding::Identity),
            Some(b"gzip") => Some(Encoding::Gzip),
            Some(b"br") => Some(Encoding::Br),
            Some(_) => None,
        }
    }
}

/// A cached answer: status 200, these headers, this body.
pub struct Entry {
    /// The file read, relative to the root.
    source: PathBuf,
    identity: Identity,
    filled: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What tells one version of a file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Identity {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            len: metadata.len(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// The file at `path` under `root` as it is now, if there is one.
    fn now(root: &OwnedFd, path: &std::path::Path) -> Option<Self> {
        let st = statx(root, path, AtFlags::empty(), StatxFlags::BASIC_STATS).ok()?;
        Some(Self {
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            len: st.stx_size,
            modified: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec.into()),
            changed: (st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec.into()),
        })
    }

    /// Changed so recently that a further change could keep the same timestamps.
    pub fn is_racy(&self) -> bool {
        let Ok(now) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) else {
            return true;
        };
        let settled = now.saturating_sub(RACY_WINDOW).as_secs() as i64;
        self.modified.0 >= settled || self.changed.0 >= settled
    }
}

#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<Key, Arc<Entry>> for ByLength {
    fn weight(&self, key: &Key, entry: &Arc<Entry>) -> u64 {
        let headers: usize = entry
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        let bytes = entry.body.len() + headers + key.file.len() + entry.source.as_os_str().len();
        bytes as u64 + ENTRY_OVERHEAD
    }
}

impl FileCache {
    pub fn new() -> Self {
        let estimated_items = (CAPACITY_BYTES / (4096 + ENTRY_OVERHEAD)) as usize;
        Self {
            entries: quick_cache::sync::Cache::with_weighter(
                estimated_items,
                CAPACITY_BYTES,
                ByLength,
            ),
        }
    }

    /// The entry for `key`, if it still matches its file under `root`.
    pub fn get(&self, key: &KeyRef<'_>, root: &OwnedFd) -> Option<Arc<Entry>> {
        let entry = self.entries.get(key)?;
        let current = entry.filled.elapsed() < MAX_AGE
            && Identity::now(root, &entry.source) == Some(entry.identity);
        if !current {
            self.entries.remove(key);
            return None;
        }
        Some(entry)
    }

    /// Keeps an answer read from `source` (relative to the root) whose file had
    /// `identity` when it was opened, unless the file is too new to trust its timestamps.
    /// Gives the entry back either way, for answering the request that filled it.
    pub fn insert(
        &self,
        key: &KeyRef<'_>,
        source: PathBuf,
        identity: Identity,
        headers: HeaderMap,
        body: Bytes,
    ) -> Arc<Entry> {
        let entry = Arc::new(Entry {
            source,
            identity,
            filled: Instant::now(),
            headers,
            body,
        });
        if !identity.is_racy() {
            let key = Key {
                file: key.file.into(),
                encoding: key.encoding,
            };
            self.entries.insert(key, entry.clone());
        }
        entry
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_weighs_its_key_as_well_as_its_body() {
        let entry = Arc::new(Entry {
            source: PathBuf::from("a.txt"),
            identity: Identity {
                dev: 0,
                ino: 0,
                len: 3,
                modified: (0, 0),
                changed: (0, 0),
            },
            filled: Instant::now(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"one"),
        });
        let key = |len: usize| Key {
            file: "a".repeat(len).into(),
            encoding: Encoding::Identity,
        };
        let weight = |len| quick_cache::Weighter::weight(&ByLength, &key(len), &entry);
        assert!(weight(60_000) >= weight(1) + 59_999);
    }

    #[test]
    fn statx_identity_matches_the_open_files_metadata() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        let root: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let opened = std::fs::File::open(dir.path().join("a.txt")).unwrap();
        let identity = Identity::of(&opened.metadata().unwrap());
        assert_eq!(Identity::now(&root, "a.txt".as_ref()), Some(identity));

        std::fs::write(dir.path().join("a.txt"), "two!").unwrap();
        assert_ne!(Identity::now(&root, "a.txt".as_ref()), Some(identity));
        assert_eq!(Identity::now(&root, "gone.txt".as_ref()), None);
        assert!(identity.is_racy(), "a file written just now is racy");
    }
}

//! On-disk cache of compiled components, keyed by the component's content hash and
//! the engine's compatibility hash, so a restart with unchanged apps compiles nothing.
//!
//! A cached artifact is native code that wharf maps and runs, so the cache trusts only
//! what no other user can have written: a directory, and files in it, owned by wharf's
//! own user and writable by nobody else. A directory that fails the check is not used
//! at all (apps are compiled on every start, with a warning naming it); a file that
//! fails it is compiled afresh and replaced by one of wharf's own.
//!
//! Several wharf processes may share one cache directory, so an artifact no app of this
//! process uses may still be another's: it is removed only once nobody has loaded it
//! for [`KEEP_UNUSED`] (loading it marks it used).

use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fs::Metadata;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How long an artifact nobody loads is kept: long enough that a rollback or a wharf
/// restarted next week still finds its apps compiled.
const KEEP_UNUSED: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_tag: String,
}

/// Whether a load hit the cache; shown in the startup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cached,
    Compiled,
}

impl CompileCache {
    /// `dir = None` disables the cache. A directory that cannot be created, or that
    /// another user could write into, disables it too, with a warning.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_tag = format!("{:016x}", hasher.finish());
        let dir = dir.filter(|dir| match prepare_dir(dir) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(dir = %dir.display(), "compile cache disabled, apps are compiled on every start: {why}");
                false
            }
        });
        Self { dir, engine_tag }
    }

    /// The artifact a previous run stored for `bytes` (whose [`Digest`] is `digest`), if
    /// there is one this engine can load.
    pub fn cached(&self, engine: &Engine, digest: &Digest) -> Option<(Component, PathBuf)> {
        let path = self.path_for(digest)?;
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => match untrusted_file(&meta) {
                Some(why) => {
                    tracing::warn!(file = %path.display(), "ignoring cached artifact: {why}")
                }
                // SAFETY: the file was written by `Component::serialize` of an engine with
                // the same compatibility hash (it is in the file name) into wharf's own
                // cache directory, and it is owned by wharf's user and writable by no
                // other; wasmtime re-checks the header and rejects a mismatch.
                None => match unsafe { Component::deserialize_file(engine, &path) } {
                    Ok(component) => {
                        mark_used(&path);
                        return Some((component, path));
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), "ignoring cached artifact: {e}")
                    }
                },
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %path.display(), "ignoring cached artifact: {e}"),
        }
        None
    }

    /// Compiles `bytes`, or loads the artifact a previous run stored for the same bytes.
    /// Also returns the artifact's path (with a cache), which the app keeps; a new
    /// artifact is written there before this returns or after, as `write` says.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &Digest,
        write: Store,
    ) -> anyhow::Result<(Component, Origin, Option<PathBuf>)> {
        if let Some((component, path)) = self.cached(engine, digest) {
            return Ok((component, Origin::Cached, Some(path)));
        }
        let component = Component::new(engine, bytes)?;
        let Some(path) = self.path_for(digest) else {
            return Ok((component, Origin::Compiled, None));
        };
        match write {
            Store::Now => store(&component, &path),
            // Serializing copies the code, and a large component's is tens of MB.
            Store::Behind => {
                let (component, path) = (component.clone(), path.clone());
                let spawned = std::thread::Builder::new()
                    .name("wharf-cache-write".into())
                    .spawn(move || store(&component, &path));
                if let Err(e) = spawned {
                    tracing::warn!("could not write compile cache: {e}");
                }
            }
        }
        Ok((component, Origin::Compiled, Some(path)))
    }

    /// Removes the files of the cache directory that are not in `in_use` and that
    /// nobody has loaded for [`KEEP_UNUSED`]: artifacts of apps that are gone, of older
    /// engines, and temporaries of writers that died. Returns how many went.
    pub fn remove_unused(&self, in_use: &HashSet<PathBuf>) -> usize {
        let Some(dir) = &self.dir else { return 0 };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_cache_file);
            let unused_since = entry.metadata().and_then(|m| m.modified());
            let stale = unused_since
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > KEEP_UNUSED));
            if ours && stale && !in_use.contains(&path) && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, "compile cache: removed artifacts no app has loaded for {} days", KEEP_UNUSED.as_secs() / 86400);
        }
        removed
    }

    fn path_for(&self, digest: &Digest) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{}-{}.cwasm", digest.0, self.engine_tag)))
    }
}

/// When [`CompileCache::load`] stores a new artifact.
#[derive(Debug, Clone, Copy)]
pub enum Store {
    /// Before it returns: the artifact is on disk once the app is.
    Now,
    /// On a thread of its own, so the app serves before the artifact is on disk.
    Behind,
}

fn store(component: &Component, path: &Path) {
    let stored = component
        .serialize()
        .map_err(anyhow::Error::from)
        .and_then(|bytes| Ok(store_atomically(path, &bytes)?));
    if let Err(e) = stored {
        tracing::warn!(file = %path.display(), "could not write compile cache: {e:#}");
    }
}

/// The SHA-256 of a component's bytes in hex: its name in the cache, worked out once
/// when the app's files are read, for every tier that looks it up.
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Names the cache writes: `DIGEST-ENGINE.cwasm` and its temporaries `DIGEST-ENGINE.tmpPID`.
/// Anything else someone put into the directory is left alone.
fn is_cache_file(name: &str) -> bool {
    let Some((digest, rest)) = name.split_once('-') else {
        return false;
    };
    digest.len() == 64
        && digest.bytes().all(|b| b.is_ascii_hexdigit())
        && (rest.ends_with(".cwasm") || rest.contains(".tmp"))
}

/// Creates `dir` if missing (private to this user) and checks that no other user can
/// write into it.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| e.to_string())?;
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    match untrusted(&meta) {
        Some(why) => Err(format!(
            "the directory is {why}, and native code is loaded from it"
        )),
        None => Ok(()),
    }
}

/// Why a file or directory may hold what another user wrote, if it may.
fn untrusted(meta: &Metadata) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Some(format!("owned by uid {}, not wharf's uid {me}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "writable by other users (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

fn untrusted_file(meta: &Metadata) -> Option<String> {
    if !meta.is_file() {
        return Some("not a regular file".into());
    }
    untrusted(meta)
}

/// Records that the artifact was loaded just now, which keeps it from removal.
fn mark_used(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(file = %path.display(), "could not mark cached artifact used: {e}");
    }
}

/// Writes to a temporary file readable by this user only and renames it, so a
/// concurrent reader (another wharf sharing the cache) never sees a partial artifact.
fn store_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(data)?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_cache_writes_are_cache_files() {
        let digest = "0123456789abcdef".repeat(4);
        assert!(is_cache_file(&format!("{digest}-00ff.cwasm")));
        assert!(is_cache_file(&format!("{digest}-00ff.tmp4242")));
        assert!(!is_cache_file("notes.txt"));
        assert!(!is_cache_file(&format!("{}-00ff.cwasm", &digest[1..])));
        assert!(!is_cache_file(&format!("{digest}-00ff.wasm")));
    }
}

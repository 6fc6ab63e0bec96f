//! On-disk cache of compiled components, keyed by the component's content hash and
//! the engine's compatibility hash, so a restart with unchanged apps compiles nothing.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

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
    /// `dir = None` disables the cache.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_tag = format!("{:016x}", hasher.finish());
        if let Some(dir) = &dir
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), "compile cache disabled: {e}");
            return Self {
                dir: None,
                engine_tag,
            };
        }
        Self { dir, engine_tag }
    }

    /// Compiles `bytes`, or loads the artifact a previous run stored for the same bytes.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> anyhow::Result<(Component, Origin)> {
        let Some(path) = self.path_for(bytes) else {
            return Ok((Component::new(engine, bytes)?, Origin::Compiled));
        };
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an engine with the
            // same compatibility hash (it is in the file name) into wharf's own cache
            // directory; wasmtime re-checks the header and rejects a mismatch.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, Origin::Cached)),
                Err(e) => tracing::warn!(file = %path.display(), "ignoring cached artifact: {e}"),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store_atomically(&path, &component.serialize()?) {
            tracing::warn!(file = %path.display(), "could not write compile cache: {e}");
        }
        Ok((component, Origin::Compiled))
    }

    fn path_for(&self, bytes: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let digest = hex::encode(Sha256::digest(bytes));
        Some(dir.join(format!("{digest}-{}.cwasm", self.engine_tag)))
    }
}

/// Writes to a temporary file and renames it, so a concurrent reader (another wharf
/// sharing the cache) never sees a partial artifact.
fn store_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

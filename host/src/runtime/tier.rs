//! Tiered compilation. Cranelift's code is fast but takes seconds to make for a large
//! component; wasmtime's baseline compiler, Winch, makes slower code several times
//! faster. So a new or changed app is compiled by Winch and serves at once, and the
//! optimiser thread compiles it again with Cranelift, at a lower priority than
//! serving, and swaps the optimised version in like a reload ([`super::Runtime`]).
//!
//! The compiler is an engine setting, so each tier has an engine of its own, with its
//! own instance pool, linker and compile cache entries, and the same sandbox.

use super::cache::{CompileCache, Digest, Origin, Store};
use super::engine;
use super::platform;
use super::state::HostState;
use crate::config::Tiering;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};

/// Which compiler made the code an app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierKind {
    /// Winch: compiled in a fraction of the time, runs slower.
    Baseline,
    /// Cranelift.
    Optimised,
}

impl TierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TierKind::Baseline => "baseline",
            TierKind::Optimised => "optimised",
        }
    }
}

/// One compiler with the engine it compiles for.
pub(super) struct Tier {
    kind: TierKind,
    engine: Engine,
    linker: Linker<HostState>,
    cache: CompileCache,
}

/// A component compiled by one tier, ready to link.
pub(super) struct Compiled<'a> {
    tier: &'a Tier,
    component: Component,
    pub origin: Origin,
    /// Its file in the compile cache, if it went there.
    pub artifact: Option<PathBuf>,
}

impl Compiled<'_> {
    pub fn tier(&self) -> TierKind {
        self.tier.kind
    }

    /// Links the component's imports with the tier's host functions.
    pub fn link(&self) -> anyhow::Result<InstancePre<HostState>> {
        Ok(self.tier.linker.instantiate_pre(&self.component)?)
    }
}

impl Tier {
    fn new(kind: TierKind, max_instances: u32, cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let engine = engine::build(kind, max_instances)?;
        let mut linker = Linker::new(&engine);
        // All of WASI 0.2 is linked, not just the proxy world, because real toolchains
        // import wasi:cli, wasi:filesystem and wasi:sockets; the WasiCtx grants none of them.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        platform::add_to_linker(&mut linker)?;
        let cache = CompileCache::new(&engine, cache_dir);
        Ok(Self {
            kind,
            engine,
            linker,
            cache,
        })
    }

    /// The artifact the cache holds for `digest`, without compiling.
    fn cached(&self, digest: &Digest) -> Option<Compiled<'_>> {
        let (component, path) = self.cache.cached(&self.engine, digest)?;
        Some(Compiled {
            tier: self,
            component,
            origin: Origin::Cached,
            artifact: Some(path),
        })
    }

    fn compile(&self, wasm: &[u8], digest: &Digest) -> anyhow::Result<Compiled<'_>> {
        // The baseline is there to serve soon: its artifact is written after. The
        // optimised build's is written before it serves, so a restart finds it.
        let write = match self.kind {
            TierKind::Baseline => Store::Behind,
            TierKind::Optimised => Store::Now,
        };
        let (component, origin, artifact) = self.cache.load(&self.engine, wasm, digest, write)?;
        Ok(Compiled {
            tier: self,
            component,
            origin,
            artifact,
        })
    }
}

/// The tiers `[apps] tiered` asks for.
pub(super) struct Tiers {
    /// What a new or changed app is compiled with.
    first: Tier,
    /// The optimised tier apps move on to, when `first` is the baseline.
    then: Option<Tier>,
}

impl Tiers {
    /// Builds the engines, each with a pool of `max_instances`, and starts ticking their
    /// epochs.
    pub fn new(
        tiering: Tiering,
        max_instances: u32,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let (first, then) = match tiering {
            Tiering::Tiered => (TierKind::Baseline, Some(TierKind::Optimised)),
            Tiering::OptimisedOnly => (TierKind::Optimised, None),
            Tiering::BaselineOnly => (TierKind::Baseline, None),
        };
        let tiers = Self {
            first: Tier::new(first, max_instances, cache_dir.clone())?,
            then: then
                .map(|kind| Tier::new(kind, max_instances, cache_dir))
                .transpose()?,
        };
        let mut engines = vec![&tiers.first.engine];
        engines.extend(tiers.then.as_ref().map(|tier| &tier.engine));
        engine::start_epoch_ticker(&engines);
        Ok(tiers)
    }

    /// Compiles `wasm` (read from `file`) to serve as soon as it can: the optimised
    /// artifact if the cache holds it, else with the first tier. A component the
    /// baseline compiler cannot compile (a feature Winch lacks) goes to Cranelift.
    pub fn compile(
        &self,
        wasm: &[u8],
        digest: &Digest,
        file: &Path,
    ) -> anyhow::Result<Compiled<'_>> {
        let Some(then) = &self.then else {
            return self.first.compile(wasm, digest);
        };
        if let Some(compiled) = then.cached(digest) {
            return Ok(compiled);
        }
        match self.first.compile(wasm, digest) {
            Ok(compiled) => Ok(compiled),
            Err(baseline) => {
                // A file neither compiler takes gets the optimising compiler's error,
                // as without tiers.
                let compiled = then.compile(wasm, digest)?;
                tracing::warn!(
                    file = %file.display(),
                    "the baseline compiler cannot compile this component, so it waited for the optimised build: {baseline:#}"
                );
                Ok(compiled)
            }
        }
    }

    /// Whether an app serving from `tier` has an optimised build to move on to.
    pub fn moves_on(&self, tier: TierKind) -> bool {
        tier == TierKind::Baseline && self.then.is_some()
    }

    /// The optimised build of `wasm` (`None` if there is no tier to move on to).
    pub fn optimise(&self, wasm: &[u8], digest: &Digest) -> Option<anyhow::Result<Compiled<'_>>> {
        let then = self.then.as_ref()?;
        Some(then.compile(wasm, digest))
    }

    /// See [`CompileCache::remove_unused`]: both tiers' artifacts share the directory.
    pub fn remove_unused_artifacts(&self, in_use: &HashSet<PathBuf>) -> usize {
        self.first.cache.remove_unused(in_use)
    }
}

//! An app: one component loaded from `NAME.wasm`, its manifest and its routes.

use super::Runtime;
use super::cache::{Digest, Origin};
use super::idle::AppIdle;
use super::manifest::{Manifest, OutboundRule};
use super::state::HostState;
use super::tier::{Compiled, TierKind};
use crate::db::{Database, ResultLimits};
use crate::metrics::AppMetrics;
use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// A loaded, ready-to-instantiate app. Immutable: a reload builds a new one, and
/// requests already running keep the `Arc` of the version they started on.
pub struct App {
    pub name: Arc<str>,
    pub file: PathBuf,
    pub routes: Vec<String>,
    pub timeout: Duration,
    pub max_memory: usize,
    pub reuse_instances: bool,
    pub(super) env: Arc<[(String, String)]>,
    pub(super) outbound: Arc<[OutboundRule]>,
    /// The node's admin and database addresses, which outbound requests may reach only
    /// through a rule naming them; shared with the runtime, which updates them.
    pub(super) node_addresses: Arc<ArcSwap<Vec<SocketAddr>>>,
    /// The database, when the manifest grants it.
    pub(super) db: Option<Arc<dyn Database>>,
    /// What one database call may return.
    pub(super) db_limits: ResultLimits,
    pub(super) pre: ProxyPre<HostState>,
    /// Finished instances waiting for the next request (only with `reuse_instances`).
    pub(super) idle: AppIdle,
    /// Hash of the component bytes and the manifest text: equal means nothing changed.
    pub fingerprint: [u8; 32],
    pub origin: Origin,
    /// Which compiler made the code it runs.
    pub tier: TierKind,
    /// Its compiled code in the compile cache, which keeps it while the app is loaded.
    pub(super) artifact: Option<PathBuf>,
    /// Shared by every version of the app.
    pub metrics: AppMetrics,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
}

impl App {
    /// This app bound to `db` instead: a new version that shares the compiled
    /// component, with `idle` for its instances (the old version's idle instances hold
    /// the old database, and go with it).
    pub(super) fn rebound(&self, db: Arc<dyn Database>, idle: AppIdle) -> App {
        App {
            db: Some(db),
            ..self.copy(idle)
        }
    }

    /// The same version running the code `compiled` made (the optimised build), with
    /// `idle` for its instances, which live in that tier's pool.
    pub(super) fn retiered(&self, compiled: &Compiled, idle: AppIdle) -> anyhow::Result<App> {
        Ok(App {
            pre: proxy_pre(compiled, &self.file)?,
            tier: compiled.tier(),
            origin: compiled.origin,
            artifact: compiled.artifact.clone(),
            ..self.copy(idle)
        })
    }

    fn copy(&self, idle: AppIdle) -> App {
        App {
            name: self.name.clone(),
            file: self.file.clone(),
            routes: self.routes.clone(),
            timeout: self.timeout,
            max_memory: self.max_memory,
            reuse_instances: self.reuse_instances,
            env: self.env.clone(),
            outbound: self.outbound.clone(),
            node_addresses: self.node_addresses.clone(),
            db: self.db.clone(),
            db_limits: self.db_limits,
            pre: self.pre.clone(),
            idle,
            fingerprint: self.fingerprint,
            origin: self.origin,
            tier: self.tier,
            artifact: self.artifact.clone(),
            metrics: self.metrics.clone(),
            loaded_at: self.loaded_at,
        }
    }

    /// The version as the status page and metrics show it: the first twelve hex
    /// digits of the fingerprint.
    pub fn version(&self) -> String {
        hex::encode(&self.fingerprint[..6])
    }

    /// The `wharf:platform` interfaces the component imports (`wharf:platform/sql`...),
    /// without versions, sorted.
    pub fn platform_imports(&self) -> Vec<String> {
        let component = self.pre.instance_pre().component();
        let mut names: Vec<String> = component
            .component_type()
            .imports(self.pre.engine())
            .map(|(name, _)| name.split('@').next().unwrap_or(name).to_string())
            .filter(|name| name.starts_with("wharf:platform/"))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// The files that define an app, read in one go so the fingerprint matches what is loaded.
pub struct AppSource {
    pub name: String,
    pub wasm_path: PathBuf,
    pub manifest_path: PathBuf,
    pub(super) wasm: Vec<u8>,
    /// The component's name in the compile cache.
    pub(super) digest: Digest,
    manifest_text: Option<String>,
    pub fingerprint: [u8; 32],
}

impl AppSource {
    /// Reads `NAME.wasm` and `NAME.toml` (if any) from `dir`.
    pub fn read(dir: &Path, name: &str) -> std::io::Result<Self> {
        let wasm_path = dir.join(format!("{name}.wasm"));
        let manifest_path = dir.join(format!("{name}.toml"));
        let wasm = std::fs::read(&wasm_path)?;
        let manifest_text = match std::fs::read_to_string(&manifest_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        // The component is hashed once: its digest stands for it in the fingerprint.
        let digest = Digest::of(&wasm);
        let mut hasher = Sha256::new();
        hasher.update(digest.as_str());
        hasher.update(manifest_text.as_deref().unwrap_or("").as_bytes());
        Ok(Self {
            name: name.to_string(),
            wasm_path,
            manifest_path,
            wasm,
            digest,
            manifest_text,
            fingerprint: hasher.finalize().into(),
        })
    }

    /// Validates and compiles. Runs on a blocking thread, never on the request path.
    /// Errors say what is wrong with which file.
    pub fn load(self, runtime: &Runtime) -> anyhow::Result<App> {
        let Runtime {
            tiers, databases, ..
        } = runtime;
        let manifest = match &self.manifest_text {
            Some(text) => Manifest::parse(text)
                .with_context(|| format!("{}", self.manifest_path.display()))?,
            None => Manifest::default(),
        };
        check_component_header(&self.wasm).with_context(|| self.wasm_path.display().to_string())?;
        let compiled = tiers
            .compile(&self.wasm, &self.digest, &self.wasm_path)
            .with_context(|| format!("{}: not a valid component", self.wasm_path.display()))?;
        let pre = proxy_pre(&compiled, &self.wasm_path)?;
        let routes = manifest.routes.clone().unwrap_or_else(|| {
            vec![if self.name == "index" {
                "/".to_string()
            } else {
                format!("/{}", self.name)
            }]
        });
        let db = match manifest.database {
            true => Some(
                databases
                    .load()
                    .for_app(&self.name)
                    .with_context(|| format!("{}: database", self.manifest_path.display()))?,
            ),
            false => None,
        };
        let name: Arc<str> = self.name.into();
        let idle = runtime.idle.for_app(name.clone());
        Ok(App {
            metrics: runtime.metrics.app(&name),
            loaded_at: SystemTime::now(),
            name,
            file: self.wasm_path,
            routes,
            timeout: manifest.timeout(),
            max_memory: manifest.max_memory_bytes(),
            db_limits: manifest.result_limits(),
            reuse_instances: manifest.reuse_instances,
            env: manifest.variables.clone().into_iter().collect(),
            outbound: manifest.outbound_rules().into(),
            node_addresses: runtime.node_addresses.clone(),
            db,
            pre,
            idle,
            fingerprint: self.fingerprint,
            origin: compiled.origin,
            tier: compiled.tier(),
            artifact: compiled.artifact,
        })
    }
}

/// Links a compiled app and checks that it is an HTTP handler.
fn proxy_pre(compiled: &Compiled, file: &Path) -> anyhow::Result<ProxyPre<HostState>> {
    let instance_pre = compiled
        .link()
        .map_err(|e| anyhow::anyhow!("{}: cannot be linked: {e}", file.display()))?;
    ProxyPre::new(instance_pre).map_err(|e| {
        anyhow::anyhow!(
            "{}: does not export wasi:http/incoming-handler@0.2.x: {e}",
            file.display()
        )
    })
}

/// Tells apart the usual wrong files before handing bytes to the compiler, whose
/// messages for these cases are less direct.
fn check_component_header(bytes: &[u8]) -> anyhow::Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.is_empty() {
        bail!("file is empty");
    }
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        bail!("not a WebAssembly file (bad magic number)");
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => bail!(
            "is a core wasm module, not a component: build it for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)"
        ),
        _ => bail!("unsupported WebAssembly version or layer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_the_problem() {
        let err = |b: &[u8]| check_component_header(b).unwrap_err().to_string();
        assert!(err(b"").contains("empty"));
        assert!(err(b"garbage!").contains("magic"));
        assert!(err(b"\0asm\x01\0\0\0").contains("core wasm module"));
        assert!(check_component_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}

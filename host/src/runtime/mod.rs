//! The application server: compiles apps, keeps the registry of loaded apps, reloads
//! them when their files change, and runs requests in sandboxed instances.

mod app;
mod cache;
mod engine;
mod guest_log;
mod idle;
mod invoke;
mod limits;
pub mod manifest;
mod optimise;
mod outbound;
mod platform;
mod registry;
mod state;
mod tier;
pub(crate) mod watch;
pub use watch::{print_when_optimised, report};

pub use app::App;
pub use cache::Origin;
pub use idle::PoolOptions;
pub use invoke::InvokeError;
pub use registry::Registry;
pub use tier::TierKind;

use crate::db::Provider;
use crate::metrics::{Metrics, Outcome};
use anyhow::Context;
use app::AppSource;
use arc_swap::ArcSwap;
use idle::IdlePool;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::SystemTime;
use tier::Tiers;

/// Where the compile cache lives when the command line names none: `WHARF_CACHE_DIR`,
/// else `$XDG_CACHE_HOME/wharf`, else `~/.cache/wharf`. Every command that compiles
/// (serve, dev, build) goes through here.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WHARF_CACHE_DIR") {
        return Some(dir.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wharf"))
}

pub struct Runtime {
    tiers: Tiers,
    /// Apps serving from the baseline tier, to compile again with the optimising one.
    optimise: mpsc::Sender<optimise::Job>,
    apps_dir: PathBuf,
    /// Swapped whole by [`Runtime::set_databases`]; apps hold what they were bound to.
    databases: ArcSwap<Provider>,
    /// Finished instances of `reuse_instances` apps, across apps.
    idle: Arc<IdlePool>,
    /// See [`Runtime::set_node_addresses`]; every app shares it.
    node_addresses: Arc<ArcSwap<Vec<SocketAddr>>>,
    registry: ArcSwap<Registry>,
    /// Told of every registry stored, for [`Runtime::until_optimised`].
    published: tokio::sync::watch::Sender<()>,
    /// Fingerprint of the last version of each app that failed to load, so one bad file
    /// is reported once, not on every change event.
    failed: Mutex<HashMap<String, [u8; 32]>>,
    /// Serializes reloads: each one reads the registry, compiles, and stores a new
    /// registry, and two interleaved would lose one's change.
    reloading: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    /// The last [`MAX_LOAD_ERRORS`] loads that failed, oldest first.
    load_errors: Mutex<VecDeque<LoadError>>,
}

/// Failed loads the status page lists.
const MAX_LOAD_ERRORS: usize = 20;

/// A load of an app's files that failed.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub at: SystemTime,
    pub app: String,
    pub error: String,
}

/// The outcome of loading one app, for the startup table and the log.
pub enum LoadEvent {
    Loaded(Arc<App>),
    Unchanged,
    Removed(String),
    Failed(String, anyhow::Error),
}

impl Runtime {
    /// A runtime serving the apps in `apps_dir`; apps whose manifest grants a database
    /// get theirs from `databases`. Instances as [`PoolOptions::default`].
    pub fn new(
        apps_dir: &Path,
        cache_dir: Option<PathBuf>,
        databases: Provider,
    ) -> anyhow::Result<Arc<Self>> {
        let metrics = crate::metrics::Metrics::new();
        Self::with_pool(
            apps_dir,
            cache_dir,
            databases,
            PoolOptions::default(),
            metrics,
        )
    }

    /// Like [`Runtime::new`], with `pool` bounding the instances and the apps' handles
    /// made from the node's `metrics`.
    pub fn with_pool(
        apps_dir: &Path,
        cache_dir: Option<PathBuf>,
        databases: Provider,
        pool: PoolOptions,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let tiers = Tiers::new(pool.tiering, pool.max_instances, cache_dir)?;
        Ok(Arc::new_cyclic(|runtime| Self {
            tiers,
            optimise: optimise::start(runtime.clone()),
            apps_dir: apps_dir.to_path_buf(),
            databases: ArcSwap::from_pointee(databases),
            idle: IdlePool::start(&pool),
            node_addresses: Default::default(),
            registry: Default::default(),
            published: tokio::sync::watch::Sender::new(()),
            failed: Default::default(),
            reloading: Default::default(),
            metrics,
            load_errors: Default::default(),
        }))
    }

    /// Makes `registry` the one requests see from now on. Callers hold `reloading`.
    fn publish(&self, registry: Registry) {
        self.registry.store(Arc::new(registry));
        self.published.send_replace(());
    }

    /// Resolves once app `name`, at the version with `fingerprint`, serves from its
    /// last tier, to that app; to `None` once that version is gone (changed, removed)
    /// or the runtime is. A version whose optimised build failed waits for its next
    /// change. Holds no reference to the runtime while it waits.
    pub fn until_optimised(
        self: &Arc<Self>,
        name: &str,
        fingerprint: [u8; 32],
    ) -> impl Future<Output = Option<Arc<App>>> + Send + 'static {
        // Subscribed before looking, so a store in between is not missed.
        let mut stored = self.published.subscribe();
        let runtime = Arc::downgrade(self);
        let name = name.to_string();
        async move {
            loop {
                {
                    let runtime = runtime.upgrade()?;
                    let app = runtime
                        .registry()
                        .get(&name)
                        .filter(|app| app.fingerprint == fingerprint)?
                        .clone();
                    if !runtime.tiers.moves_on(app.tier) {
                        return Some(app);
                    }
                }
                stored.changed().await.ok()?;
            }
        }
    }

    /// The node's own admin listener and database servers: guests' outbound requests
    /// reach them only through a rule naming their IP literal, whatever their range.
    /// Applies to every app from its next request on.
    pub fn set_node_addresses(&self, addresses: Vec<SocketAddr>) {
        self.node_addresses.store(Arc::new(addresses));
    }

    /// Where apps granted a database get it from.
    pub fn databases(&self) -> Arc<Provider> {
        self.databases.load_full()
    }

    /// Binds every loaded app granted a database to `databases` instead, without
    /// compiling anything, and loads later apps against it. Requests already running
    /// finish on the database they started with; once the last of them ends, the old
    /// provider goes: its checks stop and its connections close. Fails, changing
    /// nothing, if an app cannot get its database from `databases` (see
    /// [`Provider::check`] for what to ask of it first).
    pub async fn set_databases(&self, databases: Provider) -> anyhow::Result<()> {
        let _writer = self.reloading.lock().await;
        let mut next = Registry::default();
        for app in self.registry().apps() {
            let app = match &app.db {
                None => app.clone(),
                Some(_) => {
                    let db = databases
                        .for_app(&app.name)
                        .with_context(|| format!("{}: database", app.file.display()))?;
                    Arc::new(app.rebound(db, self.idle.for_app(app.name.clone())))
                }
            };
            next = next.with(app)?;
        }
        self.databases.store(Arc::new(databases));
        self.publish(next);
        Ok(())
    }

    /// Keeps at most `max_idle` idle instances, each for at most `ttl`, from now on
    /// (`[apps] max_idle_instances`, `idle_instance_ttl_ms` on reload).
    pub fn set_idle_limits(&self, max_idle: usize, ttl: std::time::Duration) {
        self.idle.set_limits(max_idle, ttl);
    }

    pub fn apps_dir(&self) -> &Path {
        &self.apps_dir
    }

    /// The current set of apps; a request keeps the snapshot it started with.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// Loads every `*.wasm` in the apps directory. Bad apps are reported and skipped.
    pub async fn load_all(self: &Arc<Self>) -> anyhow::Result<Vec<LoadEvent>> {
        let mut names = app_names(&self.apps_dir)?;
        names.sort();
        let mut events = Vec::new();
        for name in names {
            events.push(self.reload(&name).await);
        }
        self.remove_unused_artifacts().await;
        Ok(events)
    }

    /// Clears the compile cache of artifacts nobody uses any more: at start, and after
    /// reloads.
    pub(super) async fn remove_unused_artifacts(self: &Arc<Self>) {
        let in_use = self
            .registry()
            .apps()
            .filter_map(|app| app.artifact.clone())
            .collect();
        let this = self.clone();
        let _ =
            tokio::task::spawn_blocking(move || this.tiers.remove_unused_artifacts(&in_use)).await;
    }

    /// Brings app `name` in line with its files: loads, replaces or removes it.
    /// Compilation runs on a blocking thread; the swap is a single atomic store, and on
    /// failure the previous version keeps serving. A version loaded from the baseline
    /// tier is queued for the optimiser.
    pub async fn reload(self: &Arc<Self>, name: &str) -> LoadEvent {
        let _writer = self.reloading.lock().await;
        let source = match AppSource::read(&self.apps_dir, name) {
            Ok(source) => source,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.failed.lock().unwrap().remove(name);
                let current = self.registry();
                if current.get(name).is_none() {
                    return LoadEvent::Unchanged;
                }
                self.publish(current.without(name));
                return LoadEvent::Removed(name.to_string());
            }
            Err(e) => {
                let file = self.apps_dir.join(format!("{name}.wasm"));
                return LoadEvent::Failed(name.into(), anyhow::anyhow!("{}: {e}", file.display()));
            }
        };
        let unchanged = |fp: &[u8; 32]| *fp == source.fingerprint;
        if self
            .registry()
            .get(name)
            .is_some_and(|app| unchanged(&app.fingerprint))
            || self.failed.lock().unwrap().get(name).is_some_and(unchanged)
        {
            return LoadEvent::Unchanged;
        }
        let fingerprint = source.fingerprint;
        let this = self.clone();
        let started = std::time::Instant::now();
        let loaded = tokio::task::spawn_blocking(move || source.load(&this))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("compiler thread failed: {e}")));
        if let Ok(app) = &loaded {
            app.metrics.compile.observe(started.elapsed().as_secs_f64());
        }
        let result = loaded.and_then(|app| {
            let app = Arc::new(app);
            // `reloading` is held, so no other writer can slip in between load and store.
            let next = self.registry().with(app.clone())?;
            self.publish(next);
            Ok(app)
        });
        match result {
            Ok(app) => {
                self.metrics.reloaded(Outcome::Ok);
                self.failed.lock().unwrap().remove(name);
                if self.tiers.moves_on(app.tier) {
                    // The optimiser ends only with the runtime.
                    let _ = self.optimise.send(optimise::Job::new(&app));
                }
                LoadEvent::Loaded(app)
            }
            Err(e) => {
                self.metrics.reloaded(Outcome::Failed);
                self.failed
                    .lock()
                    .unwrap()
                    .insert(name.to_string(), fingerprint);
                self.note_load_error(name, &e);
                LoadEvent::Failed(name.to_string(), e)
            }
        }
    }

    /// Apps whose files failed to load with no version of them serving.
    pub fn unloaded(&self) -> Vec<String> {
        let registry = self.registry();
        let failed = self.failed.lock().unwrap();
        let mut names: Vec<String> = failed
            .keys()
            .filter(|name| registry.get(name).is_none())
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// The last loads that failed, newest first, for the status page.
    pub fn load_errors(&self) -> Vec<LoadError> {
        self.load_errors
            .lock()
            .unwrap()
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    fn note_load_error(&self, app: &str, error: &anyhow::Error) {
        let mut errors = self.load_errors.lock().unwrap();
        if errors.len() == MAX_LOAD_ERRORS {
            errors.pop_front();
        }
        errors.push_back(LoadError {
            at: SystemTime::now(),
            app: app.to_string(),
            error: format!("{error:#}"),
        });
    }

    /// Watches the apps directory and reloads apps whose files change, until the
    /// returned handle is dropped.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<crate::fswatch::Watch> {
        watch::start(self.clone())
    }
}

/// Names of the apps in `dir`: the stems of its `*.wasm` files.
fn app_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("apps directory {}: {e}", dir.display()))?;
    Ok(entries
        .filter_map(|entry| app_name(&entry.ok()?.path()))
        .collect())
}

/// The app a path in the apps directory belongs to, if any: `x.wasm` and `x.toml`
/// belong to app `x`. Hidden files (editors' and copy tools' temporaries) belong to none.
fn app_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let ext = path.extension()?.to_str()?;
    if stem.is_empty() || stem.starts_with('.') || !matches!(ext, "wasm" | "toml") {
        return None;
    }
    Some(stem.to_string())
}

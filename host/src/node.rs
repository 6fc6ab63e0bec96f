//! A node: everything `wharf serve` (and `wharf dev`) runs, built from one
//! configuration, served until shutdown, and brought to a new configuration in place.
//!
//! [`Node::build`] makes the long-lived parts (database provider, runtime and its apps
//! watcher, `wharf dev`'s builder, certificates, upstream pools, listeners, admin
//! listener, gateway) and prints where it listens. [`Node::run`] reloads on SIGHUP or a saved wharf.toml
//! until the shutdown future completes, then drains. [`Node::apply`] is the reload:
//! everything that can fail (reading certificates, binding new addresses, building
//! sites) is done first, so a reload either happens whole or changes nothing.

use crate::acme::{Acme, AcmeSite, Storage};
use crate::config::{AcmeConfig, Config, TlsConfig};
use crate::db::Provider;
use crate::firewall::{ConnectionCaps, Firewall, Rules};
use crate::fswatch;
use crate::gateway::BuildErrors;
use crate::gateway::{Gateway, ListenerId, Sites};
use crate::metrics::Metrics;
use crate::monitor::admin::{self, Admin};
use crate::monitor::history::History;
use crate::monitor::live::{Live, Readiness};
use crate::monitor::track;
use crate::net::tls::{self, CertStore, Certificates, TlsSite};
use crate::net::{self, Draining, ListenerPolicy, Server, Serving};
use crate::proxy::Upstreams;
use crate::runtime::{LoadEvent, Origin, PoolOptions, Runtime};
use anyhow::Context;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// What the command line adds to the configuration.
#[derive(Debug, Default)]
pub struct Options {
    /// The apps directory; wins over `[apps] dir` [default: apps].
    pub apps_dir: Option<PathBuf>,
    /// A plain HTTP address to listen on besides the configuration's listeners.
    pub listen: Option<SocketAddr>,
    /// Where compiled apps are cached; `None` compiles every app on start.
    pub cache_dir: Option<PathBuf>,
    /// The wharf.toml the configuration came from, reloaded when it changes.
    pub config_path: Option<PathBuf>,
    /// Where apps' SQLite files live; wins over `[apps] data_dir` [default: data].
    pub data_dir: Option<PathBuf>,
    /// `wharf dev`: guest projects built before the first load and rebuilt on save.
    pub dev: Vec<PathBuf>,
}

/// A part of the configuration, as [`Node::apply`] reports what it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// `[[listener]]`
    Listeners,
    /// `[[site]]` and `unknown_host`.
    Sites,
    /// The TLS sites: their hosts, certificate and key files.
    Tls,
    /// `[limits]`
    Limits,
    /// `[admin]`
    Admin,
    /// `[apps]`
    Apps,
    /// `[database]`
    Database,
    /// `[[upstream]]` and `[firewall]`.
    Upstreams,
    /// `[log]`
    Log,
}

/// What a reload did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Sections now running their new values.
    pub changed: Vec<Section>,
    /// Keys whose new values take effect on restart only, with their section.
    pub on_restart: Vec<(Section, &'static str)>,
}

/// A built node, serving; [`Node::run`] it.
pub struct Node {
    inner: Arc<Inner>,
    /// Installed at build: SIGHUP's default action would end the process.
    hup: Signal,
    config_changes: Option<ConfigWatch>,
    _apps_watch: fswatch::Watch,
    _dev_watch: Option<fswatch::Watch>,
}

struct Inner {
    options: Options,
    server: Arc<Server>,
    runtime: Arc<Runtime>,
    readiness: Arc<Readiness>,
    /// The live pools, shared with the admin listener; routes hold the pools they
    /// send to, so a reload swaps both.
    upstreams: Arc<ArcSwap<Upstreams>>,
    /// What the admin listener reports on; shares the parts above.
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    /// `[admin] track_file`, as the last configuration has it.
    track_file: Arc<ArcSwapOption<PathBuf>>,
    /// Held for a whole reload, so two never interleave.
    state: tokio::sync::Mutex<State>,
}

/// What a reload changes.
struct State {
    config: Config,
    listeners: Vec<Bound>,
    admin: Option<Admin>,
    /// Made with the first TLS listener, at start or by a reload.
    certs: Option<Arc<CertStore>>,
    /// Orders and renews the certificates of `tls = "acme"` sites.
    acme: Option<Arc<Acme>>,
    /// Connections of listeners that reloads removed, finishing.
    draining: tokio::task::JoinSet<()>,
    next_listener: u32,
}

/// A serving listener and the `(address, tls)` it was asked for: a port 0 listener
/// is matched by what was asked, not by the port it got.
struct Bound {
    wanted: (SocketAddr, bool),
    serving: Serving,
}

/// How long a draining node with a track file goes on accepting after giving up the
/// shared address: two VRRP adverts at 0.1 s, time for the peer to take it over.
const ADDRESS_MOVE: Duration = Duration::from_millis(200);

impl Node {
    /// Builds every part of the node and starts serving; prints the listening lines
    /// and the app table.
    pub async fn build(config: Config, options: Options) -> anyhow::Result<Node> {
        let started = Instant::now();
        let apps_dir = apps_dir(&options, &config);
        anyhow::ensure!(
            apps_dir.is_dir(),
            "apps directory {} does not exist: create it or name another one",
            apps_dir.display()
        );
        let metrics = Metrics::new();
        let data = data_dir(&options, &config);
        let databases = Provider::new(config.database.as_ref(), data, &metrics).await?;
        let database = databases.describe();
        let pool = PoolOptions {
            max_instances: config.apps.max_instances,
            max_idle: config.apps.max_idle_instances as usize,
            idle_ttl: config.apps.idle_instance_ttl,
            tiering: config.apps.tiered,
        };
        let cache_dir = options.cache_dir.clone();
        let runtime = Runtime::with_pool(&apps_dir, cache_dir, databases, pool, metrics.clone())?;
        // Watch before the first load so a file written meanwhile is not missed.
        let apps_watch = runtime
            .watch()
            .with_context(|| format!("watching {}", apps_dir.display()))?;
        // `wharf dev`: the projects are built before the first load, so their apps are there.
        let dev = match options.dev.as_slice() {
            [] => None,
            dirs => {
                let projects = crate::project::dev::projects(dirs)?;
                let errors = Arc::new(BuildErrors::default());
                crate::project::dev::build_all(&projects, &apps_dir, &errors).await;
                Some((projects, errors))
            }
        };
        let events = {
            // Compiling apps the cache does not hold takes a few seconds on a first run.
            let spinner = dev
                .as_ref()
                .map(|_| crate::project::dev::spinner("compiling apps for wasmtime".into()));
            let events = runtime.load_all().await?;
            spinner.inspect(|s| s.finish_and_clear());
            events
        };
        let certs = certificates(&config)?.map(CertStore::new).transpose()?;
        // After the certificates: their watcher sees every file the orderer writes.
        let acme = acme_for(&config, None)?;
        let wanted = wanted_listeners(options.listen, &config);
        let acceptor = certs.as_ref().map(acceptor);
        let mut bound = Vec::new();
        for &(address, is_tls) in &wanted {
            let mut listener = net::bind(address).await?;
            listener.tls = if is_tls { acceptor.clone() } else { None };
            bound.push(((address, is_tls), listener));
        }
        let readiness = Arc::new(Readiness::default());
        let upstreams = Arc::new(ArcSwap::from_pointee(Upstreams::build(
            &config.upstreams,
            &config.firewall.trusted_proxies,
            None,
            &metrics,
        )?));
        upstreams.load().start();
        let live = Arc::new(Live {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            runtime: runtime.clone(),
            upstreams: upstreams.clone(),
            certs: Arc::new(arc_swap::ArcSwapOption::new(certs.clone())),
            acme: Arc::new(ArcSwapOption::new(acme.clone())),
            started: std::time::SystemTime::now(),
            history: History::start(metrics.clone()),
        });
        let admin = match &config.admin {
            Some(settings) => Some(Admin::spawn(
                admin::bind(settings.address).await?,
                admin::Access::of(settings)?,
                live.clone(),
                &config.limits,
            )),
            None => None,
        };
        runtime.set_node_addresses(
            node_addresses(admin.as_ref().map(|a| a.local), config.database.as_ref()).await,
        );
        let https_port = bound
            .iter()
            .find(|(_, l)| l.tls.is_some())
            .map(|(_, l)| l.local.port());
        let sites = Sites::from_config(&config, https_port, &upstreams.load(), None, &metrics)?;
        let firewall = Firewall::build(&config.firewall, None);
        let mut gateway = Gateway::new(
            runtime.clone(),
            sites,
            firewall,
            &config.limits,
            &config.log,
            metrics.clone(),
        );
        let dev_watch = match dev {
            Some((projects, errors)) => {
                gateway = gateway.with_build_errors(errors.clone());
                let watch = crate::project::dev::watch(
                    projects,
                    apps_dir.clone(),
                    runtime.clone(),
                    errors,
                )?;
                Some(watch)
            }
            None => None,
        };
        let caps = ConnectionCaps::new(
            config.firewall.max_connections,
            config.firewall.max_connections_per_ip,
        );
        let server = Server::new(Arc::new(gateway), &config.limits, caps, metrics.clone());
        let policies = listener_policies(options.listen, &config);
        let mut listeners = Vec::new();
        for (i, (wanted, listener)) in bound.into_iter().enumerate() {
            let serving = server.serve(listener, ListenerId(i as u32), policies[i].clone());
            listeners.push(Bound { wanted, serving });
        }
        let hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let config_changes = options.config_path.as_deref().and_then(|path| {
            ConfigWatch::start(path)
                .inspect_err(|e| {
                    tracing::warn!("not watching {}: {e:#}; reload with SIGHUP", path.display())
                })
                .ok()
        });
        let addrs: Vec<(SocketAddr, bool)> = listeners
            .iter()
            .map(|l| (l.serving.local, l.serving.tls))
            .collect();
        print_startup(&addrs, admin.as_ref().map(|a| a.local), &events, &database);
        for event in &events {
            if let LoadEvent::Loaded(app) = event {
                crate::runtime::print_when_optimised(&runtime, app, started, "start");
            }
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
        for event in events {
            if let LoadEvent::Failed(..) = event {
                crate::runtime::report(event);
            }
        }
        let track_file = Arc::new(ArcSwapOption::new(
            config
                .admin
                .as_ref()
                .and_then(|a| a.track_file.clone())
                .map(Arc::new),
        ));
        let state = State {
            config,
            next_listener: listeners.len() as u32,
            listeners,
            admin,
            certs,
            acme,
            draining: Default::default(),
        };
        Ok(Node {
            inner: Arc::new(Inner {
                options,
                server,
                runtime,
                readiness,
                upstreams,
                live,
                metrics,
                track_file,
                state: tokio::sync::Mutex::new(state),
            }),
            hup,
            config_changes,
            _apps_watch: apps_watch,
            _dev_watch: dev_watch,
        })
    }

    /// Serves, reloading on SIGHUP and when the configuration file changes, until
    /// `shutdown` completes or the admin listener is asked to drain (`POST /drain`).
    /// Then the node drains, in an order that loses no request, even for a node that
    /// shares an address with a peer:
    /// 1. `/readyz` turns 503 at once, so balancers checking it stop sending;
    /// 2. every open connection is asked to finish (HTTP/1.1 `Connection: close` after
    ///    the response in flight, HTTP/2 GOAWAY), while the listeners keep accepting,
    ///    each new connection carrying one request;
    /// 3. after `[admin] drain_delay_ms`, once the connections open at the start have
    ///    ended (at most `[limits] drain_timeout_ms`), the track file gives the shared
    ///    address up. Until then, moving it would break those connections;
    /// 4. [`ADDRESS_MOVE`] later (with a track file), the listeners close and what is
    ///    left gets `drain_timeout_ms` to finish; the
    ///    upstreams' active checks stop last.
    ///
    /// A second signal cuts step 3 short.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let inner = self.inner;
        let reload = tokio::spawn(reload_on_change(
            inner.clone(),
            self.hup,
            self.config_changes,
        ));
        let track = tokio::spawn(track::keep(inner.track_file.clone(), inner.live.clone()));
        tokio::select! {
            () = shutdown => {}
            () = inner.readiness.drain_requested() => {}
        }
        inner.readiness.start_draining();
        // Taken before the reloads stop, so none is cut off halfway.
        let mut state = inner.state.lock().await;
        reload.abort();
        let drain = state.config.limits.drain_timeout;
        let delay = state
            .config
            .admin
            .as_ref()
            .map_or(Duration::ZERO, |a| a.drain_delay);
        inner.server.close_new_connections();
        let open: Vec<_> = state
            .listeners
            .iter()
            .map(|bound| bound.serving.finish_open_connections())
            .collect();
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "draining: open connections are asked to finish, new ones carry one request"
        );
        let finished = async {
            for listener in open {
                listener.await;
            }
        };
        let waited = async {
            tokio::join!(
                tokio::time::sleep(delay),
                tokio::time::timeout(drain, finished)
            )
        };
        tokio::select! {
            _ = waited => {}
            _ = shutdown_signal() => {}
        }
        inner.readiness.release();
        track.abort();
        if let Some(path) = inner.track_file.load_full() {
            match track::write(&path, false) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "track file: the shared address is given up")
                }
                Err(e) => tracing::warn!("track file {}: {e}", path.display()),
            }
        }
        if !inner.track_file.load().is_none() {
            // keepalived sees the file at once and moves the address within a few
            // milliseconds; a client that reached this node meanwhile is still served.
            tokio::time::sleep(ADDRESS_MOVE).await;
        }
        let mut draining = Vec::new();
        for bound in state.listeners.drain(..) {
            draining.push(bound.serving.stop_accepting().await);
        }
        tracing::info!(
            connections = draining.iter().map(Draining::connections).sum::<usize>(),
            "shutting down: draining connections"
        );
        // With the connections of listeners reloads removed, still finishing.
        let mut all = std::mem::take(&mut state.draining);
        for listener in draining {
            all.spawn(listener.finish(drain));
        }
        let finished = async { while all.join_next().await.is_some() {} };
        // Each drain has its deadline; this bounds those a reload started earlier.
        let _ = tokio::time::timeout(drain, finished).await;
        inner.upstreams.load().retire();
    }

    /// Brings the node to `new`; see [`Inner::apply`].
    pub async fn apply(&self, new: Config) -> anyhow::Result<Applied> {
        self.inner.apply(new).await
    }
}

impl Inner {
    /// Brings the running node to `new` without dropping a connection or a request:
    /// sites, TLS, `[limits]` (for new connections; the drain timeout for the next
    /// shutdown), `[admin]`, upstream pools and listeners change in place. New
    /// addresses are bound and new pools built (each backend named again keeps its
    /// state) before anything changes: one that cannot be bound refuses the whole reload.
    /// Removed listeners stop accepting and their connections finish. What cannot
    /// change in place is named in one log line and in [`Applied::on_restart`].
    async fn apply(&self, new: Config) -> anyhow::Result<Applied> {
        let mut state = self.state.lock().await;
        let applied = diff(&state.config, &new, &self.options);
        let origin = self
            .options
            .config_path
            .as_deref()
            .map_or("configuration".into(), |p| p.display().to_string());

        // Everything that can fail, before anything changes.
        let wanted = wanted_listeners(self.options.listen, &new);
        let running: Vec<_> = state.listeners.iter().map(|l| l.wanted).collect();
        let plan = diff_listeners(&running, &wanted);
        if let Some(acme) = &new.acme {
            Storage::create(&acme.storage)?;
        }
        let tls_sites = tls_sites(&new);
        let wants_tls = wanted.iter().any(|(_, tls)| *tls);
        let new_certs = match &state.certs {
            // Without a TLS listener nothing serves them: not loaded, as at start.
            Some(store) if wants_tls && store.sites() != tls_sites => {
                Some(load_certificates(&tls_sites, &origin)?)
            }
            None if wants_tls => Some(load_certificates(&tls_sites, &origin)?),
            _ => None,
        };
        let certs_loaded = new_certs.is_some();
        let new_store = match (&state.certs, &new_certs) {
            (None, Some(certs)) => Some(CertStore::new(certs.clone())?),
            _ => None,
        };
        let replaced = match (&state.certs, new_certs) {
            (Some(_), Some(certs)) => Some((certs.watch()?, certs)),
            _ => None,
        };
        let mut added = Vec::new();
        for &w in &plan.add {
            added.push((w, net::bind(wanted[w].0).await?));
        }
        let admin_access = new.admin.as_ref().map(admin::Access::of).transpose()?;
        let admin_address = new.admin.as_ref().map(|a| a.address);
        let old_admin_address = state.config.admin.as_ref().map(|a| a.address);
        let new_admin = match admin_address {
            Some(address) if admin_address != old_admin_address => {
                Some(admin::bind(address).await?)
            }
            _ => None,
        };
        let mut https_port = None;
        for (i, bound) in state.listeners.iter().enumerate() {
            if bound.serving.tls && plan.kept(i).is_some() {
                https_port = Some(bound.serving.local.port());
                break;
            }
        }
        if https_port.is_none() {
            https_port = added
                .iter()
                .find(|(w, _)| wanted[*w].1)
                .map(|(_, l)| l.local.port());
        }
        let old_upstreams = self.upstreams.load_full();
        let new_upstreams = match applied.changed.contains(&Section::Upstreams) {
            true => Some(Arc::new(Upstreams::build(
                &new.upstreams,
                &new.firewall.trusted_proxies,
                Some(&old_upstreams),
                &self.metrics,
            )?)),
            false => None,
        };
        let built = async {
            let upstreams = new_upstreams.as_deref().unwrap_or(&old_upstreams);
            let previous = self.server.gateway().sites();
            let sites =
                Sites::from_config(&new, https_port, upstreams, Some(&previous), &self.metrics)?;
            // The last step that can fail (re-binding apps to new databases fails whole
            // or not at all), so if it does, nothing has changed.
            self.switch_databases(&state.config, &new).await?;
            anyhow::Ok(sites)
        };
        // New pools touch nothing until they start, so a failure here leaves the
        // running ones as they were.
        let sites = built.await?;

        // From here on, nothing can fail.
        if let (Some(store), Some((watch, certs))) = (&state.certs, replaced) {
            store.replace(certs, watch);
        }
        if new_store.is_some() {
            self.live.certs.store(new_store.clone());
            state.certs = new_store;
        }
        // Its storage was made above, so this does not fail; an orderer replaced
        // mid-order stops, and its lock and challenge files go with it.
        if let Ok(acme) = acme_for(&new, state.acme.as_ref()) {
            self.live.acme.store(acme.clone());
            state.acme = acme;
        }
        self.server.gateway().set_sites(sites);
        // Logged once the sites that serve the new certificates are in place too:
        // scripts wait for this line and then ask for a new site.
        if certs_loaded {
            tracing::info!("{origin}: TLS sites reloaded");
        }
        if let Some(upstreams) = new_upstreams {
            // Requests in flight on the old pools finish there.
            self.upstreams.store(upstreams.clone());
            old_upstreams.retire();
            upstreams.start();
            tracing::info!("{origin}: upstreams reloaded");
        }
        self.track_file.store(
            new.admin
                .as_ref()
                .and_then(|a| a.track_file.clone())
                .map(Arc::new),
        );
        if applied.changed.contains(&Section::Limits) {
            self.server.set_limits(&new.limits);
            self.server.gateway().set_limits(&new.limits);
        }
        if applied.changed.contains(&Section::Log) {
            self.server.gateway().set_log(&new.log);
        }
        let gateway = self.server.gateway();
        gateway.set_firewall(Firewall::build(&new.firewall, Some(&gateway.firewall())));
        self.server.caps().set_caps(
            new.firewall.max_connections,
            new.firewall.max_connections_per_ip,
        );
        // Kept listeners take the policy of the wanted entry they matched, added ones
        // theirs.
        let policies = listener_policies(self.options.listen, &new);
        let acceptor = state.certs.as_ref().map(acceptor);
        // Tests and scripts read the ports from these lines, as at start.
        let mut printed = Vec::new();
        let mut kept = Vec::new();
        let drain = new.limits.drain_timeout;
        for (i, bound) in std::mem::take(&mut state.listeners).into_iter().enumerate() {
            if let Some(w) = plan.kept(i) {
                bound.serving.set_policy(policies[w].clone());
                kept.push(bound);
                continue;
            }
            let (local, scheme) = (bound.serving.local, scheme(bound.serving.tls));
            let draining = bound.serving.stop_accepting().await;
            tracing::info!(
                connections = draining.connections(),
                "stopped listening on {scheme}://{local}: draining its connections"
            );
            state.draining.spawn(draining.finish(drain));
        }
        for (w, mut listener) in added {
            let wanted = wanted[w];
            listener.tls = if wanted.1 { acceptor.clone() } else { None };
            let id = ListenerId(state.next_listener);
            state.next_listener += 1;
            let serving = self.server.serve(listener, id, policies[w].clone());
            printed.push(format!(
                "listening on {}://{}",
                scheme(wanted.1),
                serving.local
            ));
            kept.push(Bound { wanted, serving });
        }
        state.listeners = kept;
        match (admin_access, new_admin) {
            (None, _) => state.admin = None,
            (Some(access), Some(listener)) => {
                let admin = Admin::spawn(listener, access, self.live.clone(), &new.limits);
                printed.push(format!(
                    "admin on http://{} ({})",
                    admin.local,
                    admin::ENDPOINTS
                ));
                // The old listener closes; its open connections finish.
                state.admin = Some(admin);
            }
            (Some(access), None) => {
                if let Some(admin) = &state.admin {
                    admin.update(access, &new.limits);
                }
            }
        }
        self.runtime.set_node_addresses(
            node_addresses(state.admin.as_ref().map(|a| a.local), new.database.as_ref()).await,
        );
        let mut out = std::io::stdout().lock();
        for line in printed {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        drop(out);
        if applied.changed.contains(&Section::Apps) {
            self.runtime.set_idle_limits(
                new.apps.max_idle_instances as usize,
                new.apps.idle_instance_ttl,
            );
        }
        if !applied.on_restart.is_empty() {
            let keys: Vec<&str> = applied.on_restart.iter().map(|(_, key)| *key).collect();
            tracing::warn!(
                "{origin}: {} changed; takes effect on restart",
                keys.join(", ")
            );
        }
        state.config = new;
        Ok(applied)
    }

    /// The apps' databases brought to `new`'s, when they differ from `old`'s: the new
    /// pools are built and their primary must answer before they replace the old
    /// ones; requests in flight finish on the old pools, which then close.
    async fn switch_databases(&self, old: &Config, new: &Config) -> anyhow::Result<()> {
        if !databases_differ(old, new, &self.options) {
            return Ok(());
        }
        let data = data_dir(&self.options, new);
        let databases = Provider::new(new.database.as_ref(), data, &self.metrics).await?;
        databases.check()?;
        let described = databases.describe();
        self.runtime.set_databases(databases).await?;
        tracing::info!("database reloaded: {described}");
        Ok(())
    }
}

/// The node's admin listener and database servers, which guests' outbound requests
/// reach only through a rule naming their address. A database named by a host name is
/// looked up now; one that does not resolve (in 5 s) is left out: connecting to it
/// fails the same way, and says so.
async fn node_addresses(
    admin: Option<SocketAddr>,
    database: Option<&crate::config::DatabaseConfig>,
) -> Vec<SocketAddr> {
    let mut addresses: Vec<SocketAddr> = admin.into_iter().collect();
    // Collected first: an iterator with closures held across the awaits below would
    // make the future not `Send`.
    let servers: Vec<(String, u16)> = database
        .into_iter()
        .flat_map(|db| std::iter::once(&db.primary).chain(&db.replicas))
        .map(|opts| (opts.ip_or_hostname().to_string(), opts.tcp_port()))
        .collect();
    for server in servers {
        let lookup = tokio::net::lookup_host(server);
        if let Ok(Ok(found)) = tokio::time::timeout(Duration::from_secs(5), lookup).await {
            addresses.extend(found);
        }
    }
    addresses
}

/// What differs between `old` and `new`, by section: what [`Inner::apply`] changes in
/// place, and what only a restart can.
fn diff(old: &Config, new: &Config, options: &Options) -> Applied {
    let mut applied = Applied::default();
    let mut changed = |section, differs: bool| {
        if differs {
            applied.changed.push(section);
        }
    };
    let old_listeners = wanted_listeners(options.listen, old);
    let new_listeners = wanted_listeners(options.listen, new);
    let plan = diff_listeners(&old_listeners, &new_listeners);
    changed(
        Section::Listeners,
        plan.keep.len() != old_listeners.len() || !plan.add.is_empty(),
    );
    changed(
        Section::Sites,
        old.sites != new.sites || old.unknown_host != new.unknown_host,
    );
    changed(Section::Tls, tls_sites(old) != tls_sites(new));
    changed(Section::Limits, old.limits != new.limits);
    changed(Section::Admin, old.admin != new.admin);
    changed(
        Section::Apps,
        old.apps.max_idle_instances != new.apps.max_idle_instances
            || old.apps.idle_instance_ttl != new.apps.idle_instance_ttl
            || data_dir(options, old) != data_dir(options, new),
    );
    changed(Section::Database, old.database != new.database);
    changed(Section::Log, old.log != new.log);
    changed(
        Section::Upstreams,
        old.upstreams != new.upstreams || old.firewall != new.firewall,
    );
    // wasmtime reserves the instance pool at start, and the apps watcher is bound to
    // the directory.
    if old.apps.max_instances != new.apps.max_instances {
        applied
            .on_restart
            .push((Section::Apps, "apps.max_instances"));
    }
    // The engines are built at start, one per compiler.
    if old.apps.tiered != new.apps.tiered {
        applied.on_restart.push((Section::Apps, "apps.tiered"));
    }
    if apps_dir(options, old) != apps_dir(options, new) {
        applied.on_restart.push((Section::Apps, "apps.dir"));
    }
    applied
}

/// Whether apps' databases change: the cluster, or where the SQLite files are.
fn databases_differ(old: &Config, new: &Config, options: &Options) -> bool {
    old.database != new.database || data_dir(options, old) != data_dir(options, new)
}

/// Which of the `running` listeners a configuration keeps, each with the index of the
/// wanted entry it matched (whose policy it takes), in running order; and which wanted
/// entries are added (their indices). Listeners are matched by `(address, tls)` as a
/// multiset: two `127.0.0.1:0` are two listeners, and a kept one keeps its socket.
#[derive(Debug, PartialEq)]
struct ListenerPlan {
    keep: Vec<(usize, usize)>,
    add: Vec<usize>,
}

impl ListenerPlan {
    /// The wanted entry the running listener `i` matched, if it is kept.
    fn kept(&self, i: usize) -> Option<usize> {
        self.keep.iter().find(|(r, _)| *r == i).map(|(_, w)| *w)
    }
}

fn diff_listeners(running: &[(SocketAddr, bool)], wanted: &[(SocketAddr, bool)]) -> ListenerPlan {
    let mut matched = vec![None; running.len()];
    let mut add = Vec::new();
    for (w, want) in wanted.iter().enumerate() {
        match (0..running.len()).find(|&i| matched[i].is_none() && running[i] == *want) {
            Some(i) => matched[i] = Some(w),
            None => add.push(w),
        }
    }
    let keep = (0..running.len())
        .filter_map(|i| matched[i].map(|w| (i, w)))
        .collect();
    ListenerPlan { keep, add }
}

/// The command line's `--listen` (plain) and the configuration's listeners; with
/// neither, `127.0.0.1:8080`.
fn wanted_listeners(extra: Option<SocketAddr>, config: &Config) -> Vec<(SocketAddr, bool)> {
    let mut wanted: Vec<(SocketAddr, bool)> = extra.map(|a| (a, false)).into_iter().collect();
    wanted.extend(config.listeners.iter().map(|l| (l.address, l.tls)));
    if wanted.is_empty() {
        wanted.push((([127, 0, 0, 1], 8080).into(), false));
    }
    wanted
}

fn apps_dir(options: &Options, config: &Config) -> PathBuf {
    options
        .apps_dir
        .clone()
        .or_else(|| config.apps.dir.clone())
        .unwrap_or_else(|| "apps".into())
}

fn data_dir(options: &Options, config: &Config) -> PathBuf {
    options
        .data_dir
        .clone()
        .or_else(|| config.apps.data_dir.clone())
        .unwrap_or_else(|| "data".into())
}

fn acceptor(certs: &Arc<CertStore>) -> tokio_rustls::TlsAcceptor {
    tokio_rustls::TlsAcceptor::from(tls::server_config(certs.clone()))
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// The policy of each of [`wanted_listeners`], in its order: `[firewall]`'s rules, and
/// the listener's own rules and PROXY protocol for the configuration's listeners.
fn listener_policies(extra: Option<SocketAddr>, config: &Config) -> Vec<ListenerPolicy> {
    let base = ListenerPolicy {
        rules: Rules::new(&config.firewall.rules),
        proxy_protocol: false,
    };
    let mut policies: Vec<ListenerPolicy> = extra.map(|_| base.clone()).into_iter().collect();
    policies.extend(config.listeners.iter().map(|l| ListenerPolicy {
        rules: Rules::layered(&config.firewall.rules, &l.rules),
        proxy_protocol: l.proxy_protocol,
    }));
    if policies.is_empty() {
        policies.push(base);
    }
    policies
}

/// The certificates of a configuration's TLS sites, if it has a TLS listener. Checks
/// every pair (a mismatched key is an error naming the file).
pub fn certificates(config: &Config) -> anyhow::Result<Option<Arc<Certificates>>> {
    if !config.listeners.iter().any(|l| l.tls) {
        return Ok(None);
    }
    if let Some(acme) = &config.acme {
        Storage::create(&acme.storage)?;
    }
    Ok(Some(Certificates::load(&tls_sites(config))?))
}

/// Every pair is loaded and checked before anything is swapped; one bad key and the
/// certificates serving now stay.
fn load_certificates(sites: &[TlsSite], origin: &str) -> anyhow::Result<Arc<Certificates>> {
    Certificates::load(sites).map_err(|e| anyhow::anyhow!("{origin}: {e:#}"))
}

fn tls_sites(config: &Config) -> Vec<TlsSite> {
    config
        .sites
        .iter()
        .enumerate()
        .filter_map(|(i, site)| {
            let (cert, key, acme) = match site.tls.as_ref()? {
                TlsConfig::Files { cert, key } => (cert.clone(), key.clone(), None),
                // One file holds both, so a renewal is one rename.
                TlsConfig::Acme => {
                    let storage = &config.acme.as_ref()?.storage;
                    let file = Storage::cert(storage, &site.hosts.first()?.to_string());
                    (
                        file.clone(),
                        file,
                        Some(tls::Challenges::in_storage(storage)),
                    )
                }
            };
            Some(TlsSite {
                name: match site.hosts.first() {
                    Some(host) => format!("site[{i}] {host}"),
                    None => format!("site[{i}]"),
                },
                hosts: site.hosts.clone(),
                cert,
                key,
                acme,
            })
        })
        .collect()
}

/// The sites whose certificates come over ACME, with the settings to get them, if any.
fn acme_sites(config: &Config) -> Option<(AcmeConfig, Vec<AcmeSite>)> {
    let acme = config.acme.clone()?;
    let sites: Vec<AcmeSite> = config
        .sites
        .iter()
        .filter(|site| site.tls == Some(TlsConfig::Acme))
        .map(|site| AcmeSite {
            hosts: site.hosts.iter().map(ToString::to_string).collect(),
        })
        .collect();
    (!sites.is_empty()).then_some((acme, sites))
}

/// The orderer for `config`: `running` if it tends the same sites the same way, else a
/// new one (or none). The storage directory is made first, so the certificate watcher
/// has a directory to watch before the first certificate is there.
fn acme_for(config: &Config, running: Option<&Arc<Acme>>) -> anyhow::Result<Option<Arc<Acme>>> {
    let Some((acme, sites)) = acme_sites(config) else {
        return Ok(None);
    };
    if let Some(running) = running.filter(|r| r.serves(&acme, &sites)) {
        return Ok(Some(running.clone()));
    }
    let storage = Storage::create(&acme.storage)?;
    Ok(Some(Arc::new(Acme::start(acme, storage, sites))))
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
    }
}

/// Reloads the configuration file on SIGHUP and whenever it changes, until aborted.
/// A bad file is reported (every problem, with its key) and the running configuration
/// stays. (Certificate files reload on their own when they change.)
async fn reload_on_change(inner: Arc<Inner>, mut hup: Signal, changes: Option<ConfigWatch>) {
    let (_watcher, mut rx) = match changes {
        Some(ConfigWatch { watch, rx }) => (Some(watch), Some(rx)),
        None => (None, None),
    };
    loop {
        tokio::select! {
            _ = hup.recv() => tracing::info!("SIGHUP: reloading the configuration"),
            Some(()) = async { rx.as_mut()?.recv().await } => {
                tracing::info!("configuration file changed: reloading");
            }
        }
        let Some(path) = &inner.options.config_path else {
            tracing::info!("no --config file: nothing to reload");
            continue;
        };
        let applied = match Config::load(path) {
            Ok(config) => inner.apply(config).await,
            Err(e) => Err(e),
        };
        match applied {
            Ok(applied) => tracing::info!(
                changed = ?applied.changed,
                "{}: configuration reloaded",
                path.display()
            ),
            Err(e) => {
                for line in format!("{e:#}").lines() {
                    tracing::error!("reload failed, the running configuration stays: {line}");
                }
            }
        }
    }
}

/// Saves of wharf.toml, one message per settled change (see [`crate::fswatch`]).
struct ConfigWatch {
    watch: fswatch::Watch,
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl ConfigWatch {
    fn start(path: &Path) -> anyhow::Result<Self> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = fswatch::watch_file(path, move || {
            let _ = tx.send(());
            std::future::ready(())
        })?;
        Ok(Self { watch, rx })
    }
}

/// The listening line (tests and scripts read the port from it) and a table of apps.
fn print_startup(
    addrs: &[(SocketAddr, bool)],
    admin: Option<SocketAddr>,
    events: &[LoadEvent],
    database: &str,
) {
    let mut out = std::io::stdout().lock();
    for (addr, tls) in addrs {
        let _ = writeln!(out, "listening on {}://{addr}", scheme(*tls));
    }
    if let Some(admin) = admin {
        let _ = writeln!(out, "admin on http://{admin} ({})", admin::ENDPOINTS);
    }
    let addr = addrs[0].0;
    let mut rows = vec![["APP".to_string(), "URL".into(), "STATUS".into()]];
    for event in events {
        match event {
            LoadEvent::Loaded(app) => {
                let origin = match app.origin {
                    Origin::Cached => "cached",
                    Origin::Compiled => "compiled",
                };
                let status = format!("ready ({origin}, {})", app.tier.as_str());
                for route in &app.routes {
                    rows.push([
                        app.name.to_string(),
                        format!("http://{addr}{route}"),
                        status.clone(),
                    ]);
                }
            }
            LoadEvent::Failed(name, _) => {
                rows.push([name.clone(), "-".into(), "not loaded (see log)".into()])
            }
            LoadEvent::Removed(_) | LoadEvent::Unchanged => {}
        }
    }
    if rows.len() == 1 {
        let _ = writeln!(
            out,
            "no apps yet: drop NAME.wasm files into the apps directory"
        );
    } else {
        let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
        for [a, b, c] in rows {
            let _ = writeln!(out, "  {a:w0$}  {b:w1$}  {c}");
        }
    }
    let _ = writeln!(out, "database: {database}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listeners_are_matched_as_a_multiset_of_address_and_tls() {
        let zero = (addr("127.0.0.1:0"), false);
        let tls = (addr("127.0.0.1:0"), true);
        let fixed = (addr("127.0.0.1:8443"), true);
        // Two port 0 listeners, one kept and one added.
        assert_eq!(
            diff_listeners(&[zero], &[zero, zero]),
            ListenerPlan {
                keep: vec![(0, 0)],
                add: vec![1]
            }
        );
        // One of two port 0 listeners removed: the first is kept.
        assert_eq!(
            diff_listeners(&[zero, zero], &[zero]),
            ListenerPlan {
                keep: vec![(0, 0)],
                add: vec![]
            }
        );
        // The same address with TLS turned on is another listener.
        assert_eq!(
            diff_listeners(&[zero, fixed], &[tls, fixed]),
            ListenerPlan {
                keep: vec![(1, 1)],
                add: vec![0]
            }
        );
        // Order does not matter, and each kept listener says which entry it matched.
        assert_eq!(
            diff_listeners(&[zero, fixed], &[fixed, zero]),
            ListenerPlan {
                keep: vec![(0, 1), (1, 0)],
                add: vec![]
            }
        );
    }

    #[test]
    fn a_kept_listener_takes_the_policy_of_the_entry_it_matched() {
        let old = config(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n\
             [[listener]]\naddress = \"127.0.0.1:8443\"\n",
        );
        // Reordered, the fixed one now denying an address and reading PROXY headers,
        // and a third added with its own rule.
        let new = config(
            "[firewall]\ndeny = [\"192.0.2.1\"]\n\
             [[listener]]\naddress = \"127.0.0.1:8443\"\nproxy_protocol = true\n\
             deny = [\"192.0.2.2\"]\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nallow = [\"192.0.2.3\"]\n",
        );
        let running = wanted_listeners(None, &old);
        let wanted = wanted_listeners(None, &new);
        let plan = diff_listeners(&running, &wanted);
        let policies = listener_policies(None, &new);
        let ip = |s: &str| s.parse().unwrap();
        let fixed = &policies[plan.kept(1).unwrap()];
        assert!(fixed.proxy_protocol);
        assert!(!fixed.rules.admits(ip("192.0.2.1")));
        assert!(!fixed.rules.admits(ip("192.0.2.2")));
        let zero = &policies[plan.kept(0).unwrap()];
        assert!(!zero.proxy_protocol);
        assert!(!zero.rules.admits(ip("192.0.2.1")));
        assert!(zero.rules.admits(ip("192.0.2.2")));
        let added = &policies[plan.add[0]];
        assert!(added.rules.admits(ip("192.0.2.3")));
        assert!(!added.rules.admits(ip("192.0.2.4")));
    }

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn an_unchanged_configuration_changes_no_section() {
        let text = "[[listener]]\naddress = \"127.0.0.1:0\"\n[limits]\ndrain_timeout_ms = 5\n";
        assert_eq!(
            diff(&config(text), &config(text), &Options::default()),
            Applied::default()
        );
    }

    #[test]
    fn each_section_is_reported_on_its_own() {
        let options = Options::default();
        let base = config("");
        let changed = |text: &str| diff(&base, &config(text), &options);
        assert_eq!(
            changed("[[listener]]\naddress = \"127.0.0.1:0\"\n").changed,
            [Section::Listeners]
        );
        assert_eq!(
            changed("unknown_host = \"421\"\n").changed,
            [Section::Sites]
        );
        assert_eq!(
            changed("[limits]\nheader_read_timeout_ms = 5\n").changed,
            [Section::Limits]
        );
        assert_eq!(
            changed("[admin]\naddress = \"127.0.0.1:0\"\n").changed,
            [Section::Admin]
        );
        assert_eq!(
            changed("[apps]\nidle_instance_ttl_ms = 5\n"),
            Applied {
                changed: vec![Section::Apps],
                on_restart: vec![]
            }
        );
    }

    #[test]
    fn pools_and_trusted_proxies_change_the_upstreams_section_alone() {
        let options = Options::default();
        let pool = |address: &str, weight: u32| {
            config(&format!(
                "[[site]]\nhosts = ['a.example']\nroutes = [{{ path = '/', upstream = 'app' }}]\n\
                 [[upstream]]\nname = 'app'\n\
                 servers = [{{ address = '{address}', weight = {weight} }}]\n"
            ))
        };
        let base = pool("127.0.0.2:8080", 1);
        // Another spelling of the same server is the same pool.
        assert_eq!(
            diff(&base, &pool("http://127.0.0.2:8080/", 1), &options),
            Applied::default()
        );
        assert_eq!(
            diff(&base, &pool("127.0.0.2:8080", 2), &options).changed,
            [Section::Upstreams]
        );
        assert_eq!(
            diff(&base, &pool("127.0.0.3:8080", 1), &options).changed,
            [Section::Upstreams]
        );
        assert_eq!(
            diff(
                &config(""),
                &config("[firewall]\ntrusted_proxies = ['10.0.0.0/8']\n"),
                &options
            )
            .changed,
            [Section::Upstreams]
        );
        // The pools stay as they are when only a route to them moves.
        let moved = config(
            "[[site]]\nhosts = ['a.example']\nroutes = [{ path = '/app', upstream = 'app' }]\n\
             [[upstream]]\nname = 'app'\nservers = [{ address = '127.0.0.2:8080' }]\n",
        );
        assert_eq!(diff(&base, &moved, &options).changed, [Section::Sites]);
    }

    #[test]
    fn what_cannot_change_in_place_is_named_by_key() {
        let options = Options::default();
        let new = config(
            "[apps]\nmax_instances = 10\nmax_idle_instances = 5\ndir = \"elsewhere\"\n\
             tiered = false\ndata_dir = \"other\"\n[database]\nprimary = \"mysql://app@127.0.0.1:3306/app\"\n",
        );
        let applied = diff(&config(""), &new, &options);
        assert_eq!(applied.changed, [Section::Apps, Section::Database]);
        assert_eq!(
            applied.on_restart,
            [
                (Section::Apps, "apps.max_instances"),
                (Section::Apps, "apps.tiered"),
                (Section::Apps, "apps.dir"),
            ]
        );
        // The command line's directories win: the file's do not matter.
        let options = Options {
            apps_dir: Some("apps".into()),
            data_dir: Some("data".into()),
            ..Options::default()
        };
        let keys: Vec<_> = diff(&config(""), &new, &options)
            .on_restart
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        assert_eq!(keys, ["apps.max_instances", "apps.tiered"]);
    }

    #[test]
    fn the_command_line_listener_is_always_wanted() {
        let options = Options {
            listen: Some(addr("127.0.0.1:0")),
            ..Options::default()
        };
        // Adding a config listener next to --listen keeps --listen's.
        let applied = diff(
            &config(""),
            &config("[[listener]]\naddress = \"127.0.0.1:0\"\n"),
            &options,
        );
        assert_eq!(applied.changed, [Section::Listeners]);
        assert_eq!(
            wanted_listeners(None, &config("")),
            [(addr("127.0.0.1:8080"), false)]
        );
    }
}

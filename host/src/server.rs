//! `wharf serve`: binds the listeners, serves until SIGTERM (or Ctrl-C), and reloads
//! the configuration on SIGHUP or when wharf.toml changes.

use crate::config::Config;
use crate::gateway::{Gateway, Sites};
use crate::monitor::admin::Health;
use crate::net::tls::{self, CertStore, Certificates, TlsSite};
use crate::net::{Listener, Timeouts};
use crate::runtime::watch::SETTLE;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// The certificates of a configuration's TLS sites, if it has a TLS listener. Checks
/// every pair (a mismatched key is an error naming the file).
pub fn certificates(config: &Config) -> anyhow::Result<Option<Arc<Certificates>>> {
    if !config.listeners.iter().any(|l| l.tls) {
        return Ok(None);
    }
    Ok(Some(Certificates::load(&tls_sites(config))?))
}

fn tls_sites(config: &Config) -> Vec<TlsSite> {
    config
        .sites
        .iter()
        .enumerate()
        .filter_map(|(i, site)| {
            let tls = site.tls.as_ref()?;
            Some(TlsSite {
                name: format!(
                    "site[{i}] {}",
                    site.hosts
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
                hosts: site.hosts.iter().map(ToString::to_string).collect(),
                cert: tls.cert.clone(),
                key: tls.key.clone(),
            })
        })
        .collect()
}

/// Binds `extra` (the command line's `--listen`, plain) and the configuration's
/// listeners; with neither, `127.0.0.1:8080`.
pub async fn bind(
    extra: Option<SocketAddr>,
    config: &Config,
    certs: Option<&Arc<CertStore>>,
) -> anyhow::Result<Vec<Listener>> {
    let mut wanted: Vec<(SocketAddr, bool)> = extra.map(|a| (a, false)).into_iter().collect();
    wanted.extend(config.listeners.iter().map(|l| (l.address, l.tls)));
    if wanted.is_empty() {
        wanted.push(("127.0.0.1:8080".parse().unwrap(), false));
    }
    let acceptor = certs.map(|c| tokio_rustls::TlsAcceptor::from(tls::server_config(c.clone())));
    let mut listeners = Vec::new();
    for (address, is_tls) in wanted {
        let tcp = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        let tls = if is_tls { acceptor.clone() } else { None };
        listeners.push(Listener { tcp, tls });
    }
    Ok(listeners)
}

pub fn timeouts(config: &Config) -> Timeouts {
    Timeouts {
        header_read: config.limits.header_read_timeout,
        tls_handshake: config.limits.tls_handshake_timeout,
    }
}

/// Completes when serving should end: on SIGTERM or SIGINT `/readyz` turns 503 at
/// once, and the listeners keep accepting for `delay` more, so a balancer checking
/// readiness stops sending before connections are refused. A second signal cuts the
/// delay short.
pub async fn shutdown_after_drain_delay(health: Arc<Health>, delay: Duration) {
    shutdown_signal().await;
    health.start_draining();
    if delay.is_zero() {
        return;
    }
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "not ready any more: closing the listeners after the drain delay"
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown_signal() => {}
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
    }
}

/// Reloads `path` on SIGHUP and whenever the file changes, until the process ends.
/// A bad file is reported (every problem, with its key) and the running configuration
/// stays; a good one replaces the sites atomically, and the certificates when the TLS
/// sites changed (all of them are read and checked before anything is swapped).
/// Listeners, the apps directory, `[limits]`, `[database]` and `[admin]` are bound at
/// start: changing them is reported as needing a restart. (Certificate files reload on
/// their own when they change.)
pub fn reload_on_change(
    path: Option<PathBuf>,
    gateway: Arc<Gateway>,
    certs: Option<Arc<CertStore>>,
    running: Config,
    https_port: Option<u16>,
) {
    // Installed before returning: SIGHUP's default action would end the process.
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = path.as_deref().map(|path| watch_file(path, tx.clone()));
    if let (Some(Err(e)), Some(path)) = (&watcher, &path) {
        tracing::warn!("not watching {}: {e:#}; reload with SIGHUP", path.display());
    }
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut running = running;
        loop {
            tokio::select! {
                _ = hup.recv() => tracing::info!("SIGHUP: reloading the configuration"),
                Some(()) = rx.recv() => {
                    // One save is several events; let them settle into one reload.
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                    tracing::info!("configuration file changed: reloading");
                }
            }
            let Some(path) = &path else {
                tracing::info!("no --config file: nothing to reload");
                continue;
            };
            let next = Config::load(path).and_then(|config| {
                let sites = Sites::from_config(&config, https_port)?;
                // Every pair is loaded and checked before the swap; one bad key and the
                // certificates serving now stay.
                if let Some(store) = &certs {
                    let tls = tls_sites(&config);
                    if tls != store.sites() {
                        let new_certs = Certificates::load(&tls)
                            .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
                        store.replace(new_certs)?;
                        tracing::info!("{}: TLS sites reloaded", path.display());
                    }
                }
                Ok((config, sites))
            });
            match next {
                Ok((config, sites)) => {
                    if needs_restart(&running, &config) {
                        tracing::warn!(
                            "{}: listeners, [apps], [database], [limits] or [admin] changed; \
                             those take effect on restart",
                            path.display()
                        );
                    }
                    gateway.set_sites(sites);
                    running = config;
                    tracing::info!("{}: configuration reloaded", path.display());
                }
                Err(e) => {
                    for line in format!("{e:#}").lines() {
                        tracing::error!("reload failed, the running configuration stays: {line}");
                    }
                }
            }
        }
    });
}

fn needs_restart(old: &Config, new: &Config) -> bool {
    old.listeners != new.listeners
        || old.apps != new.apps
        || old.limits != new.limits
        || old.database != new.database
        || old.admin != new.admin
}

/// Sends a message whenever `path` is written, created or replaced (editors save by
/// renaming a new file into place, so the directory is watched, not the file).
fn watch_file(
    path: &Path,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let file = path.canonicalize()?;
    let dir = file
        .parent()
        .context("the file has no directory")?
        .to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| p == &file) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

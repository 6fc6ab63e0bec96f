//! Certificates reloaded when their files change, and the set serving now.

use super::table::Certificates;
use super::{Reloaded, TlsSite};
use crate::fswatch::{self, RecursiveMode};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

impl Certificates {
    /// Watches every certificate and key file and reloads a site when its files change,
    /// logging one line per outcome. Must be called inside a Tokio runtime; watching
    /// stops when the returned handle is dropped.
    ///
    /// The parent directories are watched, not the files: editors and `cp`/`mv` replace
    /// a file with a new inode, which a watch on the old file would never report, and
    /// certbot-style renewals swap a symlink in that directory.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<fswatch::Watch> {
        // Path as the watcher reports it -> (site, path as configured, for logs).
        let mut files: HashMap<PathBuf, Vec<(usize, PathBuf)>> = HashMap::new();
        let mut dirs = BTreeSet::new();
        for (index, site) in self.sites().iter().enumerate() {
            for path in [&site.cert, &site.key] {
                let (dir, watched) = fswatch::watch_target(path)?;
                let entry = files.entry(watched).or_default();
                if !entry.iter().any(|(i, _)| *i == index) {
                    entry.push((index, path.clone()));
                }
                dirs.insert(dir);
            }
        }
        let files = Arc::new(files);
        let dirs: Vec<_> = dirs
            .iter()
            .map(|dir| (dir.as_path(), RecursiveMode::NonRecursive))
            .collect();
        let certs = Arc::clone(self);
        let watched = files.clone();
        fswatch::watch(
            &dirs,
            move |path| watched.contains_key(path).then(|| path.to_path_buf()),
            move |changed| {
                let mut pending = BTreeMap::<usize, BTreeSet<PathBuf>>::new();
                for (index, path) in changed.iter().flat_map(|file| &files[file]) {
                    pending.entry(*index).or_default().insert(path.clone());
                }
                // Reading two small PEM files is too quick to be worth the blocking pool.
                for (index, changed) in pending {
                    certs.report_reload(index, &changed);
                }
                std::future::ready(())
            },
        )
    }

    /// Reloads one site and logs one line about it.
    fn report_reload(&self, index: usize, changed: &BTreeSet<PathBuf>) {
        let site = &self.sites()[index].name;
        let file = changed
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match self.reload_index(index) {
            Ok(Reloaded::Swapped) => {
                tracing::info!(site = %site, file = %file, "certificate reloaded")
            }
            Ok(Reloaded::Unchanged) => {
                tracing::debug!(site = %site, file = %file, "certificate unchanged")
            }
            Err(e) => tracing::warn!(
                site = %site,
                file = %file,
                "certificate not reloaded, the previous one keeps serving: {e:#}"
            ),
        }
    }
}

/// The running configuration's certificates. A reload that changes the TLS sites
/// (hosts, certificate or key paths) replaces the whole set; the new set's files are
/// watched from then on, the old set's no longer.
pub struct CertStore {
    current: ArcSwap<Certificates>,
    watch: std::sync::Mutex<fswatch::Watch>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.current.load().fmt(f)
    }
}

impl CertStore {
    /// Serves `certs` and watches their files. Must be called inside a Tokio runtime.
    pub fn new(certs: Arc<Certificates>) -> anyhow::Result<Arc<Self>> {
        let watch = certs.watch()?;
        Ok(Arc::new(Self {
            current: ArcSwap::new(certs),
            watch: std::sync::Mutex::new(watch),
        }))
    }

    /// The sites served now.
    pub fn sites(&self) -> Vec<TlsSite> {
        self.current.load().sites().to_vec()
    }

    /// When each site's certificate serving now expires.
    pub fn expiry(&self) -> Vec<super::Expiry> {
        self.current.load().expiry()
    }

    /// Serves `certs` from the next handshake on, watched by `watch` (from
    /// [`Certificates::watch`], made first: that is the part that can fail, and a reload
    /// does it before it changes anything). Connections already open keep the
    /// certificate they were made with.
    pub fn replace(&self, certs: Arc<Certificates>, watch: fswatch::Watch) {
        self.current.store(certs);
        *self.watch.lock().unwrap() = watch;
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().resolve(client_hello)
    }
}

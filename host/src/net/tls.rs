//! HTTPS building blocks: certificates chosen by SNI name and reloaded when their files
//! change, the rustls server configuration, and a handshake bounded in time.
//!
//! The crypto provider is always `ring`, passed explicitly: rustls' process-wide default
//! is chosen from crate features, and building a configuration panics if another crate
//! in the binary ever enables a second provider.

use anyhow::{Context, anyhow, bail, ensure};
use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::http::{HostPattern, HostTable};
use crate::runtime::watch::SETTLE;

/// One certificate and the names it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSite {
    /// Identifies the site in logs.
    pub name: String,
    /// Exact host names, or `*.example.com` for any single label under example.com.
    pub hosts: Vec<String>,
    /// PEM file: the leaf certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC; not encrypted).
    pub key: PathBuf,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// A new certificate now serves new handshakes.
    Swapped,
    /// The files hold the certificate already serving (e.g. only touched).
    Unchanged,
}

/// The certificates of every site, picked per handshake by the SNI name the client sent.
///
/// Selection: an exact host, then a `*.parent` wildcard, by the one host rule of
/// [`crate::http`] (a wildcard covers exactly one label, as browsers match wildcard
/// certificates). A client that sends no SNI (an IP address
/// URL) or an unknown name gets the **first site's** certificate: the first site is the
/// default, so order the configuration accordingly.
pub struct Certificates {
    sites: Vec<TlsSite>,
    /// Site index by host; fixed at load, as the sites are.
    hosts: HostTable<usize>,
    /// One key per site, in site order. Behind an `ArcSwap` so a reload replaces it
    /// atomically while handshakes read it without taking a lock.
    keys: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

impl fmt::Debug for Certificates {
    // Certificate bytes are noise in logs; the site names say enough.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field(
                "sites",
                &self.sites.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads and checks every site's certificate and key. Any unreadable or invalid file,
    /// or a key that does not belong to its certificate, fails the whole load with an
    /// error naming the file; an expired certificate only logs a warning (it still lets
    /// clients that accept it connect, and the operator sees why others do not).
    pub fn load(sites: &[TlsSite]) -> anyhow::Result<Arc<Self>> {
        ensure!(!sites.is_empty(), "no TLS sites configured");
        let mut hosts = HostTable::default();
        let mut names = BTreeSet::new();
        for (index, site) in sites.iter().enumerate() {
            ensure!(
                names.insert(site.name.as_str()),
                "two TLS sites are named {:?}",
                site.name
            );
            for host in &site.hosts {
                let pattern: HostPattern = host
                    .parse()
                    .with_context(|| format!("TLS site {:?}", site.name))?;
                if let Some(other) = hosts.insert(pattern, index) {
                    bail!(
                        "host {host:?} is listed by TLS sites {:?} and {:?}",
                        sites[other].name,
                        site.name
                    );
                }
            }
        }
        let keys = sites
            .iter()
            .map(|site| {
                let key = load_pair(site).with_context(|| format!("TLS site {:?}", site.name))?;
                warn_if_out_of_date(site, &key);
                Ok(key)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Arc::new(Self {
            sites: sites.to_vec(),
            hosts,
            keys: ArcSwap::from_pointee(keys),
        }))
    }

    /// The sites, in configuration order (the first is the default).
    pub fn sites(&self) -> &[TlsSite] {
        &self.sites
    }

    fn site_index(&self, server_name: Option<&str>) -> usize {
        server_name
            .and_then(|name| self.hosts.get(name))
            .map_or(0, |&index| index)
    }

    fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        self.keys.load()[self.site_index(server_name)].clone()
    }

    fn reload_index(&self, index: usize) -> anyhow::Result<Reloaded> {
        let site = &self.sites[index];
        let key = load_pair(site)?;
        // A key that matches an unchanged certificate is the same key pair, so comparing
        // the chains is enough to tell a touch from a renewal.
        if self.keys.load()[index].cert == key.cert {
            return Ok(Reloaded::Unchanged);
        }
        warn_if_out_of_date(site, &key);
        // rcu rather than store: two reloads of different sites at once must not
        // undo each other.
        self.keys.rcu(|keys| {
            let mut keys = Vec::clone(keys);
            keys[index] = key.clone();
            keys
        });
        Ok(Reloaded::Swapped)
    }

    /// Watches every certificate and key file and reloads a site when its files change,
    /// logging one line per outcome. Must be called inside a Tokio runtime; watching
    /// stops when the returned handle is dropped.
    ///
    /// The parent directories are watched, not the files: editors and `cp`/`mv` replace
    /// a file with a new inode, which a watch on the old file would never report, and
    /// certbot-style renewals swap a symlink in that directory.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<CertWatch> {
        // Path as the watcher reports it -> (site, path as configured, for logs).
        let mut files: HashMap<PathBuf, Vec<(usize, PathBuf)>> = HashMap::new();
        let mut dirs = BTreeSet::new();
        for (index, site) in self.sites.iter().enumerate() {
            for path in [&site.cert, &site.key] {
                let (dir, watched) = watch_target(path)?;
                let entry = files.entry(watched).or_default();
                if !entry.iter().any(|(i, _)| *i == index) {
                    entry.push((index, path.clone()));
                }
                dirs.insert(dir);
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, PathBuf)>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                match event {
                    // Our own reads show up as access events; only changes matter.
                    Ok(event) if event.kind.is_access() || event.kind.is_other() => {}
                    Ok(event) => {
                        for site in event.paths.iter().filter_map(|p| files.get(p)).flatten() {
                            let _ = tx.send(site.clone());
                        }
                    }
                    Err(e) => tracing::warn!("certificate watcher: {e}"),
                }
            })?;
        for dir in &dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("watching {}", dir.display()))?;
        }
        let certs = Arc::clone(self);
        let task = tokio::spawn(async move {
            while let Some((index, path)) = rx.recv().await {
                let mut pending = BTreeMap::from([(index, BTreeSet::from([path]))]);
                while let Ok(Some((index, path))) = tokio::time::timeout(SETTLE, rx.recv()).await {
                    pending.entry(index).or_default().insert(path);
                }
                // Reading two small PEM files is too quick to be worth the blocking pool.
                for (index, changed) in pending {
                    certs.report_reload(index, &changed);
                }
            }
        });
        Ok(CertWatch {
            _watcher: watcher,
            task,
        })
    }

    /// Reloads one site and logs one line about it.
    fn report_reload(&self, index: usize, changed: &BTreeSet<PathBuf>) {
        let site = &self.sites[index].name;
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

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.select(client_hello.server_name()))
    }
}

/// The running configuration's certificates. A reload that changes the TLS sites
/// (hosts, certificate or key paths) replaces the whole set; the new set's files are
/// watched from then on, the old set's no longer.
pub struct CertStore {
    current: ArcSwap<Certificates>,
    watch: std::sync::Mutex<CertWatch>,
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

    /// Serves `certs` from the next handshake on. Connections already open keep the
    /// certificate they were made with.
    pub fn replace(&self, certs: Arc<Certificates>) -> anyhow::Result<()> {
        let watch = certs.watch()?;
        self.current.store(certs);
        *self.watch.lock().unwrap() = watch;
        Ok(())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().resolve(client_hello)
    }
}

/// Keeps [`Certificates::watch`] running; dropping it stops watching.
pub struct CertWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CertWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The directory to watch for `path` (canonical, as the watcher reports paths under the
/// watched directory) and the path events for the file will carry.
fn watch_target(path: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} does not name a file", path.display()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = parent
        .canonicalize()
        .with_context(|| format!("watching {}", parent.display()))?;
    let watched = dir.join(name);
    Ok((dir, watched))
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Reads a site's certificate chain and key and checks that they belong together.
/// Every error names the file at fault.
fn load_pair(site: &TlsSite) -> anyhow::Result<Arc<CertifiedKey>> {
    let (cert_path, key_path) = (site.cert.display(), site.key.display());
    let cert_pem = std::fs::read(&site.cert)
        .map_err(|e| anyhow!("{cert_path}: cannot read the certificate file: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{cert_path}: invalid PEM: {e}"))?;
    ensure!(
        !chain.is_empty(),
        "{cert_path}: no certificate in the file (expected a BEGIN CERTIFICATE block)"
    );
    let key_pem = std::fs::read(&site.key)
        .map_err(|e| anyhow!("{key_path}: cannot read the key file: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "{key_path}: no private key in the file (expected an unencrypted \
             BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)"
        ),
        e => anyhow!("{key_path}: invalid PEM: {e}"),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow!("{key_path}: unusable private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public half, so there is nothing to
        // compare; ring's keys always can, so this is not expected in practice.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            bail!("{key_path}: the private key does not belong to the certificate in {cert_path}")
        }
        Err(e) => bail!("{cert_path}: invalid certificate: {e}"),
    }
    Ok(Arc::new(certified))
}

/// Serving an expired (or not yet valid) certificate is allowed, since refusing would
/// take the site down for clients that tolerate it, but the operator must hear of it.
fn warn_if_out_of_date(site: &TlsSite, key: &CertifiedKey) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&key.cert[0]) else {
        // keys_match has parsed it already; a certificate only x509-parser rejects is
        // not worth refusing over a warning.
        return;
    };
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    let file = site.cert.display();
    if now > validity.not_after {
        tracing::warn!(
            site = %site.name,
            %file,
            not_after = %validity.not_after,
            "certificate has expired; serving it anyway"
        );
    } else if now < validity.not_before {
        tracing::warn!(
            site = %site.name,
            %file,
            not_before = %validity.not_before,
            "certificate is not valid yet; serving it anyway"
        );
    }
}

/// The rustls configuration for every TLS listener: TLS 1.2 and 1.3, ALPN `h2` preferred
/// over `http/1.1`, certificates from `certs`, and session resumption both through
/// stateless tickets and rustls' default in-memory session cache (for TLS 1.2 clients
/// that resume by session id). 0-RTT stays off: early data can be replayed.
pub fn server_config(certs: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the ring provider implements TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        // Only a failing system RNG gets here; resumption then relies on the cache.
        Err(e) => tracing::warn!("TLS session tickets disabled: {e}"),
    }
    Arc::new(config)
}

/// Completes the TLS handshake on an accepted connection, or fails with `TimedOut` after
/// `timeout`. Call it in the connection's own task, never in the accept loop: a client
/// that opens a connection and stays silent must only cost its own task.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// The SNI name the client sent (lowercase), if any.
pub fn server_name<IO>(stream: &TlsStream<IO>) -> Option<&str> {
    stream.get_ref().1.server_name()
}

#[cfg(test)]
mod tests {
    use super::*;

    // What the tests ask of a certificate set; the server itself only resolves
    // handshakes and reloads sites by index.
    impl Certificates {
        /// The name of the site whose certificate a handshake with this SNI gets.
        fn site_for(&self, server_name: Option<&str>) -> &str {
            &self.sites[self.site_index(server_name)].name
        }

        /// Re-reads one site's files. On success the new certificate serves every later
        /// handshake; on error nothing changes and the previous certificate keeps serving.
        fn reload_site(&self, name: &str) -> anyhow::Result<Reloaded> {
            let index = self
                .sites
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| anyhow!("no TLS site named {name:?}"))?;
            self.reload_index(index)
        }
    }

    /// Whether ALPN chose HTTP/2 on this connection.
    fn negotiated_h2<IO>(stream: &TlsStream<IO>) -> bool {
        stream.get_ref().1.alpn_protocol() == Some(b"h2")
    }
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct TestCa {
        issuer: Issuer<'static, KeyPair>,
        der: CertificateDer<'static>,
    }

    fn test_ca() -> TestCa {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        TestCa {
            issuer: Issuer::new(params, key),
            der,
        }
    }

    /// A fresh leaf for `hosts`: (certificate PEM, key PEM, certificate DER).
    fn leaf(ca: &TestCa, hosts: &[&str]) -> (String, String, CertificateDer<'static>) {
        let params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    /// Replaces `path` the way deploy tools do: write elsewhere, rename into place.
    fn replace(path: &Path, contents: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    struct Fixture {
        dir: tempfile::TempDir,
        ca: TestCa,
        sites: Vec<TlsSite>,
        /// Leaf DER per site, in site order.
        ders: Vec<CertificateDer<'static>>,
    }

    impl Fixture {
        /// Sites "main" (default), "apps" (wildcard) and "api" (exact, under the wildcard).
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca = test_ca();
            let specs: [(&str, &[&str]); 3] = [
                ("main", &["example.test"]),
                ("apps", &["*.apps.test"]),
                ("api", &["api.apps.test"]),
            ];
            let mut sites = Vec::new();
            let mut ders = Vec::new();
            for (name, hosts) in specs {
                let (cert_pem, key_pem, der) = leaf(&ca, hosts);
                let cert = dir.path().join(format!("{name}.pem"));
                let key = dir.path().join(format!("{name}-key.pem"));
                std::fs::write(&cert, cert_pem).unwrap();
                std::fs::write(&key, key_pem).unwrap();
                sites.push(TlsSite {
                    name: name.into(),
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                    cert,
                    key,
                });
                ders.push(der);
            }
            Fixture {
                dir,
                ca,
                sites,
                ders,
            }
        }

        fn served(&self, certs: &Certificates, sni: Option<&str>) -> CertificateDer<'static> {
            certs.select(sni).cert[0].clone()
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first_site() {
        let f = Fixture::new();
        let certs = Certificates::load(&f.sites).unwrap();
        let cases = [
            (Some("example.test"), "main"),
            (Some("EXAMPLE.Test"), "main"),
            (Some("api.apps.test"), "api"),
            (Some("shop.apps.test"), "apps"),
            (Some("Shop.APPS.test"), "apps"),
            // A wildcard covers one label only.
            (Some("a.b.apps.test"), "main"),
            (Some("apps.test"), "main"),
            (Some("unknown.test"), "main"),
            (None, "main"),
        ];
        for (sni, site) in cases {
            assert_eq!(certs.site_for(sni), site, "{sni:?}");
            let index = f.sites.iter().position(|s| s.name == site).unwrap();
            assert_eq!(f.served(&certs, sni), f.ders[index], "{sni:?}");
        }
    }

    #[test]
    fn mismatched_key_is_rejected_naming_the_key_file() {
        let f = Fixture::new();
        let mut sites = f.sites.clone();
        sites[1].key = f.sites[0].key.clone();
        let e = format!("{:#}", Certificates::load(&sites).unwrap_err());
        assert!(e.contains(&f.sites[0].key.display().to_string()), "{e}");
        assert!(e.contains("does not belong"), "{e}");
        assert!(e.contains("\"apps\""), "{e}");
    }

    #[test]
    fn bad_files_are_named_with_the_reason() {
        let f = Fixture::new();
        let garbage = f.dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all\n").unwrap();
        let missing = f.dir.path().join("missing.pem");
        let (cert, key) = (f.sites[0].cert.as_path(), f.sites[0].key.as_path());
        let cases: [(&Path, &Path, &Path, &str); 5] = [
            (&missing, key, &missing, "cannot read"),
            (&garbage, key, &garbage, "no certificate"),
            // The key file holds no certificate: the usual swapped-arguments mistake.
            (key, key, key, "no certificate"),
            (cert, &garbage, &garbage, "no private key"),
            (cert, cert, cert, "no private key"),
        ];
        for (cert, key, named, reason) in cases {
            let site = TlsSite {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                ..f.sites[0].clone()
            };
            let e = format!("{:#}", Certificates::load(&[site]).unwrap_err());
            assert!(e.contains(&named.display().to_string()), "{e}");
            assert!(e.contains(reason), "{e}");
        }
    }

    #[test]
    fn host_lists_are_checked() {
        let f = Fixture::new();
        let mut duplicate = f.sites.clone();
        duplicate[2].hosts.push("Example.test".into());
        let e = Certificates::load(&duplicate).unwrap_err().to_string();
        assert!(e.contains("\"main\"") && e.contains("\"api\""), "{e}");
        for bad in ["*", "*.", "a.*.test", "**.test", ""] {
            let mut sites = f.sites.clone();
            sites[0].hosts = vec![bad.into()];
            assert!(Certificates::load(&sites).is_err(), "{bad:?}");
        }
        assert!(Certificates::load(&[]).is_err());
    }

    #[test]
    fn reload_swaps_a_good_pair() {
        let f = Fixture::new();
        let certs = Certificates::load(&f.sites).unwrap();
        assert_eq!(certs.reload_site("apps").unwrap(), Reloaded::Unchanged);
        let (cert_pem, key_pem, der) = leaf(&f.ca, &["*.apps.test"]);
        replace(&f.sites[1].cert, &cert_pem);
        replace(&f.sites[1].key, &key_pem);
        assert_eq!(certs.reload_site("apps").unwrap(), Reloaded::Swapped);
        assert_eq!(f.served(&certs, Some("x.apps.test")), der);
        // The other sites are untouched.
        assert_eq!(f.served(&certs, Some("example.test")), f.ders[0]);
        assert_eq!(f.served(&certs, Some("api.apps.test")), f.ders[2]);
        assert!(certs.reload_site("nope").is_err());
    }

    #[test]
    fn reload_of_a_bad_pair_keeps_the_old_certificate() {
        let f = Fixture::new();
        let certs = Certificates::load(&f.sites).unwrap();
        // Half a renewal: a new certificate with the old key.
        let (cert_pem, _, _) = leaf(&f.ca, &["*.apps.test"]);
        replace(&f.sites[1].cert, &cert_pem);
        let e = format!("{:#}", certs.reload_site("apps").unwrap_err());
        assert!(e.contains(&f.sites[1].key.display().to_string()), "{e}");
        assert_eq!(f.served(&certs, Some("x.apps.test")), f.ders[1]);
        // A truncated copy.
        replace(&f.sites[1].cert, "-----BEGIN CERTIFICATE-----\nMIIB");
        assert!(certs.reload_site("apps").is_err());
        assert_eq!(f.served(&certs, Some("x.apps.test")), f.ders[1]);
    }

    /// Polls until `check` holds, for at most five seconds (file events are async).
    async fn eventually(mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if check() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        check()
    }

    #[tokio::test]
    async fn watch_reloads_replaced_files_and_ignores_bad_ones() {
        let f = Fixture::new();
        let certs = Certificates::load(&f.sites).unwrap();
        let _watch = certs.watch().unwrap();

        // Two-step renewal, certificate then key, each renamed into place.
        let (cert_pem, key_pem, der) = leaf(&f.ca, &["example.test"]);
        replace(&f.sites[0].cert, &cert_pem);
        tokio::time::sleep(Duration::from_millis(20)).await;
        replace(&f.sites[0].key, &key_pem);
        assert!(eventually(|| f.served(&certs, None) == der).await);

        // A certificate whose key never arrives is refused; the renewed one stays.
        let (stray, _, _) = leaf(&f.ca, &["example.test"]);
        replace(&f.sites[0].cert, &stray);
        tokio::time::sleep(SETTLE * 4).await;
        assert_eq!(f.served(&certs, None), der);

        // In-place rewrite (plain `cp`) of another site.
        let (cert_pem, key_pem, der) = leaf(&f.ca, &["api.apps.test"]);
        std::fs::write(&f.sites[2].key, key_pem).unwrap();
        std::fs::write(&f.sites[2].cert, cert_pem).unwrap();
        assert!(eventually(|| f.served(&certs, Some("api.apps.test")) == der).await);
    }

    fn client(ca: &TestCa, version: &'static rustls::SupportedProtocolVersion) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    #[tokio::test]
    async fn handshake_serves_the_site_certificate_and_negotiates_h2() {
        let f = Fixture::new();
        let certs = Certificates::load(&f.sites).unwrap();
        let acceptor = TlsAcceptor::from(server_config(certs.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..4 {
                let (stream, _) = listener.accept().await.unwrap();
                let mut tls = handshake(&acceptor, stream, Duration::from_secs(5))
                    .await
                    .unwrap();
                seen.push((negotiated_h2(&tls), server_name(&tls).map(str::to_owned)));
                tls.write_all(b"ok").await.unwrap();
                tls.shutdown().await.unwrap();
            }
            seen
        });
        let cases = [
            ("example.test", 0, &rustls::version::TLS13),
            ("shop.apps.test", 1, &rustls::version::TLS13),
            ("api.apps.test", 2, &rustls::version::TLS13),
            ("example.test", 0, &rustls::version::TLS12),
        ];
        for (name, site, version) in cases {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client(&f.ca, version)));
            let stream = TcpStream::connect(addr).await.unwrap();
            let server_name = ServerName::try_from(name.to_string()).unwrap();
            // The client verifies the chain and the name, so success alone proves the
            // right certificate; comparing the bytes makes a failure easier to read.
            let mut tls = connector.connect(server_name, stream).await.unwrap();
            let (_, connection) = tls.get_ref();
            assert_eq!(connection.peer_certificates().unwrap()[0], f.ders[site]);
            assert_eq!(connection.alpn_protocol(), Some(&b"h2"[..]));
            assert_eq!(connection.protocol_version(), Some(version.version));
            let mut body = Vec::new();
            tls.read_to_end(&mut body).await.unwrap();
            assert_eq!(body, b"ok");
        }
        let seen = server.await.unwrap();
        for ((name, _, _), (h2, sni)) in cases.iter().zip(seen) {
            assert!(h2);
            assert_eq!(sni.as_deref(), Some(*name));
        }
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        let f = Fixture::new();
        let acceptor = TlsAcceptor::from(server_config(Certificates::load(&f.sites).unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let started = Instant::now();
        let e = handshake(&acceptor, stream, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

//! Certificates over ACME (RFC 8555) for the sites with `tls = "acme"`: obtained when
//! none is on disk, renewed at two thirds of their lifetime (or when the CA's renewal
//! information says), with a doubling wait after each failure.
//!
//! A new certificate is written to the storage directory and taken up from there by the
//! certificate watcher, as any certificate file that changes is: one way in, whether a
//! person or the orderer wrote it. Nodes that share the directory share everything:
//! the account, the certificates, the challenge answers, and a lock that lets one of
//! them order at a time. The others see the new file and serve it too.

mod order;
mod storage;

pub use storage::Storage;

use crate::config::{AcmeConfig, ChallengeKind};
use instant_acme::{Account, CertificateIdentifier};
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// The longest a valid certificate goes unlooked at: the CA's renewal information
/// can move the renewal earlier (a revocation, say).
const RECHECK: Duration = Duration::from_secs(6 * 3600);
/// How long a node waits for the one holding the lock to finish.
const LOCKED: Duration = Duration::from_secs(2);
/// An order that takes longer has failed.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// After the CA says an account or name is over its rate limit.
const RATE_LIMITED: Duration = Duration::from_secs(3600);

/// One site whose certificate comes over ACME.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeSite {
    /// Exact host names; the first one names the certificate file.
    pub hosts: Vec<String>,
}

/// Where one site's certificate is, as `/status.json` and `/metrics` report it.
#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    pub site: String,
    pub hosts: Vec<String>,
    /// `pending` (no certificate yet), `valid`, `ordering`, or `failing` (the last
    /// order failed; the current certificate keeps serving).
    pub state: &'static str,
    /// Of the certificate on disk, unix seconds.
    pub not_after: Option<i64>,
    pub renew_at: Option<i64>,
    /// When this node looks again (orders, if due).
    pub next_attempt: Option<i64>,
    /// Failed orders in a row.
    pub failures: u32,
    /// Orders this node completed since it started.
    pub orders: u64,
    pub last_error: Option<String>,
    /// The wait after the last failure.
    pub retry_in_ms: Option<u64>,
}

/// The orderer of one configuration's ACME sites; stops when dropped.
pub struct Acme {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    config: AcmeConfig,
    storage: Storage,
    sites: Vec<AcmeSite>,
    status: Mutex<Vec<Tended>>,
    wake: Notify,
}

/// A site's status and what the loop keeps for it.
struct Tended {
    status: SiteStatus,
    next: SystemTime,
    /// A renewal asked for (`POST /acme/renew`), kept until an order succeeds.
    renew: bool,
}

impl Acme {
    /// Starts tending `sites`; the first look is at once. Must be called inside a Tokio
    /// runtime.
    pub fn start(config: AcmeConfig, storage: Storage, sites: Vec<AcmeSite>) -> Self {
        let now = SystemTime::now();
        let status = sites
            .iter()
            .map(|site| Tended {
                status: SiteStatus {
                    site: site.hosts[0].clone(),
                    hosts: site.hosts.clone(),
                    state: "pending",
                    not_after: None,
                    renew_at: None,
                    next_attempt: Some(unix(now)),
                    failures: 0,
                    orders: 0,
                    last_error: None,
                    retry_in_ms: None,
                },
                next: now,
                renew: false,
            })
            .collect();
        let shared = Arc::new(Shared {
            config,
            storage,
            sites,
            status: Mutex::new(status),
            wake: Notify::new(),
        });
        let task = tokio::spawn(shared.clone().run());
        Self { shared, task }
    }

    /// Whether this orderer tends exactly these sites with these settings.
    pub fn serves(&self, config: &AcmeConfig, sites: &[AcmeSite]) -> bool {
        self.shared.config == *config && self.shared.sites == sites
    }

    pub fn status(&self) -> Vec<SiteStatus> {
        let tended = self.shared.status.lock().unwrap();
        tended.iter().map(|t| t.status.clone()).collect()
    }

    /// Orders a new certificate for every site now, whatever the one on disk.
    pub fn renew_all(&self) {
        for tended in self.shared.status.lock().unwrap().iter_mut() {
            tended.renew = true;
            tended.next = SystemTime::now();
        }
        self.shared.wake.notify_one();
    }
}

impl Drop for Acme {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    async fn run(self: Arc<Self>) {
        let mut account = None;
        loop {
            for index in 0..self.sites.len() {
                let due = self.status.lock().unwrap()[index].next <= SystemTime::now();
                if due {
                    self.tend(index, &mut account).await;
                }
            }
            let next = self.status.lock().unwrap().iter().map(|t| t.next).min();
            let wait = next
                .and_then(|next| next.duration_since(SystemTime::now()).ok())
                .unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Looks at one site's certificate and orders a new one if it is due.
    async fn tend(&self, index: usize, account: &mut Option<Account>) {
        let site = &self.sites[index];
        let renew = self.status.lock().unwrap()[index].renew;
        if !renew && let Some(held) = self.on_disk(site, account.as_ref()).await {
            self.update(index, |t| t.valid(&held, false));
            return;
        }
        let lock = match self.storage.try_lock() {
            Ok(Some(lock)) => lock,
            // Another node is ordering; its certificate may be the one this node needs.
            Ok(None) => {
                self.update(index, |t| t.next = SystemTime::now() + LOCKED);
                return;
            }
            Err(e) => return self.failed(index, e),
        };
        // Under the lock, the other node may just have renewed it.
        if !renew && let Some(held) = self.on_disk(site, account.as_ref()).await {
            self.update(index, |t| t.valid(&held, false));
            return;
        }
        self.update(index, |t| t.status.state = "ordering");
        let kind = self.config.challenge.unwrap_or(ChallengeKind::Http01);
        let ordered = tokio::time::timeout(ORDER_TIMEOUT, async {
            if account.is_none() {
                *account = Some(order::account(&self.config, &self.storage).await?);
            }
            let account = account.as_ref().expect("made above");
            order::order(account, &self.storage, kind, &site.hosts).await
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no certificate after {ORDER_TIMEOUT:?}")));
        let written = ordered.and_then(|pem| {
            let path = Storage::cert(self.storage.dir(), &site.hosts[0]);
            crate::cert::write_file(&path, &pem, 0o600)?;
            held(&pem)
        });
        drop(lock);
        if let Err(e) = &written
            && format!("{e:#}").contains("accountDoesNotExist")
        {
            // The CA no longer knows the account (a private CA started afresh):
            // the next attempt registers anew.
            *account = None;
            let _ = std::fs::remove_file(self.storage.account(&self.config.directory));
        }
        match written {
            Ok(held) => {
                tracing::info!(
                    site = %site.hosts[0],
                    not_after = held.not_after,
                    "ACME certificate obtained"
                );
                self.update(index, |t| t.valid(&held, true));
            }
            Err(e) => self.failed(index, e),
        }
    }

    /// The certificate on disk, if it covers the site's hosts and is not due for renewal.
    async fn on_disk(&self, site: &AcmeSite, account: Option<&Account>) -> Option<Held> {
        let pem = std::fs::read(Storage::cert(self.storage.dir(), &site.hosts[0])).ok()?;
        let mut held = held(&String::from_utf8_lossy(&pem)).ok()?;
        if !site.hosts.iter().all(|h| held.names.contains(h)) {
            return None;
        }
        if let Some(account) = account
            && let Some(at) = suggested_renewal(account, &held.leaf).await
        {
            held.renew_at = at;
        }
        (unix(SystemTime::now()) < held.renew_at).then_some(held)
    }

    fn failed(&self, index: usize, error: anyhow::Error) {
        let site = &self.sites[index].hosts[0];
        let error = format!("{error:#}");
        self.update(index, |t| {
            t.status.failures += 1;
            let doubled = self
                .config
                .retry_min
                .saturating_mul(1 << (t.status.failures - 1).min(20));
            let mut wait = doubled.min(self.config.retry_max);
            if error.contains("rateLimited") {
                wait = wait.max(RATE_LIMITED);
            }
            tracing::warn!(
                site = %site,
                failures = t.status.failures,
                retry_in_s = wait.as_secs_f64(),
                "ACME order failed; the current certificate keeps serving: {error}"
            );
            t.status.state = "failing";
            t.status.last_error = Some(error.clone());
            t.status.retry_in_ms = Some(wait.as_millis() as u64);
            t.next = SystemTime::now() + wait;
            t.status.next_attempt = Some(unix(t.next));
        });
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut Tended)) {
        change(&mut self.status.lock().unwrap()[index]);
    }
}

impl Tended {
    fn valid(&mut self, held: &Held, ordered: bool) {
        let status = &mut self.status;
        status.state = "valid";
        status.not_after = Some(held.not_after);
        status.renew_at = Some(held.renew_at);
        status.failures = 0;
        status.last_error = None;
        status.retry_in_ms = None;
        if ordered {
            status.orders += 1;
            self.renew = false;
        }
        let renew_at = UNIX_EPOCH + Duration::from_secs(held.renew_at.max(0) as u64);
        self.next = renew_at.min(SystemTime::now() + RECHECK);
        status.next_attempt = Some(unix(self.next));
    }
}

/// What wharf needs to know of a certificate it holds.
struct Held {
    leaf: CertificateDer<'static>,
    names: Vec<String>,
    not_after: i64,
    /// Two thirds into its lifetime, unless the CA suggests otherwise.
    renew_at: i64,
}

fn held(pem: &str) -> anyhow::Result<Held> {
    let key = crate::net::tls::parse_pem(pem.as_bytes())?;
    let leaf = key.cert[0].clone().into_owned();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)?;
    let validity = cert.validity();
    let (from, until) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(n) => Some(n.to_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Held {
        leaf,
        names,
        not_after: until,
        renew_at: from + (until - from) * 2 / 3,
    })
}

/// When the CA's renewal information (RFC 9773) says to renew: a random time in its
/// window, so that many clients do not renew at the same moment. `None` when the CA
/// does not offer it or cannot be reached.
async fn suggested_renewal(account: &Account, leaf: &CertificateDer<'_>) -> Option<i64> {
    let id = CertificateIdentifier::try_from(leaf).ok()?;
    let asked = tokio::time::timeout(Duration::from_secs(10), account.renewal_info(&id));
    let (info, _retry_after) = asked.await.ok()?.ok()?;
    let window = info.suggested_window;
    let (start, end) = (window.start.unix_timestamp(), window.end.unix_timestamp());
    Some(start + (fastrand::f64() * (end - start).max(0) as f64) as i64)
}

fn unix(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

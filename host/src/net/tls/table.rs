//! The certificate table: every site's certificate, and the one a handshake gets for
//! the SNI name it sent.

use super::load::{load_pair, not_after, warn_if_out_of_date};
use super::{ACME_TLS_ALPN, Reloaded, TlsSite};
use crate::http::HostTable;
use anyhow::{Context, bail, ensure};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// The certificates of every site, picked per handshake by the SNI name the client sent.
///
/// Selection: an exact host, then a `*.parent` wildcard, by the one host rule of
/// [`crate::http`] (a wildcard covers exactly one label, as browsers match wildcard
/// certificates). A client that sends no SNI (an IP address URL) or an unknown name gets the **first site's** certificate: the first site is the
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
                if let Some(other) = hosts.insert(host.clone(), index) {
                    bail!(
                        "host \"{host}\" is listed by TLS sites {:?} and {:?}",
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

    /// Each site's name and hosts with the unix time its certificate serving now
    /// expires at, for metrics and the status page.
    pub fn expiry(&self) -> Vec<Expiry> {
        let keys = self.keys.load();
        self.sites
            .iter()
            .zip(keys.iter())
            .filter_map(|(site, key)| {
                Some(Expiry {
                    // The site as the gateway names it: its first host.
                    site: site
                        .hosts
                        .first()
                        .map_or(site.name.clone(), ToString::to_string),
                    hosts: site.hosts.iter().map(ToString::to_string).collect(),
                    not_after: not_after(key)?,
                })
            })
            .collect()
    }

    pub(super) fn site_index(&self, server_name: Option<&str>) -> usize {
        server_name
            .and_then(|name| self.hosts.get(name))
            .map_or(0, |&index| index)
    }

    pub(super) fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        self.keys.load()[self.site_index(server_name)].clone()
    }

    pub(super) fn reload_index(&self, index: usize) -> anyhow::Result<Reloaded> {
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
}

/// When one site's certificate expires.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Expiry {
    pub site: String,
    pub hosts: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = client_hello.server_name();
        let mut alpn = client_hello.alpn().into_iter().flatten();
        // A TLS-ALPN-01 validation offers `acme-tls/1` alone; it gets the answer of
        // an ACME site's exact host, or no certificate (the handshake fails).
        if let (Some(ACME_TLS_ALPN), None) = (alpn.next(), alpn.next()) {
            let name = name?;
            let &index = self.hosts.get(name)?;
            return self.sites[index].acme.as_ref()?.tls_alpn01(name);
        }
        Some(self.select(name))
    }
}

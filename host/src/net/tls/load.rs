//! Reading a site's PEM files: the certificate chain, the private key, and the check
//! that they belong together.

use super::{TlsSite, provider};
use anyhow::{anyhow, bail, ensure};
use rustls::InconsistentKeys;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// Reads a site's certificate chain and key and checks that they belong together.
/// Every error names the file at fault.
pub(super) fn load_pair(site: &TlsSite) -> anyhow::Result<Arc<CertifiedKey>> {
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
        // compare; aws-lc-rs's keys always can, so this is not expected in practice.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            bail!("{key_path}: the private key does not belong to the certificate in {cert_path}")
        }
        Err(e) => bail!("{cert_path}: invalid certificate: {e}"),
    }
    Ok(Arc::new(certified))
}

/// When the leaf certificate of `key` stops being valid, as unix seconds; `None` if
/// x509-parser cannot read it.
pub(super) fn not_after(key: &CertifiedKey) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(key.cert.first()?).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Serving an expired (or not yet valid) certificate is allowed, since refusing would
/// take the site down for clients that tolerate it, but the operator must hear of it.
pub(super) fn warn_if_out_of_date(site: &TlsSite, key: &CertifiedKey) {
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

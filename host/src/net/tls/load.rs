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
/// Every error names the file at fault. An ACME site whose certificate has not been
/// obtained yet gets a self-signed stand-in until it has.
pub(super) fn load_pair(site: &TlsSite) -> anyhow::Result<Arc<CertifiedKey>> {
    let (cert_path, key_path) = (site.cert.display(), site.key.display());
    let cert_pem = match std::fs::read(&site.cert) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && site.acme.is_some() => {
            let names = site.hosts.iter().map(ToString::to_string).collect();
            tracing::info!(
                site = %site.name,
                "no certificate yet: a self-signed one serves until the ACME order completes"
            );
            return parse_pem(self_signed_pem(names, None)?.as_bytes());
        }
        read => read.map_err(|e| anyhow!("{cert_path}: cannot read the certificate file: {e}"))?,
    };
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

/// A certificate chain and its key from one PEM text (an ACME site's file holds both).
pub(crate) fn parse_pem(pem: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let certified = parse_pem_unmatched(pem)?;
    certified.keys_match()?;
    Ok(certified)
}

/// [`parse_pem`] without checking that the key is the certificate's: that check parses
/// the certificate as a client would, and refuses the critical acmeIdentifier extension
/// of a TLS-ALPN-01 answer, which wharf made itself.
pub(crate) fn parse_pem_unmatched(pem: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    ensure!(!chain.is_empty(), "no certificate in it");
    let key = PrivateKeyDer::from_pem_slice(pem)?;
    let signing_key = provider().key_provider.load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

/// A self-signed certificate for `names` and its key, as PEM; with `acme_digest`, it
/// carries the acmeIdentifier extension of a TLS-ALPN-01 answer (RFC 8737 §3).
pub(crate) fn self_signed_pem(
    names: Vec<String>,
    acme_digest: Option<&[u8]>,
) -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names)?;
    if let Some(digest) = acme_digest {
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    }
    let cert = params.self_signed(&key)?;
    Ok(cert.pem() + &key.serialize_pem())
}

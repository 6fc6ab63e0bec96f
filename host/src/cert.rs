//! `wharf cert dev`: certificates for local HTTPS development, signed by a local CA
//! that the developer trusts once, so every later certificate is trusted without
//! browser warnings.
//!
//! The CA lives in the output directory and is reused on every call: creating a new one
//! each time would make the developer trust it again.

use anyhow::{Context, anyhow, bail, ensure};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const CA_CERT_FILE: &str = "wharf-dev-ca.pem";
pub const CA_KEY_FILE: &str = "wharf-dev-ca-key.pem";

/// 825 days is the longest validity Apple platforms accept for a TLS server certificate,
/// counted from `notBefore`, so the backdated day is part of it.
const LEAF_VALIDITY: Duration = Duration::from_secs(825 * 24 * 60 * 60);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Certificates start a day in the past so a clock slightly behind still accepts them.
const BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);

const CA_NAME: &str = "wharf development CA";

/// The files [`dev`] wrote or reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCert {
    /// The CA certificate: what browsers and tools must trust.
    pub ca_cert: PathBuf,
    /// The CA private key (mode 0600).
    pub ca_key: PathBuf,
    /// Whether this call created the CA (so it still needs trusting) or reused it.
    pub ca_created: bool,
    /// The certificate for the hosts, `HOST.pem`.
    pub cert: PathBuf,
    /// Its private key, `HOST-key.pem` (mode 0600).
    pub key: PathBuf,
}

/// Issues a certificate valid for every name in `hosts` (DNS names, `*.parent`
/// wildcards, IP addresses; `localhost` and `127.0.0.1` only if listed), signed by the
/// development CA in `out_dir`, which is created on first use and reused afterwards.
/// The first host names the files; a `*` becomes `_wildcard` in the file name.
pub fn dev(hosts: &[String], out_dir: &Path) -> anyhow::Result<DevCert> {
    ensure!(
        !hosts.is_empty(),
        "name at least one host for the certificate"
    );
    for host in hosts {
        check_host(host)?;
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let ca_cert = out_dir.join(CA_CERT_FILE);
    let ca_key = out_dir.join(CA_KEY_FILE);
    let (issuer, ca_created) = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => (load_ca(&ca_cert, &ca_key)?, false),
        (false, false) => (create_ca(&ca_cert, &ca_key)?, true),
        // Never replace half a CA silently: the remaining file may be the one the
        // developer's machine already trusts.
        (present, _) => {
            let (have, lack) = match present {
                true => (&ca_cert, &ca_key),
                false => (&ca_key, &ca_cert),
            };
            bail!(
                "{} exists but {} does not: restore it, or delete {} to create a new CA \
                 (which must then be trusted again)",
                have.display(),
                lack.display(),
                have.display()
            );
        }
    };

    let mut params = CertificateParams::new(hosts.to_vec())
        .map_err(|e| anyhow!("invalid host list {hosts:?}: {e}"))?;
    params.distinguished_name.remove(DnType::CommonName);
    params
        .distinguished_name
        .push(DnType::CommonName, hosts[0].as_str());
    params
        .distinguished_name
        .push(DnType::OrganizationName, "wharf development certificate");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now - BACKDATE + LEAF_VALIDITY).into();
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let stem = file_stem(&hosts[0]);
    let cert_path = out_dir.join(format!("{stem}.pem"));
    let key_path = out_dir.join(format!("{stem}-key.pem"));
    // Key first: a server watching these files sees the pair complete once the
    // certificate (the file it is most likely to re-read on its own) lands.
    write_file(&key_path, &key.serialize_pem(), 0o600)?;
    write_file(&cert_path, &cert.pem(), 0o644)?;
    Ok(DevCert {
        ca_cert,
        ca_key,
        ca_created,
        cert: cert_path,
        key: key_path,
    })
}

/// How to make this machine's browsers and tools trust the development CA at `ca`.
pub fn trust_instructions(ca: &Path) -> String {
    let ca = std::path::absolute(ca).unwrap_or_else(|_| ca.to_path_buf());
    let ca = shell_quote(&ca.display().to_string());
    format!(
        "To trust the wharf development CA ({ca}), once per machine:

  Debian, Ubuntu:
    sudo cp {ca} /usr/local/share/ca-certificates/wharf-dev-ca.crt && sudo update-ca-certificates
  Fedora, RHEL:
    sudo cp {ca} /etc/pki/ca-trust/source/anchors/wharf-dev-ca.pem && sudo update-ca-trust
  macOS:
    sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}
  Chrome, Chromium on Linux (certutil is in libnss3-tools):
    certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n wharf-dev-ca -i {ca}
  Firefox (keeps its own list): Settings > Privacy & Security > Certificates >
    View Certificates > Authorities > Import, choose the file above and tick
    \"Trust this CA to identify websites\".
  curl:
    curl --cacert {ca} https://HOST:PORT/
  Node.js:
    NODE_EXTRA_CA_CERTS={ca} node ...

Keep {CA_KEY_FILE} private: whoever holds it can issue certificates this machine trusts.
"
    )
}

/// Accepts what a certificate can name: an IP address, a DNS name, or `*.` and a DNS name.
fn check_host(host: &str) -> anyhow::Result<()> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    DnsName::try_from(name)
        .map(|_| ())
        .map_err(|_| anyhow!("{host:?} is not a host name or an IP address"))
}

/// A file name for `host` that needs no quoting in a shell.
fn file_stem(host: &str) -> String {
    host.replace('*', "_wildcard")
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

fn create_ca(cert_path: &Path, key_path: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let mut params = CertificateParams::default();
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "wharf");
    // Path length 0: this CA signs leaf certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_file(key_path, &key.serialize_pem(), 0o600)?;
    write_file(cert_path, &cert.pem(), 0o644)?;
    Ok(Issuer::new(params, key))
}

fn load_ca(cert_path: &Path, key_path: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let (cert_name, key_name) = (cert_path.display(), key_path.display());
    let der = CertificateDer::from_pem_file(cert_path)
        .map_err(|e| anyhow!("{cert_name}: no readable CA certificate: {e}"))?;
    let key_pem = std::fs::read_to_string(key_path)
        .map_err(|e| anyhow!("{key_name}: cannot read the CA key: {e}"))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| anyhow!("{key_name}: not a usable PKCS#8 private key: {e}"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow!("{cert_name}: invalid certificate: {e}"))?;
    ensure!(
        parsed.public_key().raw == key.subject_public_key_info().as_slice(),
        "{key_name}: the key does not belong to the CA certificate {cert_name}"
    );
    // Leaves signed by an expired CA would fail to verify; say so now, not in a browser.
    ensure!(
        parsed.validity().is_valid(),
        "{cert_name}: the CA is not valid now (until {}): delete {cert_name} and {key_name} \
         to create a new one, then trust the new one",
        parsed.validity().not_after
    );
    // The issuer name and key identifier are taken from the existing certificate, so
    // new leaves chain to exactly the CA that was trusted.
    Issuer::from_ca_cert_der(&der, key).map_err(|e| anyhow!("{cert_name}: {e}"))
}

/// Writes through a temporary file and a rename, so a server watching `path` never
/// reads it half written; `mode` applies from creation, so a key is never readable by
/// others even briefly.
pub(crate) fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} does not name a file", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    // A leftover from an interrupted run may have other permissions; mode is only
    // applied when the file is created.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    });
    written
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow!("writing {}: {e}", path.display())
        })
}

/// Quotes `s` for a POSIX shell when it has characters the shell would interpret.
fn shell_quote(s: &str) -> String {
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    match plain && !s.is_empty() {
        true => s.to_string(),
        false => format!("'{}'", s.replace('\'', r"'\''")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use std::sync::Arc;

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|h| h.to_string()).collect()
    }

    /// Verifies the leaf at `cert` for each name, as a client trusting only `ca` would.
    fn verifies(ca: &Path, cert: &Path, name: &str) -> bool {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(ca).unwrap())
            .unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            crate::net::tls::provider(),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_file(cert).unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_leaf_chains_to_the_ca_for_its_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let made = dev(&hosts(&["app.test", "localhost", "127.0.0.1"]), &out).unwrap();
        assert!(made.ca_created);
        assert_eq!(made.ca_cert, out.join(CA_CERT_FILE));
        assert_eq!(made.ca_key, out.join(CA_KEY_FILE));
        assert_eq!(made.cert, out.join("app.test.pem"));
        assert_eq!(made.key, out.join("app.test-key.pem"));
        for name in ["app.test", "localhost", "127.0.0.1"] {
            assert!(verifies(&made.ca_cert, &made.cert, name), "{name}");
        }
        assert!(!verifies(&made.ca_cert, &made.cert, "other.test"));
        #[cfg(unix)]
        {
            assert_eq!(mode(&made.ca_key), 0o600);
            assert_eq!(mode(&made.key), 0o600);
        }
        // The pair is what the TLS listener accepts.
        let site = crate::net::tls::TlsSite {
            name: "dev".into(),
            hosts: vec!["app.test".parse().unwrap()],
            cert: made.cert.clone(),
            key: made.key.clone(),
            acme: None,
        };
        crate::net::tls::Certificates::load(&[site]).unwrap();
    }

    #[test]
    fn a_leaf_lives_no_longer_than_apple_platforms_accept() {
        let dir = tempfile::tempdir().unwrap();
        let made = dev(&hosts(&["app.test"]), dir.path()).unwrap();
        let pem = std::fs::read(&made.cert).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        let validity = cert.validity();
        let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert!(lifetime <= LEAF_VALIDITY.as_secs() as i64, "{lifetime} s");
    }

    #[test]
    fn a_second_call_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = dev(&hosts(&["app.test"]), dir.path()).unwrap();
        let ca_pem = std::fs::read(&first.ca_cert).unwrap();
        let ca_key = std::fs::read(&first.ca_key).unwrap();
        let second = dev(&hosts(&["*.apps.test"]), dir.path()).unwrap();
        assert!(!second.ca_created);
        assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca_pem);
        assert_eq!(std::fs::read(&second.ca_key).unwrap(), ca_key);
        assert_eq!(second.cert, dir.path().join("_wildcard.apps.test.pem"));
        assert!(verifies(&first.ca_cert, &second.cert, "shop.apps.test"));
        assert!(verifies(&first.ca_cert, &first.cert, "app.test"));
    }

    #[test]
    fn half_a_ca_and_bad_hosts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let made = dev(&hosts(&["app.test"]), dir.path()).unwrap();
        std::fs::remove_file(&made.ca_key).unwrap();
        let e = dev(&hosts(&["app.test"]), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(CA_KEY_FILE), "{e}");
        // The trusted CA certificate is left alone.
        assert!(made.ca_cert.exists());

        let other = tempfile::tempdir().unwrap();
        assert!(dev(&[], other.path()).is_err());
        assert!(dev(&hosts(&["bad host"]), other.path()).is_err());
        assert!(dev(&hosts(&["a.*.test"]), other.path()).is_err());
    }

    #[test]
    fn a_ca_key_that_does_not_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let made = dev(&hosts(&["app.test"]), dir.path()).unwrap();
        std::fs::copy(&made.key, &made.ca_key).unwrap();
        let e = dev(&hosts(&["app.test"]), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn instructions_name_the_ca_file() {
        let text = trust_instructions(Path::new("/tmp/my certs/wharf-dev-ca.pem"));
        assert!(text.contains("'/tmp/my certs/wharf-dev-ca.pem'"), "{text}");
        for needle in [
            "update-ca-certificates",
            "add-trusted-cert",
            "Firefox",
            "--cacert",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}

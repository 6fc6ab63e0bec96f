use super::*;
use crate::fswatch::SETTLE;
use anyhow::anyhow;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use tokio::net::TcpStream;

// What the tests ask of a certificate set; the server itself only resolves
// handshakes and reloads sites by index.
impl Certificates {
    /// The name of the site whose certificate a handshake with this SNI gets.
    fn site_for(&self, server_name: Option<&str>) -> &str {
        &self.sites()[self.site_index(server_name)].name
    }

    /// Re-reads one site's files. On success the new certificate serves every later
    /// handshake; on error nothing changes and the previous certificate keeps serving.
    fn reload_site(&self, name: &str) -> anyhow::Result<Reloaded> {
        let index = self
            .sites()
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
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
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
                hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
                cert,
                key,
                acme: None,
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
    duplicate[2].hosts.push("Example.test".parse().unwrap());
    let e = Certificates::load(&duplicate).unwrap_err().to_string();
    assert!(e.contains("\"main\"") && e.contains("\"api\""), "{e}");
    // What is a host pattern at all is crate::http's to say, and tested there.
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

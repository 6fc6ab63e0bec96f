//! HTTPS with real TLS clients: one listener serving two sites, each with its own
//! certificate chosen by SNI (made by `wharf cert dev`), h2 by ALPN, HTTP→HTTPS
//! redirects and HSTS, and certificates swapped while clients keep connecting.

use rustls::pki_types::{CertificateDer, pem::PemObject};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wharf_tests::{
    HttpClient, Wharf, apps_dir, https_get, poll_until_async, shared_cache_dir, wharf_bin,
};

const SECOND: Duration = Duration::from_secs(1);

/// `wharf cert dev --host ... --out dir`: returns (cert, key); the CA is `dir/wharf-dev-ca.pem`.
fn cert_dev(dir: &Path, hosts: &[&str]) -> (PathBuf, PathBuf) {
    let mut command = Command::new(wharf_bin());
    command.args(["cert", "dev", "--out"]).arg(dir);
    for host in hosts {
        command.args(["--host", host]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        dir.join(format!("{}.pem", hosts[0])),
        dir.join(format!("{}-key.pem", hosts[0])),
    )
}

fn der(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn start(config: &str, apps: &Path, dir: &Path) -> (Wharf, SocketAddr) {
    let path = dir.join("wharf.toml");
    std::fs::write(&path, config).unwrap();
    let envs = [("WHARF_CACHE_DIR", shared_cache_dir().into_os_string())];
    let envs: Vec<_> = envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let wharf = Wharf::start_with(apps, &envs, &["--config", path.to_str().unwrap()]);
    let https = *wharf
        .https
        .first()
        .unwrap_or_else(|| panic!("no HTTPS listener in {}", wharf.banner));
    (wharf, https)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_get_their_certificates_by_sni() {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    std::fs::write(public.join("index.html"), "foobar over https\n").unwrap();
    let (www_cert, www_key) = cert_dev(dir.path(), &["www.foobar.com", "foobar.com"]);
    let (api_cert, api_key) = cert_dev(dir.path(), &["api.test"]);
    let ca = dir.path().join("wharf-dev-ca.pem");
    let config = format!(
        r#"
[[listener]]
address = "127.0.0.1:0"
tls = true

[[site]]
hosts = ["www.foobar.com", "foobar.com"]
canonical_host = "www.foobar.com"
https_redirect = true
hsts_max_age = 600
root = "{public}"
apps = false
tls = {{ cert = "{www_cert}", key = "{www_key}" }}

[[site]]
hosts = ["api.test"]
tls = {{ cert = "{api_cert}", key = "{api_key}" }}
"#,
        public = public.display(),
        www_cert = www_cert.display(),
        www_key = www_key.display(),
        api_cert = api_cert.display(),
        api_key = api_key.display(),
    );
    let apps = apps_dir(&["hello"]);
    let (wharf, https) = start(&config, apps.path(), dir.path());

    let www = https_get(https, "www.foobar.com", None, &ca, "/")
        .await
        .unwrap();
    assert_eq!(
        (www.reply.status, www.reply.body.as_str()),
        (200, "foobar over https\n")
    );
    assert_eq!(
        www.certificate,
        der(&www_cert),
        "www got another site's certificate"
    );
    assert_eq!(www.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(www.reply.version, http::Version::HTTP_2);
    assert_eq!(
        www.reply.headers["strict-transport-security"],
        "max-age=600"
    );

    let api = https_get(https, "api.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(
        (api.reply.status, api.reply.body.as_str()),
        (200, "Hello from wharf!\n")
    );
    assert_eq!(api.certificate, der(&api_cert));
    assert!(!api.reply.headers.contains_key("strict-transport-security"));

    // The apex redirects to www, over HTTPS.
    let apex = https_get(https, "foobar.com", None, &ca, "/a?b=1")
        .await
        .unwrap();
    assert_eq!(apex.reply.status, 308);
    let port = https.port();
    assert_eq!(
        apex.reply.headers["location"],
        format!("https://www.foobar.com:{port}/a?b=1").as_str()
    );
    // A connection made for one site does not serve another's requests.
    let crossed = https_get(https, "www.foobar.com", Some("api.test"), &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(crossed.reply.status, 421);

    // Plain HTTP is redirected to HTTPS, and gets no HSTS.
    let plain = HttpClient::http1()
        .get_with(&wharf.url("/page?x=1"), &[("host", "www.foobar.com")])
        .await
        .unwrap();
    assert_eq!(plain.status, 308);
    assert_eq!(
        plain.headers["location"],
        format!("https://www.foobar.com:{port}/page?x=1").as_str()
    );
    assert!(!plain.headers.contains_key("strict-transport-security"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_swap_while_clients_connect() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_dev(dir.path(), &["a.test"]);
    let ca = dir.path().join("wharf-dev-ca.pem");
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = true\n\n[[site]]\nhosts = [\"a.test\"]\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n",
        cert.display(),
        key.display()
    );
    let apps = apps_dir(&["hello"]);
    let (wharf, https) = start(&config, apps.path(), dir.path());
    let first = der(&cert);

    // Clients keep making new connections through every swap.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, failed, done, ca) = (stop.clone(), failed.clone(), done.clone(), ca.clone());
        clients.push(tokio::spawn(async move {
            let deadline = Instant::now() + 60 * SECOND;
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                match https_get(https, "a.test", None, &ca, "/hello").await {
                    Ok(r) if r.reply.status == 200 => done.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("client failed: {:?}", other.err());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let served = |n| {
        let done = done.clone();
        async move {
            let start = done.load(Ordering::Relaxed);
            let what = format!("the clients make {n} more requests");
            poll_until_async(10 * SECOND, &what, async || {
                let served = done.load(Ordering::Relaxed) - start;
                (served >= n).then_some(()).ok_or(served)
            })
            .await
            .unwrap();
        }
    };
    served(20).await;

    // A good new pair (the same command again) swaps in.
    let mark = wharf.log_len();
    cert_dev(dir.path(), &["a.test"]);
    let second = der(&cert);
    assert_ne!(first, second);
    wharf
        .wait_for_log_since(mark, &["certificate reloaded"], 10 * SECOND)
        .unwrap();
    let now = https_get(https, "a.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(now.certificate, second);
    served(20).await;

    // A broken certificate file is reported, and the last good pair keeps serving.
    let second_pem = std::fs::read(&cert).unwrap();
    let mark = wharf.log_len();
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let line = wharf
        .wait_for_log_since(mark, &["a.test.pem"], 10 * SECOND)
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    served(20).await;

    // A key that does not match the certificate is reported, naming the key file.
    std::fs::write(&cert, &second_pem).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = cert_dev(other.path(), &["a.test"]);
    let mark = wharf.log_len();
    std::fs::copy(&other_key, &key).unwrap();
    let line = wharf
        .wait_for_log_since(mark, &["a.test-key.pem"], 10 * SECOND)
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    served(20).await;
    let still = https_get(https, "a.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(
        still.certificate, second,
        "a bad pair replaced the good one"
    );

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    assert_eq!(
        failed, 0,
        "{failed} handshakes or requests failed during the swaps"
    );
    assert!(done.load(Ordering::Relaxed) >= 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_tls_site_and_keeps_it_over_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = cert_dev(dir.path(), &["a.test"]);
    let (b_cert, b_key) = cert_dev(dir.path(), &["b.test"]);
    let ca = dir.path().join("wharf-dev-ca.pem");
    let site = |host: &str, cert: &Path, key: &Path| {
        format!(
            "[[site]]\nhosts = [\"{host}\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            cert.display(),
            key.display()
        )
    };
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = true\n";
    let apps = apps_dir(&["hello"]);
    let (wharf, https) = start(
        &format!("{listener}{}", site("a.test", &a_cert, &a_key)),
        apps.path(),
        dir.path(),
    );
    let config = dir.path().join("wharf.toml");
    let reload = |text: String, outcome: &'static str| {
        let mark = wharf.log_len();
        wharf_tests::replace_file(&config, text);
        wharf.signal("HUP");
        wharf
            .wait_for_log_since(mark, &[outcome], 10 * SECOND)
            .unwrap_or_else(|e| panic!("{e}: {:#?}", wharf.log()));
    };

    let a = https_get(https, "a.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(a.certificate, der(&a_cert));
    // b.test has no certificate yet: it gets a.test's, which the client refuses.
    assert!(
        https_get(https, "b.test", None, &ca, "/hello")
            .await
            .is_err()
    );

    let both = format!(
        "{listener}{}{}",
        site("a.test", &a_cert, &a_key),
        site("b.test", &b_cert, &b_key)
    );
    reload(both, "TLS sites reloaded");
    let b = https_get(https, "b.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!((b.reply.status, b.certificate), (200, der(&b_cert)));

    // A site whose key does not match its certificate fails the whole reload.
    let bad = format!(
        "{listener}{}{}",
        site("a.test", &a_cert, &a_key),
        site("b.test", &b_cert, &a_key)
    );
    reload(bad, "reload failed");
    let b = https_get(https, "b.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!((b.reply.status, b.certificate), (200, der(&b_cert)));
    let a = https_get(https, "a.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(a.certificate, der(&a_cert));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_see_the_scheme_the_request_came_with() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_dev(dir.path(), &["api.test"]);
    let ca = dir.path().join("wharf-dev-ca.pem");
    let config = format!(
        r#"
[[listener]]
address = "127.0.0.1:0"
tls = true

[[site]]
hosts = ["api.test"]
tls = {{ cert = "{cert}", key = "{key}" }}
"#,
        cert = cert.display(),
        key = key.display(),
    );
    let apps = apps_dir(&["raw"]);
    let (wharf, https) = start(&config, apps.path(), dir.path());
    let tls = https_get(https, "api.test", None, &ca, "/raw/url")
        .await
        .unwrap();
    assert_eq!(tls.reply.status, 200, "{}", tls.reply.body);
    assert!(
        tls.reply.body.starts_with("scheme=https "),
        "over TLS: {}",
        tls.reply.body
    );
    let plain = HttpClient::http1()
        .get_with(&wharf.url("/raw/url"), &[("host", "api.test")])
        .await
        .unwrap();
    assert!(
        plain.body.starts_with("scheme=http "),
        "over plain HTTP: {}",
        plain.body
    );
}

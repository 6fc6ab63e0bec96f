//! Certificates over ACME against a real ACME server (Pebble): HTTP-01 and TLS-ALPN-01
//! orders, a forced renewal while clients keep connecting, a CA that goes away and
//! comes back, a restart that orders nothing, and a load-balancer pair sharing one
//! storage directory, where one node orders and the other answers the challenge.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wharf_tests::browser::{chromium, rendered_fields};
use wharf_tests::pebble::Pebble;
use wharf_tests::{HttpClient, Wharf, apps_dir, free_ports, https_get, poll_until_async};

/// Long enough for an order against a local Pebble (a second or two) many times over.
const ORDER: Duration = Duration::from_secs(60);
const TWO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Renewals asked for until one is validated (see the balancer pair's test).
const MAX_RENEWALS: usize = 3;

/// A Pebble validating on two free ports, its issuing root, and a storage directory
/// for the nodes of one test.
struct Ca {
    pebble: Pebble,
    root: PathBuf,
    storage: tempfile::TempDir,
    /// Where the CA's validations arrive: the nodes' plain and TLS listeners.
    http: u16,
    tls: u16,
}

impl Ca {
    async fn start() -> Self {
        let ports = free_ports(2).unwrap();
        let pebble = Pebble::start(ports[0], ports[1]).await.unwrap();
        let root = pebble.root().await.unwrap();
        let storage = tempfile::tempdir().unwrap();
        Self {
            pebble,
            root,
            storage,
            http: ports[0],
            tls: ports[1],
        }
    }

    /// A node's config: plain and TLS listeners on `ip`, the admin API, `[acme]`
    /// against Pebble, and one ACME site for `hosts`; `more` goes in after `[acme]`.
    fn config(&self, ip: IpAddr, hosts: &[&str], more: &str) -> String {
        let (http, tls) = (self.http, self.tls);
        format!(
            r#"
[admin]
address = "{ip}:0"

[[listener]]
address = "{ip}:{http}"

[[listener]]
address = "{ip}:{tls}"
tls = true

[acme]
directory = "{directory}"
contact = "ops@example.com"
storage = "{storage}"
ca_bundle = "{ca}"
http_port = {http}
tls_port = {tls}
{more}

[[site]]
hosts = {hosts:?}
tls = "acme"
"#,
            directory = self.pebble.directory(),
            storage = self.storage.path().display(),
            ca = self.pebble.ca().display(),
        )
    }

    /// The certificate `addr` presents for `name`, once it chains to the root.
    async fn issued(&self, addr: SocketAddr, name: &str) -> Vec<u8> {
        let what = format!("{addr} serves a certificate for {name} from the CA");
        poll_until_async(ORDER, &what, async || {
            let reply = https_get(addr, name, None, &self.root, "/hello").await?;
            anyhow::Ok(reply.certificate)
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nPebble's log:\n{}", self.pebble.log()))
    }

    /// Where a node on `ip` serves HTTPS.
    fn https(&self, ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, self.tls)
    }
}

/// A node serving the hello app; the directory must outlive it.
fn start(config: &str, ip: IpAddr) -> (Wharf, tempfile::TempDir) {
    let apps = apps_dir(&["hello"]);
    (
        Wharf::builder(apps.path()).ip(ip).config(config).start(),
        apps,
    )
}

/// The node's ACME status of each site, from `/status.json`.
async fn statuses(wharf: &Wharf) -> Vec<serde_json::Value> {
    let admin = wharf.admin.expect("an admin listener");
    let reply = HttpClient::http1()
        .get(&format!("http://{admin}/status.json"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut status: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    serde_json::from_value(status["acme"].take()).unwrap()
}

/// The node's ACME status of its first site.
async fn status(wharf: &Wharf) -> serde_json::Value {
    statuses(wharf).await.swap_remove(0)
}

/// The node's ACME status once it holds a valid certificate.
async fn valid(wharf: &Wharf) -> serde_json::Value {
    poll_until_async(ORDER, "the node holds a valid certificate", async || {
        let site = status(wharf).await;
        if site["state"] == "valid" {
            Ok(site)
        } else {
            Err(site)
        }
    })
    .await
    .unwrap()
}

async fn renew(wharf: &Wharf) {
    let admin = wharf.admin.unwrap();
    let reply = HttpClient::http1()
        .send("POST", &format!("http://{admin}/acme/renew"), None, "")
        .await
        .unwrap();
    assert_eq!(reply.status, 202, "{}", reply.body);
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_certificate_is_ordered_renewed_under_load_kept_on_restart_and_through_an_outage() {
    let mut ca = Ca::start().await;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let hosts = ["www.example.com", "example.com"];
    // Short waits after a failure, to see them double within the test.
    let acme = "retry_min_ms = 300\nretry_max_ms = 1200";
    let config = ca.config(ip, &hosts, acme);
    let (mut wharf, _apps) = start(&config, ip);
    let https = ca.https(ip);

    // One certificate covers both names, proven by HTTP-01.
    let first = ca.issued(https, "www.example.com").await;
    let apex = https_get(https, "example.com", None, &ca.root, "/hello")
        .await
        .unwrap();
    assert_eq!(apex.certificate, first);
    assert_eq!(
        (apex.reply.status, apex.reply.body.as_str()),
        (200, "Hello from wharf!\n")
    );
    let site = status(&wharf).await;
    assert_eq!(
        (site["state"].as_str(), site["orders"].as_u64()),
        (Some("valid"), Some(1)),
        "{site}"
    );
    assert!(
        site["renew_at"].as_i64() < site["not_after"].as_i64(),
        "{site}"
    );
    // Keys stay with the owner.
    let accounts: Vec<_> = std::fs::read_dir(ca.storage.path().join("accounts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(mode(&accounts[0]), 0o600);
    assert_eq!(
        mode(&ca.storage.path().join("certs/www.example.com.pem")),
        0o600
    );
    // The challenge answers are gone once the order is done.
    let left = std::fs::read_dir(ca.storage.path().join("challenges/http-01"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "challenge files left behind");

    // A forced renewal while clients keep connecting: none of them fails, and the
    // new certificate is served without a restart.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = tokio::spawn({
        let (stop, ok, failed, root) = (stop.clone(), ok.clone(), failed.clone(), ca.root.clone());
        async move {
            let start = Instant::now();
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) || start.elapsed() > ORDER {
                    break;
                }
                match https_get(https, "www.example.com", None, &root, "/hello").await {
                    Ok(r) if r.reply.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    });
    renew(&wharf).await;
    let second = poll_until_async(ORDER, "the renewed certificate is served", async || {
        let served = https_get(https, "www.example.com", None, &ca.root, "/")
            .await?
            .certificate;
        if served == first {
            Err(anyhow::anyhow!("still the first"))
        } else {
            Ok(served)
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the renewal"
    );
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(status(&wharf).await["orders"].as_u64(), Some(2));

    // A restart finds the certificate on disk and orders nothing.
    wharf.restart();
    let site = valid(&wharf).await;
    assert_eq!(site["orders"].as_u64(), Some(0), "{site}");
    let served = https_get(https, "example.com", None, &ca.root, "/")
        .await
        .unwrap();
    assert_eq!(served.certificate, second);

    // The CA goes away: the orders fail, the waits between them double up to the
    // cap, and the current certificate keeps serving.
    ca.pebble.stop();
    renew(&wharf).await;
    let mut waits = Vec::new();
    poll_until_async(ORDER, "four failed orders", async || {
        let site = status(&wharf).await;
        let failures = site["failures"].as_u64().unwrap_or(0) as usize;
        if failures > waits.len() {
            waits.push(site["retry_in_ms"].as_u64());
        }
        if waits.len() >= 4 { Ok(()) } else { Err(site) }
    })
    .await
    .unwrap();
    assert_eq!(
        waits,
        [Some(300), Some(600), Some(1200), Some(1200)],
        "one look per failure is missed if this fails"
    );
    let site = status(&wharf).await;
    assert_eq!(site["state"], "failing", "{site}");
    assert!(
        site["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{site}"
    );
    let served = https_get(https, "www.example.com", None, &ca.root, "/")
        .await
        .unwrap();
    assert_eq!(
        served.certificate, second,
        "the current certificate stopped serving"
    );
    // The status page shows the failure, and the expiry of the certificate serving.
    let admin = wharf.admin.unwrap();
    let url = format!("http://{admin}/status");
    let out = chromium(
        admin.ip(),
        &["--virtual-time-budget=5000", "--dump-dom", &url],
    );
    let shown = rendered_fields(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        shown.get("acme.www.example.com.state"),
        Some(&"failing".into()),
        "{shown:?}"
    );
    assert!(
        shown["acme.www.example.com.failures"].as_u64() >= Some(4),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|(k, v)| k.starts_with("certificates.")
            && k.ends_with(".not_after")
            && *v == site["not_after"]),
        "no expiry of {} on the page: {shown:?}",
        site["not_after"]
    );
    let metrics = HttpClient::http1()
        .get(&format!("http://{}/metrics", wharf.admin.unwrap()))
        .await
        .unwrap()
        .body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wharf_acme_failures{") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // It comes back (a fresh Pebble, which knows no account and has a new root): the
    // node registers again and gets its certificate.
    ca.pebble.resume().await.unwrap();
    ca.root = ca.pebble.root().await.unwrap();
    let third = ca.issued(https, "www.example.com").await;
    assert_ne!(third, second);
    let site = status(&wharf).await;
    assert_eq!(
        (site["state"].as_str(), site["failures"].as_u64()),
        (Some("valid"), Some(0)),
        "{site}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_certificate_is_ordered_over_the_tls_listener_and_a_reload_adds_a_site() {
    let ca = Ca::start().await;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let first = ca.config(ip, &["api.example.net"], "challenge = \"tls-alpn-01\"");
    let (wharf, _apps) = start(&first, ip);
    let https = ca.https(ip);
    ca.issued(https, "api.example.net").await;
    let site = status(&wharf).await;
    assert_eq!(site["state"], "valid", "{site}");
    // No HTTP-01 answer was written, and the TLS-ALPN-01 certificate is gone.
    for kind in ["http-01", "tls-alpn-01"] {
        let dir = ca.storage.path().join("challenges").join(kind);
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "{kind}");
    }
    let served = https_get(https, "api.example.net", None, &ca.root, "/hello")
        .await
        .unwrap();
    assert_eq!(served.reply.status, 200);

    // A reload adds a second ACME site: it gets its certificate without a restart,
    // and the first site's, on disk, is not ordered again.
    let more =
        "challenge = \"tls-alpn-01\"\n\n[[site]]\nhosts = [\"cdn.example.net\"]\ntls = \"acme\"\n";
    let sites = ["api.example.net"];
    let second = ca.config(ip, &sites, more);
    let mark = wharf.log_len();
    wharf_tests::replace_file(wharf.config.as_ref().unwrap(), second);
    wharf.signal("HUP");
    wharf
        .wait_for_log_since(mark, &["configuration reloaded"], ORDER)
        .unwrap();
    ca.issued(https, "cdn.example.net").await;
    assert_eq!(
        ca.issued(https, "api.example.net").await,
        served.certificate
    );
    let orders: Vec<_> = statuses(&wharf)
        .await
        .iter()
        .map(|s| {
            (
                s["site"].as_str().unwrap().to_string(),
                s["orders"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        orders,
        [
            ("cdn.example.net".into(), Some(1)),
            ("api.example.net".into(), Some(0))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_pair_shares_one_certificate_and_either_node_answers_the_challenge() {
    let ca = Ca::start().await;
    let hosts = ["shop.example.org"];
    let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(TWO)];
    let (nodes, _apps): (Vec<Wharf>, Vec<_>) = ips
        .iter()
        .map(|&ip| {
            let config = ca.config(ip, &hosts, "");
            start(&config, ip)
        })
        .unzip();
    let https: Vec<SocketAddr> = ips.iter().map(|&ip| ca.https(ip)).collect();

    // Both start without a certificate; one orders it, the other takes it up.
    let first = ca.issued(https[0], hosts[0]).await;
    assert_eq!(ca.issued(https[1], hosts[0]).await, first);
    let mut orders = 0;
    for node in &nodes {
        let site = valid(node).await;
        orders += site["orders"].as_u64().unwrap();
    }
    assert_eq!(orders, 1, "the pair ordered the certificate more than once");

    // The name now resolves to the second node only: the first orders, the CA's
    // validation reaches the second, which answers from the shared storage.
    ca.pebble.point(hosts[0], TWO).await.unwrap();
    let logged = [nodes[0].log_len(), nodes[1].log_len()];
    let validated = |node: usize| {
        nodes[node].log()[logged[node]..]
            .iter()
            .any(|l| l.contains("path=/.well-known/acme-challenge/"))
    };
    // Even at PEBBLE_AUTHZREUSE=0 Pebble reuses the valid authorization about one
    // order in a hundred, and then nobody validates: such a renewal is asked again.
    for _ in 0..MAX_RENEWALS {
        let before = status(&nodes[0]).await["orders"].as_u64().unwrap();
        renew(&nodes[0]).await;
        poll_until_async(ORDER, "the first node's renewal succeeds", async || {
            let site = status(&nodes[0]).await;
            match site["orders"].as_u64() {
                Some(n) if n > before => Ok(()),
                _ => Err(site),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nPebble's log:\n{}", ca.pebble.log()));
        if validated(0) || validated(1) {
            break;
        }
    }
    assert!(
        validated(1),
        "the second node answered no validation request in {MAX_RENEWALS} renewals; \
         Pebble's log:\n{}",
        ca.pebble.log()
    );
    assert!(
        !validated(0),
        "the validation reached the first node, not the name's address"
    );
    for addr in &https {
        poll_until_async(
            ORDER,
            &format!("{addr} serves the renewed certificate"),
            async || {
                let served = https_get(*addr, hosts[0], None, &ca.root, "/")
                    .await?
                    .certificate;
                if served == first {
                    Err(anyhow::anyhow!("still the first"))
                } else {
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    }
}

//! wharf.toml changed under load: each section applies in place (SIGHUP), while a
//! request loop sees no failed request; listeners come and go, and a reload that
//! cannot bind its new listener changes nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_tests::{
    HttpClient, Wharf, apps_dir, https_get, raw_exchange, shared_cache_dir, wharf_bin,
};

const SECOND: Duration = Duration::from_secs(1);

/// Sends requests one after the other until stopped, at most a million or for a
/// minute, and keeps every one that failed or did not answer 200.
struct RequestLoop {
    stop: Arc<AtomicBool>,
    /// Requests answered so far, failed or not.
    answered: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl RequestLoop {
    fn start<F, Fut>(request: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<u16>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (stopped, count) = (stop.clone(), answered.clone());
        let task = tokio::spawn(async move {
            let deadline = Instant::now() + 60 * SECOND;
            let (mut ok, mut failures) = (0, Vec::new());
            for _ in 0..1_000_000 {
                if stopped.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                match request().await {
                    Ok(200) => ok += 1,
                    Ok(status) => failures.push(format!("status {status}")),
                    Err(e) => failures.push(format!("{e:#}")),
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            (ok, failures)
        });
        Self {
            stop,
            answered,
            task,
        }
    }

    /// GET `url` over one keep-alive HTTP/1.1 client.
    fn get(url: String) -> Self {
        let client = HttpClient::http1();
        Self::start(move || {
            let (client, url) = (client.clone(), url.clone());
            async move { Ok(client.get(&url).await?.status) }
        })
    }

    /// Stops the loop and returns its failures (after checking that it ran at all). A
    /// loop started just before is first given the time of one request (bounded) on a
    /// busy machine, so a late start is not taken for a failure.
    async fn failures(self) -> Vec<String> {
        let deadline = Instant::now() + 10 * SECOND;
        while self.answered.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failures) = self.task.await.unwrap();
        assert!(ok > 0, "the request loop served nothing: {failures:?}");
        eprintln!("{ok} requests served, {} failed", failures.len());
        failures
    }
}

/// A wharf serving `apps` with `config` (as `dir/wharf.toml`) besides `--listen`.
fn start(config: &str, apps: &Path, dir: &Path) -> Wharf {
    let path = dir.join("wharf.toml");
    std::fs::write(&path, config).unwrap();
    let cache = shared_cache_dir();
    Wharf::start_with(
        apps,
        &[("WHARF_CACHE_DIR", cache.as_os_str())],
        &["--config", path.to_str().unwrap()],
    )
}

/// Writes `config` as the running wharf's file, sends SIGHUP and waits for a log line
/// with `outcome` (a reload's last line); returns the log mark from before.
fn reload(wharf: &Wharf, dir: &Path, config: &str, outcome: &str) -> usize {
    let mark = wharf.log_len();
    wharf_tests::replace_file(&dir.join("wharf.toml"), config);
    wharf.signal("HUP");
    wharf
        .wait_for_log_since(mark, &[outcome], 10 * SECOND)
        .unwrap_or_else(|e| panic!("{e}: {:#?}", wharf.log()));
    mark
}

/// The address of the line `prefix` + address that wharf printed after `mark`.
fn printed_addr(wharf: &Wharf, mark: usize, prefix: &str) -> SocketAddr {
    let line = wharf
        .wait_for_log_since(mark, &[prefix], 10 * SECOND)
        .unwrap();
    let rest = &line[line.find(prefix).unwrap() + prefix.len()..];
    rest.split(' ').next().unwrap().parse().unwrap()
}

fn admin_addr(wharf: &Wharf) -> SocketAddr {
    let line = wharf
        .banner
        .lines()
        .find_map(|l| l.strip_prefix("admin on http://"))
        .unwrap_or_else(|| panic!("no admin line in:\n{}", wharf.banner));
    line.split(' ').next().unwrap().parse().unwrap()
}

/// The status line of GET `path` on a new connection to `addr`.
async fn status_line(addr: SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let reply = raw_exchange(addr, request.as_bytes()).await.unwrap();
    reply.lines().next().unwrap_or_default().to_string()
}

/// The status line of GET `path` on `stream`, which stays open for the next request.
async fn status_on(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let read = async {
        let (mut reply, mut buf) = (Vec::new(), [0; 1024]);
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed");
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().unwrap())
            });
            if length.is_some_and(|length| body.len() >= length) {
                return head.lines().next().unwrap().to_string();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no whole answer within 10 s")
}

async fn refuses_connections(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_limits_admin_and_apps_reload_in_place_with_zero_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let apps = apps_dir(&["hello"]);
    let admin = "[admin]\naddress = \"127.0.0.1:0\"\nallow = [\"127.0.0.0/8\"]\n";
    let wharf = start(admin, apps.path(), dir.path());
    let load = RequestLoop::get(wharf.url("/hello"));

    // [[site]]: a redirect route appears.
    let site = "[[site]]\nhosts = [\"a.test\"]\ndefault = true\n\
                routes = [{ path = \"/old\", redirect = \"/hello\" }]\n";
    reload(
        &wharf,
        dir.path(),
        &format!("{admin}{site}"),
        "configuration reloaded",
    );
    assert_eq!(
        status_line(wharf.addr, "/old").await,
        "HTTP/1.1 308 Permanent Redirect"
    );

    // [limits]: a new connection gets the new header read timeout (10 s before).
    let limits = "[limits]\nheader_read_timeout_ms = 300\n";
    reload(
        &wharf,
        dir.path(),
        &format!("{admin}{site}{limits}"),
        "configuration reloaded",
    );
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(wharf.addr).await.unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(10 * SECOND, slow.read_to_end(&mut rest))
        .await
        .expect("the half-sent request was never cut off")
        .ok();
    assert!(
        started.elapsed() < 5 * SECOND,
        "cut off after {:?}",
        started.elapsed()
    );

    // [admin] allow: 127.0.0.1 is not let in any more.
    let old_admin = admin_addr(&wharf);
    assert_eq!(status_line(old_admin, "/readyz").await, "HTTP/1.1 200 OK");
    // A connection kept open across the reload is held to the new list too.
    let mut kept = tokio::net::TcpStream::connect(old_admin).await.unwrap();
    assert_eq!(status_on(&mut kept, "/readyz").await, "HTTP/1.1 200 OK");
    let narrow = "[admin]\naddress = \"127.0.0.1:0\"\nallow = [\"127.0.0.2/32\"]\n";
    reload(
        &wharf,
        dir.path(),
        &format!("{narrow}{site}{limits}"),
        "configuration reloaded",
    );
    assert_eq!(
        status_line(old_admin, "/readyz").await,
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        status_on(&mut kept, "/readyz").await,
        "HTTP/1.1 403 Forbidden"
    );

    // [admin] address: the new one is bound and the old one closed.
    let moved = "[admin]\naddress = \"127.0.0.2:0\"\nallow = [\"127.0.0.0/8\"]\n";
    let mark = reload(
        &wharf,
        dir.path(),
        &format!("{moved}{site}{limits}"),
        "configuration reloaded",
    );
    let new_admin = printed_addr(&wharf, mark, "admin on http://");
    assert_eq!(new_admin.ip().to_string(), "127.0.0.2");
    assert_eq!(status_line(new_admin, "/healthz").await, "HTTP/1.1 200 OK");
    assert!(
        refuses_connections(old_admin).await,
        "the old admin listener still accepts"
    );

    // [apps]: the idle pool changes in place; the instance pool's size needs a restart.
    let apps_section =
        "[apps]\nidle_instance_ttl_ms = 100\nmax_instances = 500\nmax_idle_instances = 10\n";
    let mark = reload(
        &wharf,
        dir.path(),
        &format!("{moved}{site}{limits}{apps_section}"),
        "configuration reloaded",
    );
    let line = wharf
        .wait_for_log_since(mark, &["takes effect on restart"], 10 * SECOND)
        .unwrap();
    assert!(line.contains("apps.max_instances changed"), "{line}");
    assert!(!line.contains("idle"), "{line}");

    let failures = load.failures().await;
    assert!(
        failures.is_empty(),
        "failed requests during reloads: {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_added_by_reload_serves_and_a_removed_one_finishes_its_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let apps = apps_dir(&["hello", "api"]);
    let wharf = start("", apps.path(), dir.path());
    let load = RequestLoop::get(wharf.url("/hello"));

    // Added: bound and printed, and serving; the --listen one stays as it was.
    let mark = reload(
        &wharf,
        dir.path(),
        "[[listener]]\naddress = \"127.0.0.1:0\"\n",
        "configuration reloaded",
    );
    let added = printed_addr(&wharf, mark, "listening on http://");
    assert_ne!(added, wharf.addr);
    assert_eq!(status_line(added, "/hello").await, "HTTP/1.1 200 OK");

    // A request in flight on it: the head is read and the app waits for the body
    // (hyper sends 100 Continue only once the body is asked for).
    let mut in_flight = tokio::net::TcpStream::connect(added).await.unwrap();
    in_flight
        .write_all(
            b"POST /api/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 7\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(10 * SECOND, in_flight.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );

    // Removed: it refuses new connections, and the request in flight finishes.
    let mark = reload(&wharf, dir.path(), "", "configuration reloaded");
    wharf
        .wait_for_log_since(
            mark,
            &[&format!("stopped listening on http://{added}")],
            10 * SECOND,
        )
        .unwrap();
    assert!(
        refuses_connections(added).await,
        "the removed listener still accepts"
    );
    in_flight.write_all(b"[1,2,3]").await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(10 * SECOND, in_flight.read_to_end(&mut reply))
        .await
        .expect("the drained connection was not closed after its response")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("[1,2,3]"), "{reply}");

    let failures = load.failures().await;
    assert!(
        failures.is_empty(),
        "failed requests during reloads: {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_whose_new_listener_cannot_bind_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let apps = apps_dir(&["hello"]);
    let wharf = start("", apps.path(), dir.path());
    let load = RequestLoop::get(wharf.url("/hello"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();

    // Also a site change, which would make every request to an unknown host a 421.
    let config = format!(
        "unknown_host = \"421\"\n[[site]]\nhosts = [\"a.test\"]\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n"
    );
    let mark = reload(&wharf, dir.path(), &config, "reload failed");
    let line = wharf
        .wait_for_log_since(
            mark,
            &["reload failed", &format!("127.0.0.1:{port}")],
            SECOND,
        )
        .unwrap();
    assert!(line.contains("in use"), "{line}");
    assert!(
        !wharf.log()[mark..]
            .iter()
            .any(|l| l.starts_with("listening on")),
        "a listener was added: {:#?}",
        &wharf.log()[mark..]
    );
    assert_eq!(status_line(wharf.addr, "/hello").await, "HTTP/1.1 200 OK");

    let failures = load.failures().await;
    assert!(
        failures.is_empty(),
        "failed requests during reloads: {failures:?}"
    );
}

#[tokio::test]
async fn two_listeners_on_port_0_of_one_address_serve_on_two_ports() {
    let dir = tempfile::tempdir().unwrap();
    let apps = apps_dir(&["hello"]);
    // `--listen 127.0.0.1:0` is the other one.
    let wharf = start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n",
        apps.path(),
        dir.path(),
    );
    let addrs: Vec<SocketAddr> = wharf
        .banner
        .lines()
        .filter_map(|l| l.strip_prefix("listening on http://"))
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(addrs.len(), 2, "{}", wharf.banner);
    assert_ne!(addrs[0].port(), addrs[1].port());
    for addr in addrs {
        assert_eq!(status_line(addr, "/hello").await, "HTTP/1.1 200 OK");
    }
}

/// `wharf cert dev --host HOST --out dir`: returns (cert, key); the CA is
/// `dir/wharf-dev-ca.pem`.
fn cert_dev(dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let output = Command::new(wharf_bin())
        .args(["cert", "dev", "--host", host, "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        dir.join(format!("{host}.pem")),
        dir.join(format!("{host}-key.pem")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_and_sites_added_by_reload_serve_with_zero_failed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = cert_dev(dir.path(), "a.test");
    let (b_cert, b_key) = cert_dev(dir.path(), "b.test");
    let ca = dir.path().join("wharf-dev-ca.pem");
    let site = |host: &str, cert: &Path, key: &Path| {
        format!(
            "[[site]]\nhosts = [\"{host}\"]\ndefault = {}\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
            host == "a.test",
            cert.display(),
            key.display()
        )
    };
    let a = site("a.test", &a_cert, &a_key);
    let apps = apps_dir(&["hello"]);
    // A TLS site, but no TLS listener yet: nothing has read a certificate.
    let wharf = start(&a, apps.path(), dir.path());
    let plain = RequestLoop::get(wharf.url("/hello"));

    let tls = "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = true\n";
    let mark = reload(
        &wharf,
        dir.path(),
        &format!("{tls}{a}"),
        "configuration reloaded",
    );
    let https = printed_addr(&wharf, mark, "listening on https://");
    let reply = https_get(https, "a.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(reply.reply.status, 200);

    let ca_for_loop = ca.clone();
    let secure = RequestLoop::start(move || {
        let ca = ca_for_loop.clone();
        async move {
            Ok(https_get(https, "a.test", None, &ca, "/hello")
                .await?
                .reply
                .status)
        }
    });
    let b = site("b.test", &b_cert, &b_key);
    let mark = reload(
        &wharf,
        dir.path(),
        &format!("{tls}{a}{b}"),
        "configuration reloaded",
    );
    wharf
        .wait_for_log_since(mark, &["TLS sites reloaded"], SECOND)
        .unwrap();
    let reply = https_get(https, "b.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(reply.reply.status, 200);

    for (name, load) in [("https", secure), ("http", plain)] {
        let failures = load.failures().await;
        assert!(
            failures.is_empty(),
            "failed {name} requests during reloads: {failures:?}"
        );
    }
}

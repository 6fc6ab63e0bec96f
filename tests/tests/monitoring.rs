//! Monitoring, end to end: `/metrics` after real traffic through every kind of route,
//! checked by `promtool` and scraped by a real Prometheus; the JSON access log and
//! guest output with the request id; `/readyz` naming what is wrong.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use wharf_tests::browser::{chromium, rendered_fields};
use wharf_tests::{
    Backend, HttpClient, Wharf, apps_dir, needs, next_loopback_ip, poll_until_async,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// A node on its own loopback address: site `example.test` with the `hello` app, a
/// static root and an upstream `api` of `backend` (with `upstream`'s keys added); the
/// admin listener on port 0; `extra` before it all.
fn node(apps: &Path, root: &Path, backend: SocketAddr, extra: &str, upstream: &str) -> Wharf {
    let ip = next_loopback_ip();
    let config = format!(
        "{extra}\n\
         [[site]]\nhosts = [\"example.test\"]\ndefault = true\nroot = \"{root}\"\n\
         routes = [{{ path = \"/api\", upstream = \"api\" }}]\n\n\
         [admin]\naddress = \"{ip}:0\"\n\n\
         [[upstream]]\nname = \"api\"\nservers = [{{ address = \"{backend}\" }}]\n{upstream}\n",
        root = root.display(),
    );
    Wharf::builder(apps).ip(ip).config(&config).start()
}

async fn get(client: &HttpClient, url: &str) -> u16 {
    client
        .get_with(url, &[("host", "example.test")])
        .await
        .unwrap()
        .status
}

/// The text of `GET /metrics`.
async fn metrics(admin: SocketAddr) -> String {
    let reply = HttpClient::http1()
        .get(&format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// `/metrics` once every series of `expected` has its value (a request is counted as
/// its answer's last byte leaves, a moment after the client has it).
async fn wait_for_samples(admin: SocketAddr, expected: &[(String, f64)]) -> String {
    poll_until_async(DEADLINE, "the metrics to count every request", async || {
        let text = metrics(admin).await;
        let missing: Vec<_> = expected
            .iter()
            .filter(|(series, value)| sample(&text, series) != Some(*value))
            .map(|(series, value)| format!("{series} {value}"))
            .collect();
        match missing.is_empty() {
            true => Ok(text),
            false => Err(format!("{missing:#?}\nin\n{text}")),
        }
    })
    .await
    .unwrap()
}

/// Sends one request to each kind of route: the app (twice), a static file, a path
/// nothing serves, the upstream.
async fn traffic(wharf: &Wharf) {
    let client = HttpClient::http1();
    assert_eq!(get(&client, &wharf.url("/hello")).await, 200);
    assert_eq!(get(&client, &wharf.url("/hello")).await, 200);
    assert_eq!(get(&client, &wharf.url("/index.html")).await, 200);
    assert_eq!(get(&client, &wharf.url("/nothing-here")).await, 404);
    assert_eq!(get(&client, &wharf.url("/api/items")).await, 200);
}

fn static_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "<h1>hi</h1>").unwrap();
    root
}

#[tokio::test]
async fn metrics_count_each_route_by_status_class_and_pass_promtool() {
    let apps = apps_dir(&["hello"]);
    let root = static_root();
    let backend = Backend::start("api", next_loopback_ip());
    let wharf = node(apps.path(), root.path(), backend.addr(), "", "");
    let admin = wharf.admin.unwrap();
    traffic(&wharf).await;
    let site = r#"site="example.test""#;
    let expected = [
        (
            format!(r#"wharf_http_requests_total{{{site},kind="app",target="hello",class="2xx"}}"#),
            2.0,
        ),
        (
            format!(r#"wharf_http_requests_total{{{site},kind="static",target="/",class="2xx"}}"#),
            1.0,
        ),
        (
            format!(r#"wharf_http_requests_total{{{site},kind="static",target="/",class="4xx"}}"#),
            1.0,
        ),
        (
            format!(
                r#"wharf_http_requests_total{{{site},kind="upstream",target="api",class="2xx"}}"#
            ),
            1.0,
        ),
        (
            format!(
                r#"wharf_http_request_duration_seconds_count{{{site},kind="app",target="hello"}}"#
            ),
            2.0,
        ),
        (
            format!(r#"wharf_http_requests_in_flight{{{site},kind="app",target="hello"}}"#),
            0.0,
        ),
        (r#"wharf_wasm_executions_total{app="hello"}"#.into(), 2.0),
        (
            format!(
                r#"wharf_upstream_requests_total{{upstream="api",backend="http://{}",class="2xx"}}"#,
                backend.addr()
            ),
            1.0,
        ),
        (
            format!(
                r#"wharf_upstream_backend_up{{upstream="api",backend="http://{}"}}"#,
                backend.addr()
            ),
            1.0,
        ),
        ("wharf_ready".into(), 1.0),
    ];
    let text = wait_for_samples(admin, &expected).await;
    assert!(
        text.contains(r#"wharf_app_info{app="hello",version=""#),
        "{text}"
    );
    let connections = format!(
        r#"wharf_connections_total{{listener="{}",protocol="http"}}"#,
        wharf.addr
    );
    assert!(
        sample(&text, &connections).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(!text.contains("/hello\""), "no raw path is a label value");

    needs("promtool");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) runs");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_real_prometheus_scrapes_a_node_and_answers_promql() {
    needs("prometheus");
    let apps = apps_dir(&["hello"]);
    let root = static_root();
    let backend = Backend::start("api", next_loopback_ip());
    let wharf = node(apps.path(), root.path(), backend.addr(), "", "");
    let admin = wharf.admin.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wharf\n    \
             static_configs:\n      - targets: [\"{admin}\"]\n"
        ),
    )
    .unwrap();
    let prometheus = Prometheus::start(&config, dir.path());
    prometheus.ready().await;
    let client = HttpClient::http1();
    // Requests keep coming while Prometheus scrapes, so rates have something to show.
    let query = async |promql: &str| -> Option<f64> {
        let url = format!(
            "http://{}/api/v1/query?query={}",
            prometheus.addr,
            percent_encode(promql)
        );
        let reply = client.get(&url).await.ok()?;
        let body: Value = serde_json::from_str(&reply.body).ok()?;
        let value = body["data"]["result"][0]["value"][1].as_str()?;
        value.parse::<f64>().ok().filter(|v| v.is_finite())
    };
    let total = poll_until_async(
        Duration::from_secs(60),
        "Prometheus to see the requests",
        async || {
            assert_eq!(get(&client, &wharf.url("/hello")).await, 200);
            let promql = r#"sum(wharf_http_requests_total{kind="app",target="hello"})"#;
            match query(promql).await {
                Some(n) if n >= 3.0 => Ok(n),
                other => Err(other),
            }
        },
    )
    .await
    .unwrap();
    assert!(total >= 3.0);
    let p99 = poll_until_async(
        Duration::from_secs(60),
        "a p99 from the histogram",
        async || {
            assert_eq!(get(&client, &wharf.url("/hello")).await, 200);
            let promql = "histogram_quantile(0.99, sum by (le) \
                      (rate(wharf_http_request_duration_seconds_bucket{target=\"hello\"}[10s])))";
            query(promql).await.ok_or("no quantile yet")
        },
    )
    .await
    .unwrap();
    assert!(p99 > 0.0 && p99 <= 10.0, "p99 {p99} s");
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on a port of its own choosing on 127.0.0.1, killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(config: &Path, dir: &Path) -> Self {
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs");
        let pid = child.id();
        // Port 0: the port it got is read from the kernel's socket table.
        let addr = wharf_tests::poll_until(DEADLINE, "prometheus to listen", || {
            listening_port(pid).ok_or("not listening yet")
        })
        .unwrap();
        Self { child, addr }
    }

    async fn ready(&self) {
        let url = format!("http://{}/-/ready", self.addr);
        poll_until_async(
            DEADLINE,
            "prometheus to be ready",
            async || match HttpClient::http1().get(&url).await {
                Ok(reply) if reply.status == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await
        .unwrap();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TCP address process `pid` listens on, from `ss`.
fn listening_port(pid: u32) -> Option<SocketAddr> {
    let out = Command::new("ss").args(["-Hltnp"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|line| line.contains(&format!("pid={pid},")))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test]
async fn each_request_gets_one_json_access_line_and_guest_output_carries_its_id() {
    let apps = apps_dir(&["raw"]);
    let wharf = Wharf::builder(apps.path())
        .env("WHARF_LOG_FORMAT", "json")
        .start();
    let reply = HttpClient::http1()
        .get_with(
            &wharf.url("/raw/logged"),
            &[("user-agent", "monitoring-test")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    let line = wharf
        .wait_for_log(&[r#""target":"access""#, &id], DEADLINE)
        .unwrap();
    let line: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let fields = &line["fields"];
    assert_eq!(fields["request_id"], id.as_str(), "{line}");
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["path"], "/raw/logged");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["kind"], "app");
    assert_eq!(fields["target"], "raw");
    assert_eq!(fields["site"], "*");
    assert_eq!(fields["client"], "127.0.0.1");
    assert_eq!(
        fields["bytes_out"].as_u64(),
        Some(reply.body.len() as u64),
        "{line}"
    );
    assert!(
        fields["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{line}"
    );
    assert!(line["timestamp"].is_string(), "{line}");
    // The guest's own output, under the same id.
    let guest = wharf
        .wait_for_log(&["raw guest handled /raw/logged"], DEADLINE)
        .unwrap();
    let guest: Value = serde_json::from_str(&guest).unwrap();
    assert_eq!(guest["target"], "guest", "{guest}");
    assert_eq!(guest["fields"]["request_id"], id.as_str(), "{guest}");
    assert_eq!(guest["fields"]["app"], "raw", "{guest}");
}

#[tokio::test]
async fn the_access_log_can_be_turned_off_and_on_by_a_reload() {
    let apps = apps_dir(&["hello"]);
    let wharf = Wharf::builder(apps.path())
        .config("[log]\naccess = true\n")
        .start();
    let config = wharf.config.clone().unwrap();
    let client = HttpClient::http1();
    let get = async || {
        let reply = client.get(&wharf.url("/hello")).await.unwrap();
        reply.headers["x-request-id"].to_str().unwrap().to_owned()
    };
    let reload = |text: &str| {
        let since = wharf.log_len();
        wharf_tests::replace_file(&config, text);
        wharf.signal("HUP");
        wharf
            .wait_for_log_since(since, &["configuration reloaded", "Log"], DEADLINE)
            .unwrap();
    };
    let logged = get().await;
    wharf.wait_for_log(&["access", &logged], DEADLINE).unwrap();
    reload("[log]\naccess = false\n");
    let quiet = get().await;
    reload("[log]\naccess = true\n");
    // Lines leave in order: once the marker's is there, the quiet one would be too.
    let marker = get().await;
    wharf.wait_for_log(&["access", &marker], DEADLINE).unwrap();
    let lines = wharf.log();
    assert!(!lines.iter().any(|l| l.contains(&quiet)), "{lines:#?}");
}

#[tokio::test]
async fn a_request_id_from_a_trusted_proxy_is_kept_and_passed_to_the_backend() {
    let apps = apps_dir(&["hello"]);
    let root = static_root();
    let backend = Backend::start("api", next_loopback_ip());
    let wharf = node(
        apps.path(),
        root.path(),
        backend.addr(),
        "[firewall]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        "",
    );
    let client = HttpClient::http1();
    let headers = [("host", "example.test"), ("x-request-id", "lb-7f3a.42")];
    let reply = client
        .get_with(&wharf.url("/api/x"), &headers)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-request-id"], "lb-7f3a.42");
    let seen = backend.last_headers().unwrap();
    assert_eq!(seen["x-request-id"], "lb-7f3a.42");
    // An id unfit for a log line is replaced by wharf's own.
    let headers = [("host", "example.test"), ("x-request-id", "a b\"c")];
    let reply = client
        .get_with(&wharf.url("/api/x"), &headers)
        .await
        .unwrap();
    let own = reply.headers["x-request-id"].to_str().unwrap();
    assert_eq!(own.len(), 16, "{own}");
    assert_eq!(backend.last_headers().unwrap()["x-request-id"], own);
}

#[tokio::test]
async fn readyz_names_an_upstream_with_no_backend_up_and_an_app_that_failed_to_load() {
    let apps = apps_dir(&["hello"]);
    std::fs::write(apps.path().join("broken.wasm"), b"not wasm").unwrap();
    let root = static_root();
    // A port nobody listens on, checked actively: down after `fall` checks.
    let dead = std::net::TcpListener::bind((next_loopback_ip(), 0)).unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let checks = "health_check = { path = \"/\", interval_ms = 200, fall = 1, rise = 1 }";
    let wharf = node(apps.path(), root.path(), dead_addr, "", checks);
    let admin = wharf.admin.unwrap();
    let body = poll_until_async(DEADLINE, "/readyz to name both", async || {
        let reply = HttpClient::http1()
            .get(&format!("http://{admin}/readyz"))
            .await
            .unwrap();
        let named = reply.body.contains("upstream api has no backend up")
            && reply.body.contains("app broken failed to load");
        match (reply.status, named) {
            (503, true) => Ok(reply.body),
            _ => Err(reply.body),
        }
    })
    .await
    .unwrap();
    assert!(!body.contains("draining"), "{body}");
    // The app comes back: only the upstream is left.
    std::fs::copy(
        wharf_tests::guests().wasm("hello"),
        apps.path().join("broken.wasm"),
    )
    .unwrap();
    poll_until_async(DEADLINE, "/readyz to drop the app", async || {
        let reply = HttpClient::http1()
            .get(&format!("http://{admin}/readyz"))
            .await
            .unwrap();
        match reply.body.contains("app broken") {
            false => Ok(()),
            true => Err(reply.body),
        }
    })
    .await
    .unwrap();
    let text = metrics(admin).await;
    assert_eq!(sample(&text, "wharf_ready"), Some(0.0), "{text}");
}

/// What the page must show for `status`, by `data-field`.
fn expected_fields(status: &Value) -> Vec<(String, Value)> {
    let mut want = vec![
        (
            "node.version".to_string(),
            status["node"]["version"].clone(),
        ),
        ("node.ready".into(), status["node"]["ready"].clone()),
    ];
    for key in ["denied", "rate_limited", "connections_refused"] {
        want.push((format!("firewall.{key}"), status["firewall"][key].clone()));
    }
    for app in status["apps"].as_array().unwrap() {
        let name = app["name"].as_str().unwrap();
        for key in ["version", "tier", "errors", "p50_ms", "p99_ms"] {
            want.push((format!("apps.{name}.{key}"), app[key].clone()));
        }
    }
    for pool in status["upstreams"].as_array().unwrap() {
        let name = pool["name"].as_str().unwrap();
        for server in pool["servers"].as_array().unwrap() {
            let address = server["address"].as_str().unwrap();
            for key in ["state", "in_flight", "ejections"] {
                want.push((
                    format!("upstreams.{name}.{address}.{key}"),
                    server[key].clone(),
                ));
            }
        }
    }
    want
}

#[tokio::test]
async fn the_status_page_in_chromium_shows_what_status_json_says_for_a_balancer() {
    let app_apps = apps_dir(&["raw"]);
    let nodes = [
        Wharf::builder(app_apps.path()).start(),
        Wharf::builder(app_apps.path()).start(),
    ];
    let lb_apps = apps_dir(&["hello"]);
    let ip = next_loopback_ip();
    let config = format!(
        "[[site]]\nhosts = [\"lb.test\"]\ndefault = true\n\
         routes = [{{ path = \"/raw\", upstream = \"app\" }}]\n\n\
         [admin]\naddress = \"{ip}:0\"\n\n\
         [[upstream]]\nname = \"app\"\nservers = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n",
        nodes[0].addr, nodes[1].addr
    );
    let lb = Wharf::builder(lb_apps.path())
        .ip(ip)
        .config(&config)
        .start();
    let admin = lb.admin.unwrap();
    let client = HttpClient::http1();
    for _ in 0..10 {
        assert_eq!(client.status(&lb.url("/hello")).await, 200);
        assert_eq!(client.status(&lb.url("/raw/x")).await, 200);
    }
    let status_json = async || -> Value {
        let reply = client
            .get(&format!("http://{admin}/status.json"))
            .await
            .unwrap();
        serde_json::from_str(&reply.body).unwrap()
    };
    // Every request recorded (the last byte leaves a moment after the client has it).
    poll_until_async(
        DEADLINE,
        "status.json to count the app's requests",
        async || {
            let status = status_json().await;
            let servers = status["upstreams"][0]["servers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match status["apps"][0]["p99_ms"].is_number() && servers.len() == 2 {
                true => Ok(()),
                false => Err(status),
            }
        },
    )
    .await
    .unwrap();
    let before = status_json().await;
    let url = format!("http://{admin}/status");
    let out = chromium(
        admin.ip(),
        &["--virtual-time-budget=5000", "--dump-dom", &url],
    );
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let after = status_json().await;
    assert!(
        dom.contains(r#"data-rendered="1""#),
        "the page did not render:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = rendered_fields(&dom);
    let (want_before, want_after) = (expected_fields(&before), expected_fields(&after));
    assert!(want_before.len() >= 2 + 3 + 5 + 6, "{before}");
    for ((field, was), (_, is)) in want_before.iter().zip(&want_after) {
        let got = shown
            .get(field)
            .unwrap_or_else(|| panic!("{field} not on the page:\n{dom}"));
        // Read between the two fetches, it shows one of them.
        assert!(
            got == was || got == is,
            "{field}: page {got}, status.json {was} then {is}"
        );
    }
    assert_eq!(shown["apps.hello.version"], before["apps"][0]["version"]);
    let artifacts = wharf_tests::repo_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let out = chromium(
        admin.ip(),
        &[
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
            &format!("--screenshot={}", shot.display()),
            &url,
        ],
    );
    assert!(
        shot.metadata().is_ok_and(|m| m.len() > 10_000),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("status page screenshot: {}", shot.display());
}

#[test]
fn the_example_alerting_rules_pass_promtool_and_their_unit_tests() {
    needs("promtool");
    let script = wharf_tests::repo_root().join("examples/monitoring/check.sh");
    let out = Command::new(&script).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS") && text.contains("PASS"), "{text}");
}

#[tokio::test]
async fn tls_handshakes_are_counted_by_outcome_and_certificates_by_expiry() {
    let apps = apps_dir(&["hello"]);
    let dir = tempfile::tempdir().unwrap();
    let files = wharf::cert::dev(&["tls.test".into()], dir.path()).unwrap();
    let ip = next_loopback_ip();
    let config = format!(
        "[admin]\naddress = \"{ip}:0\"\n\n\
         [[listener]]\naddress = \"{ip}:0\"\ntls = true\n\n\
         [[site]]\nhosts = [\"tls.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        files.cert.display(),
        files.key.display()
    );
    let wharf = Wharf::builder(apps.path()).ip(ip).config(&config).start();
    let (to, ca) = (wharf.https[0], dir.path().join("wharf-dev-ca.pem"));
    let served = wharf_tests::https_get(to, "tls.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(served.reply.status, 200);
    // Plain HTTP to the TLS port: not a ClientHello.
    let _ = wharf_tests::raw_exchange(to, b"GET / HTTP/1.1\r\nhost: tls.test\r\n\r\n").await;
    let listener = format!(r#"listener="{to}""#);
    let expected = [
        (
            format!("wharf_tls_handshakes_total{{{listener},protocol=\"https\"}}"),
            1.0,
        ),
        (
            format!("wharf_tls_handshake_failures_total{{{listener},reason=\"protocol\"}}"),
            1.0,
        ),
        (
            format!("wharf_connections_total{{{listener},protocol=\"https\"}}"),
            2.0,
        ),
    ];
    let text = wait_for_samples(wharf.admin.unwrap(), &expected).await;
    let expiry = sample(
        &text,
        r#"wharf_tls_certificate_expiry_timestamp_seconds{site="tls.test"}"#,
    )
    .unwrap_or_else(|| panic!("no expiry in\n{text}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let days = (expiry - now) / 86_400.0;
    // `wharf cert dev` leaves live 825 days.
    assert!((820.0..=826.0).contains(&days), "{days} days");
}

#[tokio::test]
async fn guest_traps_are_counted_by_kind() {
    let apps = apps_dir(&["misbehave"]);
    std::fs::write(
        apps.path().join("misbehave.toml"),
        "timeout_ms = 500\nmax_memory_mb = 32\n",
    )
    .unwrap();
    let ip = next_loopback_ip();
    let wharf = Wharf::builder(apps.path())
        .ip(ip)
        .config(&format!("[admin]\naddress = \"{ip}:0\"\n"))
        .start();
    let client = HttpClient::http1();
    for (path, status) in [
        ("/misbehave/ok", 200),
        ("/misbehave/trap", 500),
        ("/misbehave/oom", 500),
        ("/misbehave/loop", 504),
    ] {
        assert_eq!(client.status(&wharf.url(path)).await, status, "{path}");
    }
    let app = r#"app="misbehave""#;
    let expected = [
        (format!("wharf_wasm_executions_total{{{app}}}"), 4.0),
        (
            format!(r#"wharf_wasm_traps_total{{{app},kind="trap"}}"#),
            1.0,
        ),
        (
            format!(r#"wharf_wasm_traps_total{{{app},kind="memory"}}"#),
            1.0,
        ),
        (
            format!(r#"wharf_wasm_traps_total{{{app},kind="deadline"}}"#),
            1.0,
        ),
        (
            r#"wharf_http_requests_total{site="*",kind="app",target="misbehave",class="5xx"}"#
                .to_string(),
            3.0,
        ),
    ];
    wait_for_samples(wharf.admin.unwrap(), &expected).await;
}

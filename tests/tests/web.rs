//! The web server role over plain HTTP: sites chosen by Host, redirects, static files
//! (ranges, conditional requests, precompressed and compressed bodies, every path
//! traversal vector), and the process lifecycle (SIGTERM drain, SIGHUP reload).

use std::path::Path;
use std::time::{Duration, Instant};
use wharf_tests::{HttpClient, Wharf, apps_dir, poll_until_async, raw_exchange, shared_cache_dir};

const SECOND: Duration = Duration::from_secs(1);
const CANARY: &str = "canary-secret-7f3a";

/// A site tree: `public/` (the root) and a secret beside it that must never be served.
fn site_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("public");
    std::fs::create_dir_all(public.join("docs")).unwrap();
    std::fs::write(dir.path().join("secret.txt"), CANARY).unwrap();
    std::fs::write(public.join("index.html"), "<h1>foobar home</h1>\n").unwrap();
    std::fs::write(public.join("docs/index.html"), "<h1>docs</h1>\n").unwrap();
    let text: String = (0..400)
        .map(|i| format!("line {i} of the style sheet\n"))
        .collect();
    std::fs::write(public.join("site.css"), &text).unwrap();
    std::fs::write(public.join("digits.txt"), "0123456789").unwrap();
    std::fs::write(public.join("app.js"), "console.log('plain');\n").unwrap();
    std::fs::write(public.join("app.js.br"), b"brotli bytes").unwrap();
    std::fs::write(public.join("app.js.gz"), b"gzip bytes").unwrap();
    std::os::unix::fs::symlink("../secret.txt", public.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("..", public.join("up")).unwrap();
    dir
}

fn start_with_config(apps: &Path, config: &str) -> (Wharf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.toml");
    std::fs::write(&path, config).unwrap();
    let envs = [("WHARF_CACHE_DIR", shared_cache_dir().into_os_string())];
    let envs: Vec<_> = envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let wharf = Wharf::start_with(apps, &envs, &["--config", path.to_str().unwrap()]);
    (wharf, dir)
}

fn two_sites(root: &Path) -> String {
    format!(
        r#"
[[site]]
hosts = ["www.foobar.com", "foobar.com"]
canonical_host = "www.foobar.com"
root = "{root}"
cache_control = "public, max-age=60"
apps = false
routes = [
    {{ path = "/api", app = "api" }},
    {{ path = "/old", redirect = "https://blog.foobar.com/new", status = 301 }},
]

[[site]]
hosts = ["apps.test", "*.apps.test"]
default = true
"#,
        root = root.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_by_host_with_redirects() {
    let tree = site_tree();
    let apps = apps_dir(&["hello", "api"]);
    let (wharf, _config) = start_with_config(apps.path(), &two_sites(&tree.path().join("public")));
    let c = HttpClient::http1();
    let get = |host: &'static str, path: &str| {
        let url = wharf.url(path);
        let c = c.clone();
        async move { c.get_with(&url, &[("host", host)]).await.unwrap() }
    };

    let home = get("www.foobar.com", "/").await;
    assert_eq!(
        (home.status, home.body.as_str()),
        (200, "<h1>foobar home</h1>\n")
    );
    // The site routes /api to the app, and does not serve the other apps.
    assert_eq!(get("www.foobar.com", "/api/books/2").await.status, 200);
    assert_eq!(get("www.foobar.com", "/hello").await.status, 404);
    // Apex to www, keeping path and query.
    let apex = get("foobar.com", "/docs/?page=2").await;
    assert_eq!(apex.status, 308);
    assert_eq!(
        apex.headers["location"],
        "http://www.foobar.com/docs/?page=2"
    );
    // A redirect route appends the rest of the path.
    let old = get("www.foobar.com", "/old/post/7").await;
    assert_eq!(old.status, 301);
    assert_eq!(
        old.headers["location"],
        "https://blog.foobar.com/new/post/7"
    );
    // Hosts are matched without case or port; wildcards one label deep.
    let hello = get("APPS.test:8080", "/hello").await;
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "Hello from wharf!\n")
    );
    assert_eq!(get("x.apps.test", "/hello").await.status, 200);
    // Unknown hosts go to the default site.
    assert_eq!(get("elsewhere.test", "/hello").await.status, 200);
    assert_eq!(get("elsewhere.test", "/").await.status, 404);

    // HTTP/1.1 without Host, or with two, is a 400.
    let none = raw_exchange(wharf.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(none.unwrap().starts_with("HTTP/1.1 400"));
    let two = b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n";
    assert!(
        raw_exchange(wharf.addr, two)
            .await
            .unwrap()
            .starts_with("HTTP/1.1 400")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files() {
    let tree = site_tree();
    let apps = apps_dir(&[]);
    let (wharf, _config) = start_with_config(apps.path(), &two_sites(&tree.path().join("public")));
    let c = HttpClient::http1();
    let url = |path: &str| wharf.url(path);
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("host".to_string(), "www.foobar.com".to_string())];
        all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (c, url) = (c.clone(), url(path));
        async move {
            let all: Vec<(&str, &str)> =
                all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            c.get_with(&url, &all).await.unwrap()
        }
    };

    let css = get("/site.css", &[]).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.headers["content-type"], "text/css");
    assert_eq!(css.headers["cache-control"], "public, max-age=60");
    let etag = css.headers["etag"].to_str().unwrap().to_string();
    let modified = css.headers["last-modified"].to_str().unwrap().to_string();
    assert_eq!(get("/docs/", &[]).await.body, "<h1>docs</h1>\n");

    // Ranges.
    let part = get("/digits.txt", &[("range", "bytes=2-4")]).await;
    assert_eq!((part.status, part.body.as_str()), (206, "234"));
    assert_eq!(part.headers["content-range"], "bytes 2-4/10");
    let beyond = get("/digits.txt", &[("range", "bytes=50-60")]).await;
    assert_eq!(beyond.status, 416);

    // Conditional requests.
    assert_eq!(
        get("/site.css", &[("if-none-match", &etag)]).await.status,
        304
    );
    assert_eq!(
        get("/site.css", &[("if-modified-since", &modified)])
            .await
            .status,
        304
    );
    assert_eq!(
        get("/site.css", &[("if-none-match", "\"other\"")])
            .await
            .status,
        200
    );

    // Precompressed siblings, by what the client accepts.
    let br = get("/app.js", &[("accept-encoding", "br, gzip")]).await;
    assert_eq!(
        (
            br.headers["content-encoding"].to_str().unwrap(),
            br.body.as_str()
        ),
        ("br", "brotli bytes")
    );
    let gz = get("/app.js", &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        (
            gz.headers["content-encoding"].to_str().unwrap(),
            gz.body.as_str()
        ),
        ("gzip", "gzip bytes")
    );
    let plain = get("/app.js", &[]).await;
    assert!(!plain.headers.contains_key("content-encoding"));
    assert_eq!(plain.body, "console.log('plain');\n");
    // Text without a sibling is compressed on the fly.
    let squeezed = get("/site.css", &[("accept-encoding", "gzip")]).await;
    assert_eq!(squeezed.headers["content-encoding"], "gzip");

    // HEAD has headers and no body; other methods are refused.
    let head = c
        .request("HEAD", &url("/site.css"), &[("host", "www.foobar.com")], "")
        .await
        .unwrap();
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let post = c
        .request(
            "POST",
            &url("/site.css"),
            &[("host", "www.foobar.com")],
            "x",
        )
        .await
        .unwrap();
    assert_eq!(post.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_outside_the_root_is_served() {
    let tree = site_tree();
    let apps = apps_dir(&[]);
    let (wharf, _config) = start_with_config(apps.path(), &two_sites(&tree.path().join("public")));
    let secret = tree.path().join("secret.txt");
    for target in [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/secret.txt%00.html",
        "/%c0%ae%c0%ae/secret.txt",
        "/%e0%80%ae%e0%80%ae/secret.txt",
        &format!("/{}", secret.display()),
        &format!("//{}", secret.display()),
        "/link.txt",
        "/up/secret.txt",
    ] {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: www.foobar.com\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(wharf.addr, request.as_bytes()).await.unwrap();
        let status = reply.split(' ').nth(1).unwrap_or("");
        assert!(
            status == "404" || status == "400",
            "{target} answered {status}: {reply}"
        );
        assert!(
            !reply.contains(CANARY),
            "{target} leaked the canary: {reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish() {
    let apps = apps_dir(&["misbehave"]);
    let config = "[limits]\ndrain_timeout_ms = 10000\n[admin]\naddress = \"127.0.0.1:0\"\n";
    let (mut wharf, _config) = start_with_config(apps.path(), config);
    let admin = admin_addr(&wharf);
    assert_eq!(
        admin_get(admin, "127.0.0.1", "/readyz").await,
        (200, "ready\n".into())
    );
    let url = wharf.url("/misbehave/sleep?ms=1500");
    let mut in_flight = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        in_flight.push(tokio::spawn(
            async move { HttpClient::http1().get(&url).await },
        ));
    }
    let h2 = {
        let url = url.clone();
        tokio::spawn(async move { HttpClient::http2().get(&url).await })
    };
    // Every request has reached the guest (it logs before sleeping) before the signal.
    poll_until_async(10 * SECOND, "all 9 requests reach the guest", async || {
        let log = wharf.log();
        let reached = log.iter().filter(|l| l.contains("sleeping 1500 ms"));
        match reached.count() {
            9.. => Ok(()),
            n => Err(n),
        }
    })
    .await
    .unwrap();
    let addr = wharf.addr;
    let signalled = Instant::now();
    wharf.signal("TERM");
    // Balancers watching readiness see the drain while the requests still run.
    let (status, body) = until_not_ready(admin).await;
    assert_eq!(status, 503);
    assert_eq!(body, "draining: the node is shutting down\n");
    for request in in_flight {
        let reply = request
            .await
            .unwrap()
            .expect("an in-flight request was aborted");
        assert_eq!((reply.status, reply.body.as_str()), (200, "slept"));
    }
    let reply = h2.await.unwrap().expect("the HTTP/2 request was aborted");
    assert_eq!(reply.status, 200);
    let status = wharf.wait_exit(10 * SECOND).expect("wharf did not exit");
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() < 5 * SECOND);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_readiness_drops_at_once_and_listeners_accept_for_the_drain_delay() {
    let apps = apps_dir(&["misbehave"]);
    let delay = Duration::from_millis(1500);
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\ndrain_delay_ms = {}\n",
        delay.as_millis()
    );
    let (mut wharf, _config) = start_with_config(apps.path(), &config);
    let admin = admin_addr(&wharf);
    let addr = wharf.addr;
    let signalled = Instant::now();
    wharf.signal("TERM");
    poll_until_async(SECOND, "/readyz is not 200", async || {
        match admin_get(admin, "127.0.0.1", "/readyz").await {
            (200, body) => Err(body),
            _ => Ok(()),
        }
    })
    .await
    .unwrap();
    let readiness_dropped = signalled.elapsed();
    // New connections are still served while balancers notice.
    let get = b"GET /misbehave/ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let reply = raw_exchange(addr, get)
        .await
        .expect("the listener closed with readiness");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let closed = poll_until_async(delay + 5 * SECOND, "the listener refuses", async || {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => Err("accepted"),
            Err(_) => Ok(signalled.elapsed()),
        }
    })
    .await
    .unwrap();
    assert!(closed >= delay, "closed after {closed:?}, before the delay");
    let status = wharf.wait_exit(10 * SECOND).expect("wharf did not exit");
    assert!(status.success(), "exit status {status}");
    eprintln!("readiness dropped after {readiness_dropped:?}, listener closed after {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_keeps_a_good_config_over_a_bad_one() {
    let tree = site_tree();
    let apps = apps_dir(&["hello"]);
    let (wharf, config_dir) =
        start_with_config(apps.path(), &two_sites(&tree.path().join("public")));
    let config = config_dir.path().join("wharf.toml");
    let c = HttpClient::http1();
    let status = |host: &'static str| {
        let (c, url) = (c.clone(), wharf.url("/hello"));
        async move { c.get_with(&url, &[("host", host)]).await.unwrap().status }
    };
    assert_eq!(status("elsewhere.test").await, 200);

    // A bad file is reported with its key, and the running config stays.
    let mark = wharf.log_len();
    wharf_tests::replace_file(&config, "[[site]]\nhosts = [\"a.test\"]\nrooot = \"x\"\n");
    wharf.signal("HUP");
    let line = wharf
        .wait_for_log_since(mark, &["rooot"], 10 * SECOND)
        .unwrap();
    assert!(line.contains("wharf.toml"), "{line}");
    assert_eq!(status("elsewhere.test").await, 200);

    // A good one applies: unknown hosts now get 421.
    let good = format!(
        "unknown_host = \"421\"\n{}",
        two_sites(&tree.path().join("public"))
    );
    wharf_tests::replace_file(&config, good);
    wharf.signal("HUP");
    poll_until_async(
        10 * SECOND,
        "the good config applies (421)",
        async || match status("elsewhere.test").await {
            421 => Ok(()),
            other => Err(other),
        },
    )
    .await
    .unwrap();
    assert_eq!(status("apps.test").await, 200);

    // A change to the file applies without a signal.
    let by_file = format!(
        "unknown_host = \"404\"\n{}",
        two_sites(&tree.path().join("public"))
    );
    std::fs::write(&config, by_file).unwrap();
    poll_until_async(
        10 * SECOND,
        "the changed file applies (404)",
        async || match status("elsewhere.test").await {
            404 => Ok(()),
            other => Err(other),
        },
    )
    .await
    .unwrap();
}

/// The admin listener's address, from the banner.
fn admin_addr(wharf: &Wharf) -> std::net::SocketAddr {
    wharf
        .admin
        .unwrap_or_else(|| panic!("no admin line in:\n{}", wharf.banner))
}

/// GET `path` on the admin listener from the local address `from` (any of 127.0.0.0/8),
/// with a raw HTTP/1.1 exchange: the source address is the point.
async fn admin_get(admin: std::net::SocketAddr, from: &str, path: &str) -> (u16, String) {
    admin_request(admin, from, "GET", path).await
}

/// Waits (5 s at most) until the node's `/readyz` answers other than 200; that answer.
async fn until_not_ready(admin: std::net::SocketAddr) -> (u16, String) {
    poll_until_async(5 * SECOND, "/readyz is not 200", async || match admin_get(
        admin,
        "127.0.0.1",
        "/readyz",
    )
    .await
    {
        (200, body) => Err(body),
        reply => Ok(reply),
    })
    .await
    .unwrap()
}

async fn admin_request(
    admin: std::net::SocketAddr,
    from: &str,
    method: &str,
    path: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(admin).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    let status = reply
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_answers_health_checks_to_allowed_networks_only() {
    let apps = apps_dir(&["hello"]);
    let config = "[admin]\naddress = \"127.0.0.1:0\"\nallow = [\"127.0.0.1/32\"]\n";
    let (wharf, _config) = start_with_config(apps.path(), config);
    let admin = admin_addr(&wharf);
    assert_ne!(admin, wharf.addr);
    assert_eq!(
        admin_get(admin, "127.0.0.1", "/healthz").await,
        (200, "ok\n".into())
    );
    assert_eq!(
        admin_get(admin, "127.0.0.1", "/readyz").await,
        (200, "ready\n".into())
    );
    assert_eq!(admin_get(admin, "127.0.0.1", "/hello").await.0, 404);
    assert_eq!(
        admin_request(admin, "127.0.0.1", "POST", "/healthz")
            .await
            .0,
        405
    );
    // 127.0.0.2 is a loopback address too, but not in the allow list.
    assert_eq!(
        admin_get(admin, "127.0.0.2", "/healthz").await,
        (403, "forbidden\n".into())
    );
    // Apps stay on the sites' listeners.
    let reply = HttpClient::http1().get(&wharf.url("/hello")).await.unwrap();
    assert_eq!(reply.status, 200);
}

/// The status of GET `path` on the admin listener with `authorization` (if any).
async fn admin_status_with(admin: std::net::SocketAddr, path: &str, authorization: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let header = match authorization {
        "" => String::new(),
        value => format!("authorization: {value}\r\n"),
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: admin\r\n{header}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    reply
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {reply:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_required_but_by_the_probes_and_a_reload_replaces_it() {
    let apps = apps_dir(&["hello"]);
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let (wharf, config_dir) = start_with_config(apps.path(), &config);
    let admin = admin_addr(&wharf);
    assert_eq!(admin_status_with(admin, "/upstreams", "").await, 401);
    assert_eq!(
        admin_status_with(admin, "/upstreams", "Bearer wrong").await,
        401
    );
    assert_eq!(
        admin_status_with(admin, "/upstreams", "Bearer first-token").await,
        200
    );
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(admin_status_with(admin, probe, "").await, 200, "{probe}");
    }

    // A reload reads the file again.
    std::fs::write(&token_file, "second-token\n").unwrap();
    wharf.signal("HUP");
    poll_until_async(
        10 * SECOND,
        "the second token applies",
        async || match admin_status_with(admin, "/upstreams", "Bearer second-token").await {
            200 => Ok(()),
            other => Err(other),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        admin_status_with(admin, "/upstreams", "Bearer first-token").await,
        401
    );

    // A token file that cannot be read fails the reload, naming key and file; the
    // running token stays.
    std::fs::remove_file(&token_file).unwrap();
    let mark = wharf.log_len();
    wharf_tests::replace_file(&config_dir.path().join("wharf.toml"), format!("{config}\n"));
    wharf.signal("HUP");
    let line = wharf
        .wait_for_log_since(mark, &["admin.token_file", "admin.token"], 10 * SECOND)
        .unwrap();
    assert!(line.contains(&token_file.display().to_string()), "{line}");
    assert_eq!(
        admin_status_with(admin, "/upstreams", "Bearer second-token").await,
        200
    );
}

/// A site whose root holds `old/secret.txt`, under a route `/old` that redirects to `/`:
/// no spelling of a path below `/old` may reach the file.
fn covered_site() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("public");
    std::fs::create_dir_all(public.join("old")).unwrap();
    std::fs::write(public.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(public.join("old/secret.txt"), CANARY).unwrap();
    std::fs::create_dir_all(public.join("@internal")).unwrap();
    std::fs::write(public.join("@internal/secret.txt"), CANARY).unwrap();
    let config = format!(
        r#"
[[site]]
hosts = ["www.foobar.com"]
root = "{root}"
apps = false
routes = [
    {{ path = "/old", redirect = "/" }},
    {{ path = "/@internal", redirect = "/" }},
]
"#,
        root = public.display()
    );
    (dir, config)
}

/// The status and Location of a raw GET of `target` on www.foobar.com, and the whole reply.
async fn raw_get(wharf: &Wharf, target: &str) -> (String, Option<String>, String) {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: www.foobar.com\r\nConnection: close\r\n\r\n");
    let reply = raw_exchange(wharf.addr, request.as_bytes()).await.unwrap();
    let status = reply.split(' ').nth(1).unwrap_or("").to_string();
    let location = reply
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .map(str::to_string);
    (status, location, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_the_root_never_sends_the_client_to_another_host() {
    let (_tree, config) = covered_site();
    let apps = apps_dir(&[]);
    let (wharf, _config) = start_with_config(apps.path(), &config);
    for (target, expected) in [
        ("/old", "/"),
        ("/old/", "/"),
        ("/old/post/7", "/post/7"),
        ("/old//evil.example/x", "/evil.example/x"),
        ("/old/\\evil.example/x", "/%5Cevil.example/x"),
    ] {
        let (status, location, reply) = raw_get(&wharf, target).await;
        assert_eq!(status, "308", "{target}: {reply}");
        assert_eq!(location.as_deref(), Some(expected), "{target}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_spellings_of_a_routed_path_never_reach_the_static_files_below_it() {
    let (_tree, config) = covered_site();
    let apps = apps_dir(&[]);
    let (wharf, _config) = start_with_config(apps.path(), &config);
    // The route answers each spelling of /old/secret.txt as it answers the plain one.
    for target in [
        "/old/secret.txt",
        "/%6fld/secret.txt",
        "/%6Fld/secret.txt",
        "//old/secret.txt",
        "/./old/secret.txt",
        "/x/../old/secret.txt",
        "/old/./secret.txt",
        // A character that may stand raw in a path has one spelling: raw.
        "/@internal/secret.txt",
        "/%40internal/secret.txt",
    ] {
        let (status, location, reply) = raw_get(&wharf, target).await;
        assert_eq!(
            (status.as_str(), location.as_deref()),
            ("308", Some("/secret.txt")),
            "{target}: {reply}"
        );
        assert!(!reply.contains(CANARY), "{target} leaked the file: {reply}");
    }
    // An encoded slash is a character of a segment, not a separator: it neither
    // escapes the route nor becomes one in a file name.
    for (target, expected) in [("/old%2Fsecret.txt", "400"), ("/..", "400")] {
        let (status, _, reply) = raw_get(&wharf, target).await;
        assert_eq!(status, expected, "{target}: {reply}");
        assert!(!reply.contains(CANARY), "{target} leaked the file: {reply}");
    }
    let (status, _, reply) = raw_get(&wharf, "/%69ndex.html").await;
    assert_eq!(status, "200", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_under_the_static_root_is_not_found_and_blocks_nothing() {
    let (tree, config) = covered_site();
    let fifo = tree.path().join("public/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let apps = apps_dir(&[]);
    let (wharf, _config) = start_with_config(apps.path(), &config);
    let c = HttpClient::http1();
    // Several at once: each would hold a worker thread if the open waited for a writer.
    let fetches: Vec<_> = (0..4)
        .map(|_| {
            let (c, url) = (c.clone(), wharf.url("/pipe"));
            tokio::spawn(async move {
                tokio::time::timeout(5 * SECOND, c.get_with(&url, &[("host", "www.foobar.com")]))
                    .await
            })
        })
        .collect();
    for fetch in fetches {
        let reply = fetch.await.unwrap().expect("GET /pipe hung").unwrap();
        assert_eq!(reply.status, 404, "{}", reply.body);
    }
    let home = tokio::time::timeout(
        5 * SECOND,
        c.get_with(&wharf.url("/"), &[("host", "www.foobar.com")]),
    )
    .await
    .expect("the server stopped serving")
    .unwrap();
    assert_eq!(home.status, 200);
}

/// A value of the wharf process's /proc status, in KiB.
fn proc_status_kib(wharf: &Wharf, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", wharf.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_paths_and_accept_encodings_do_not_grow_the_static_file_cache() {
    let (tree, config) = covered_site();
    let file = tree.path().join("public/small.txt");
    std::fs::write(&file, "small and cacheable\n").unwrap();
    // The cache skips files changed within the last second (coarse timestamps).
    poll_until_async(10 * SECOND, "the file is 2 s old", async || {
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        let age = modified.elapsed().unwrap_or_default();
        (age >= 2 * SECOND).then_some(()).ok_or(age)
    })
    .await
    .unwrap();
    let apps = apps_dir(&[]);
    // Heads of 60 KiB, past the default limit, so that a cache growing by them shows.
    let config = format!("[limits]\nmax_header_bytes = 131072\n{config}");
    let (wharf, _config) = start_with_config(apps.path(), &config);
    let c = HttpClient::http1();
    // Each request spells the one file its own way.
    let url = |i: usize| wharf.url(&format!("/{}small.txt", "./".repeat(i)));
    let padding = "x".repeat(60 * 1024);
    let get = |i: usize| {
        let (c, url, accept) = (c.clone(), url(i), format!("x-{i}-{padding}, gzip"));
        async move {
            let reply = c
                .get_with(
                    &url,
                    &[("host", "www.foobar.com"), ("accept-encoding", &accept)],
                )
                .await
                .unwrap();
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    };
    // Warm up: the first requests allocate what every later one reuses.
    for i in 0..50 {
        get(i).await;
    }
    let before = proc_status_kib(&wharf, "VmRSS");
    // 1,000 unique keys of 60 KiB would be 60 MiB held if the cache kept each.
    for i in 50..1050 {
        get(i).await;
    }
    let grown = proc_status_kib(&wharf, "VmRSS").saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "resident memory grew by {grown} KiB over 1,000 requests for one file"
    );
}

/// `wharf drain` on a node with a track file, under keep-alive HTTP/1.1 and HTTP/2
/// loops that stop once the file gives the address up (as a peer would take the load
/// then). No request fails. The file says `0` until the requests in flight at the drain
/// (longer than the drain delay) have been answered, and `1` before the listeners
/// close. The node exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wharf_drain_finishes_every_request_then_gives_up_the_address_then_exits() {
    let apps = apps_dir(&["misbehave"]);
    let dir = tempfile::tempdir().unwrap();
    let track = dir.path().join("ready");
    let config = format!(
        "[limits]\ndrain_timeout_ms = 10000\n\
         [admin]\naddress = \"127.0.0.1:0\"\ndrain_delay_ms = 100\ntrack_file = \"{}\"\n",
        track.display()
    );
    let (mut wharf, config_dir) = start_with_config(apps.path(), &config);
    let read = {
        let track = track.clone();
        move || std::fs::read_to_string(&track).unwrap_or_default()
    };
    poll_until_async(5 * SECOND, "the track file says 0", async || match read() {
        held if held == "0\n" => Ok(()),
        other => Err(other),
    })
    .await
    .unwrap();

    let url = wharf.url("/misbehave/sleep?ms=600");
    let mut loops = Vec::new();
    for client in [
        HttpClient::http1(),
        HttpClient::http1(),
        HttpClient::http2(),
    ] {
        let (url, read) = (url.clone(), read.clone());
        loops.push(tokio::spawn(async move {
            // When each request answered started.
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            let deadline = Instant::now() + 30 * SECOND;
            for _ in 0..10_000 {
                if read() == "1\n" || Instant::now() > deadline {
                    break;
                }
                let started = Instant::now();
                match client.get(&url).await {
                    Ok(reply) if reply.status == 200 => ok.push(started),
                    Ok(reply) => failed.push(format!("status {}", reply.status)),
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            (ok, failed)
        }));
    }
    // Every loop has a request in flight when the drain starts.
    poll_until_async(
        10 * SECOND,
        "3 requests reach the guest",
        async || match wharf
            .log()
            .iter()
            .filter(|l| l.contains("sleeping 600 ms"))
            .count()
        {
            3.. => Ok(()),
            n => Err(n),
        },
    )
    .await
    .unwrap();
    let admin = admin_addr(&wharf).to_string();
    let config_path = config_dir.path().join("wharf.toml");
    let drain_asked = Instant::now();
    let drained = tokio::task::spawn_blocking(move || {
        std::process::Command::new(wharf_tests::wharf_bin())
            .args([
                "drain",
                "--config",
                config_path.to_str().unwrap(),
                "--admin",
                &admin,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        drained.status.success(),
        "wharf drain: {}",
        String::from_utf8_lossy(&drained.stderr)
    );
    assert!(
        String::from_utf8_lossy(&drained.stdout).starts_with("drained"),
        "{drained:?}"
    );
    let status = wharf.wait_exit(10 * SECOND).expect("wharf did not exit");
    assert!(status.success(), "exit status {status}");
    assert_eq!(read(), "1\n");

    let mut before_drain = 0;
    for (i, task) in loops.into_iter().enumerate() {
        let (ok, failed) = task.await.unwrap();
        assert!(!ok.is_empty(), "loop {i} served nothing");
        assert!(
            failed.is_empty(),
            "loop {i}: {} served, failed: {failed:?}",
            ok.len()
        );
        before_drain += ok.iter().filter(|started| **started < drain_asked).count();
    }
    // The address goes only once every request in flight at the drain is answered (its
    // access line, logged as its answer ends, is in before), and before any listener
    // stops accepting.
    let log = wharf.log();
    let at = |needle: &str| {
        log.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {log:#?}"))
    };
    let given_up = at("the shared address is given up");
    let answered = log[..given_up]
        .iter()
        .filter(|l| l.contains("access") && l.contains("path=/misbehave/sleep"))
        .count();
    assert!(
        answered >= before_drain,
        "{answered} answered before the address went, of {before_drain} sent before the drain"
    );
    assert!(given_up < at("shutting down: draining connections"));
}

/// A connection accepted before the drain whose request arrives after it started is
/// served, then closed; not closed with the request unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_drain_finds_before_its_first_request_serves_that_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let apps = apps_dir(&["misbehave"]);
    let config = "[admin]\naddress = \"127.0.0.1:0\"\ndrain_delay_ms = 2000\n";
    let (mut wharf, _config) = start_with_config(apps.path(), config);
    let admin = admin_addr(&wharf);
    let mut early = tokio::net::TcpStream::connect(wharf.addr).await.unwrap();
    // wharf has taken the connection in.
    poll_until_async(5 * SECOND, "the connection is open", async || {
        let (_, metrics) = admin_get(admin, "127.0.0.1", "/metrics").await;
        match metrics
            .lines()
            .find(|l| l.starts_with("wharf_connections_open{") && !l.ends_with(" 0"))
        {
            Some(_) => Ok(()),
            None => Err(()),
        }
    })
    .await
    .unwrap();
    wharf.signal("TERM");
    until_not_ready(admin).await;
    early
        .write_all(b"GET /misbehave/ok HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(10 * SECOND, early.read_to_string(&mut answer))
        .await
        .expect("no answer in 10 s")
        .unwrap();
    // Served, and the connection closed after it (read_to_string saw its end).
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let status = wharf.wait_exit(10 * SECOND).expect("wharf did not exit");
    assert!(status.success(), "exit status {status}");
}

//! The load balancer end to end: a wharf node whose one site sends every path to an
//! `[[upstream]]` of test backends (`wharf_tests::Backend`, made slow, failing or dead
//! while they run) or of other wharf nodes, driven by real clients. What the clients
//! got, what each backend saw and what the balancer's admin listener reports.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::{JoinHandle, block_in_place};
use tokio_tungstenite::tungstenite::Message;
use wharf_tests::{
    Backend, HttpClient, Mode, Reply, Wharf, apps_dir, next_loopback_ip, poll_until,
    poll_until_async,
};

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// Longest a test request may take before it counts as failed (a balancer that hangs).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A wharf node with no apps whose default site sends every path of every host to
/// `[[upstream]] name = "app"`, with an admin listener of its own.
struct Balancer {
    node: Wharf,
    /// The admin listener as wharf.toml names it (port 0), for reloads to name it so.
    admin_config: SocketAddr,
    admin: SocketAddr,
    client: HttpClient,
    _apps: tempfile::TempDir,
}

impl Balancer {
    /// `upstream`: the keys of the `app` upstream after its name (with its subtables);
    /// `extra`: other top-level sections (`[firewall]`).
    fn start(upstream: &str, extra: &str) -> Self {
        let apps = apps_dir(&[]);
        let admin_config = SocketAddr::new(next_loopback_ip(), 0);
        let node = Wharf::builder(apps.path())
            .config(&config(admin_config, upstream, extra))
            .start();
        let admin = node
            .admin
            .unwrap_or_else(|| panic!("no admin listener in:\n{}", node.banner));
        Self {
            node,
            admin_config,
            admin,
            client: HttpClient::http1(),
            _apps: apps,
        }
    }

    fn url(&self, path: &str) -> String {
        self.node.url(path)
    }

    /// Rewrites wharf.toml with another `app` upstream, sends SIGHUP and waits until
    /// the reload is done.
    fn reload(&self, upstream: &str, extra: &str) {
        let mark = self.node.log_len();
        let path = self.node.config.as_ref().unwrap();
        wharf_tests::replace_file(path, config(self.admin_config, upstream, extra));
        self.node.signal("HUP");
        self.node
            .wait_for_log_since(mark, &["configuration reloaded"], 10 * SECOND)
            .unwrap_or_else(|e| panic!("{e}: {:#?}", self.node.log()));
    }

    async fn get(&self, path: &str) -> Reply {
        let url = self.url(path);
        tokio::time::timeout(REQUEST_TIMEOUT, self.client.get(&url))
            .await
            .unwrap_or_else(|_| panic!("GET {url} got no answer in {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("GET {url}: {e:#}"))
    }

    /// `n` GETs one after another, each answered 200: how many each backend answered.
    async fn shares(&self, n: usize) -> BTreeMap<String, usize> {
        let mut shares = BTreeMap::new();
        for _ in 0..n {
            let reply = self.get("/share").await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            *shares.entry(backend_of(&reply)).or_default() += 1;
        }
        shares
    }

    /// `GET /upstreams` on the admin listener: the servers of `app`.
    async fn servers(&self) -> Vec<Value> {
        let url = format!("http://{}/upstreams", self.admin);
        let reply = self.client.get(&url).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let status: Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("GET /upstreams: {e}: {}", reply.body));
        let pool = status["upstreams"]
            .as_array()
            .and_then(|pools| pools.iter().find(|p| p["name"] == "app"))
            .unwrap_or_else(|| panic!("no upstream app in {status}"));
        pool["servers"].as_array().unwrap().clone()
    }

    /// The status of the server at `addr`, as `GET /upstreams` shows it.
    async fn server(&self, addr: SocketAddr) -> Value {
        let servers = self.servers().await;
        let names = |a: &Value| a == &format!("http://{addr}") || a == &addr.to_string();
        servers
            .iter()
            .find(|s| names(&s["address"]))
            .unwrap_or_else(|| panic!("no server {addr} in {servers:?}"))
            .clone()
    }

    /// Its `state` (`up`, `slow_start`, `down`, `ejected`, `drained`).
    async fn state(&self, addr: SocketAddr) -> String {
        let server = self.server(addr).await;
        server["state"].as_str().unwrap_or_default().to_owned()
    }

    /// `POST /upstreams/app/servers/ADDR/ACTION` on the admin listener.
    async fn admin(&self, addr: SocketAddr, action: &str) -> Reply {
        let url = format!(
            "http://{}/upstreams/app/servers/{addr}/{action}",
            self.admin
        );
        self.client.send("POST", &url, None, "").await.unwrap()
    }
}

fn config(admin: SocketAddr, upstream: &str, extra: &str) -> String {
    format!(
        "[[site]]\nhosts = [\"lb.test\"]\ndefault = true\napps = false\n\
         routes = [{{ path = \"/\", upstream = \"app\" }}]\n\n\
         [admin]\naddress = \"{admin}\"\n\n\
         {extra}\n\
         [[upstream]]\nname = \"app\"\n{upstream}"
    )
}

/// `servers = [...]` of `(address, weight)`.
fn servers(list: &[(SocketAddr, u32)]) -> String {
    let servers: Vec<String> = list
        .iter()
        .map(|(addr, weight)| format!("{{ address = \"{addr}\", weight = {weight} }}"))
        .collect();
    format!("servers = [{}]\n", servers.join(", "))
}

/// `servers = [...]` of `backends`, weight 1 each.
fn pool(backends: &[&Backend]) -> String {
    let list: Vec<_> = backends.iter().map(|b| (b.addr(), 1)).collect();
    servers(&list)
}

/// Test backends named `a`, `b`, ... each on a loopback address of its own.
fn backends<const N: usize>() -> [Backend; N] {
    std::array::from_fn(|i| {
        Backend::start(&((b'a' + i as u8) as char).to_string(), next_loopback_ip())
    })
}

/// Which test backend answered.
fn backend_of(reply: &Reply) -> String {
    match reply.headers.get("x-backend") {
        Some(name) => name.to_str().unwrap().to_owned(),
        None => panic!("an answer from no test backend: {reply:?}"),
    }
}

/// One answer a [`Load`] got.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    /// The backend that answered 200 (`x-backend`; empty for a wharf node), or what
    /// went wrong.
    answer: Result<String, String>,
}

/// Clients, each sending GETs one after another over its own keep-alive connection
/// until stopped (at most a minute, or 100 000 requests each), every answer kept.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(url: String, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|_| {
                let (stop, seen, url) = (stop.clone(), seen.clone(), url.clone());
                tokio::spawn(async move {
                    let client = HttpClient::http1();
                    let deadline = Instant::now() + 60 * SECOND;
                    for _ in 0..100_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        let answer =
                            match tokio::time::timeout(REQUEST_TIMEOUT, client.get(&url)).await {
                                Err(_) => Err(format!("no answer in {REQUEST_TIMEOUT:?}")),
                                Ok(Err(e)) => Err(format!("{e:#}")),
                                Ok(Ok(reply)) if reply.status != 200 => {
                                    Err(format!("{}: {}", reply.status, reply.body))
                                }
                                Ok(Ok(reply)) => Ok(reply
                                    .headers
                                    .get("x-backend")
                                    .map(|v| v.to_str().unwrap().to_owned())
                                    .unwrap_or_default()),
                            };
                        seen.lock().unwrap().push(Seen {
                            at: Instant::now(),
                            answer,
                        });
                    }
                })
            })
            .collect();
        Self {
            stop,
            seen,
            workers,
        }
    }

    /// The answers that came after `since`.
    fn since(&self, since: Instant) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.at > since).cloned().collect()
    }

    /// The last `n` answers (fewer while there are not that many).
    fn last(&self, n: usize) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen[seen.len().saturating_sub(n)..].to_vec()
    }

    /// Stops the clients; every answer they got (after checking that they ran at all).
    async fn stop(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        assert!(!seen.is_empty(), "the load sent nothing");
        seen
    }
}

/// How many of `seen` `backend` answered.
fn answered_by(seen: &[Seen], backend: &str) -> usize {
    seen.iter()
        .filter(|s| s.answer.as_deref() == Ok(backend))
        .count()
}

fn failures(seen: &[Seen]) -> Vec<&str> {
    seen.iter()
        .filter_map(|s| s.answer.as_ref().err().map(String::as_str))
        .collect()
}

/// A GET over a new connection from `source` (a loopback address of the test's
/// choosing, as the balancer sees its client) to `to`.
async fn get_from(source: IpAddr, to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = http::Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (head, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: head.status.as_u16(),
        headers: head.headers,
        version: head.version,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_three_backends_exactly_equal_shares() {
    let [a, b, c] = backends();
    let lb = Balancer::start(&pool(&[&a, &b, &c]), "");
    let shares = lb.shares(300).await;
    let expected = BTreeMap::from([("a".into(), 100), ("b".into(), 100), ("c".into(), 100)]);
    assert_eq!(shares, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_honours_weights_smoothly() {
    let [a, b] = backends();
    let upstream = format!(
        "algorithm = \"round_robin\"\n{}",
        servers(&[(a.addr(), 2), (b.addr(), 1)])
    );
    let lb = Balancer::start(&upstream, "");
    let mut order = String::new();
    for _ in 0..300 {
        let reply = lb.get("/").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        order.push_str(&backend_of(&reply));
    }
    assert_eq!(order.matches('a').count(), 200, "{order}");
    assert_eq!(order.matches('b').count(), 100, "{order}");
    // Smooth: the heavier backend's turns are spread out, not sent in a burst.
    assert!(!order.contains("aaa"), "{order}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_new_requests_to_the_idle_backend() {
    let [a, b] = backends();
    let upstream = format!("algorithm = \"least_connections\"\n{}", pool(&[&a, &b]));
    let lb = Balancer::start(&upstream, "");
    a.set_delay(20 * SECOND);

    // Bursts of requests at once, until some are held on a and those b got are done
    // (else b would be as busy as a for a moment).
    let mut held: Vec<JoinHandle<_>> = Vec::new();
    poll_until_async(
        10 * SECOND,
        "requests are held on a, none on b",
        async || {
            let pending = held.iter().filter(|h| !h.is_finished()).count();
            if a.in_flight() > 0 && pending == a.in_flight() && b.in_flight() == 0 {
                return Ok(());
            }
            if a.in_flight() == 0 {
                for _ in 0..6 {
                    let (client, url) = (HttpClient::http1(), lb.url("/held"));
                    held.push(tokio::spawn(async move { client.get(&url).await }));
                }
            }
            Err((a.in_flight(), pending))
        },
    )
    .await
    .unwrap();

    for i in 0..20 {
        let start = Instant::now();
        let reply = lb.get("/idle").await;
        assert_eq!(
            backend_of(&reply),
            "b",
            "request {i} went to the busy backend"
        );
        assert!(start.elapsed() < 5 * SECOND);
    }
    assert!(a.in_flight() > 0);
    for request in held {
        request.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_latency_moves_traffic_off_a_backend_that_turns_slow_within_a_second_and_back() {
    let [a, b] = backends();
    let upstream = format!("algorithm = \"least_latency\"\n{}", pool(&[&a, &b]));
    let lb = Balancer::start(&upstream, "");
    let load = Load::start(lb.url("/latency"), 4);
    poll_until(10 * SECOND, "both backends answer", || {
        let last = load.last(200);
        match (answered_by(&last, "a"), answered_by(&last, "b")) {
            (a, b) if a >= 20 && b >= 20 => Ok(()),
            shares => Err(shares),
        }
    })
    .unwrap();

    a.set_delay(50 * MS);
    poll_until(SECOND, "a answers at most 5 of the last 50 answers", || {
        let last = load.last(50);
        match answered_by(&last, "a") {
            n if n <= 5 => Ok(()),
            n => Err(n),
        }
    })
    .unwrap();

    a.set_delay(Duration::ZERO);
    let recovered = Instant::now();
    poll_until(
        10 * SECOND,
        "a answers a quarter of the last 200 answers",
        || {
            let since = load.since(recovered);
            let last = &since[since.len().saturating_sub(200)..];
            match answered_by(last, "a") {
                n if last.len() == 200 && n >= 50 => Ok(()),
                n => Err((n, last.len())),
            }
        },
    )
    .unwrap();
    let seen = load.stop().await;
    assert_eq!(failures(&seen), Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_keeps_each_key_on_one_backend_and_removing_one_moves_only_its_keys() {
    let [a, b, c] = &backends();
    let hashing = "algorithm = \"hash\"\nhash_on = \"header:x-user\"\n";
    let lb = Balancer::start(&format!("{hashing}{}", pool(&[a, b, c])), "");
    let placement = async || {
        let mut placed = BTreeMap::new();
        for user in 0..150 {
            let key = format!("user-{user}");
            let reply = lb
                .client
                .get_with(&lb.url("/cart"), &[("x-user", &key)])
                .await
                .unwrap();
            assert_eq!(reply.status, 200, "{}", reply.body);
            placed.insert(key, backend_of(&reply));
        }
        placed
    };
    let before = placement().await;
    assert_eq!(
        placement().await,
        before,
        "a key moved with nothing changed"
    );
    for name in ["a", "b", "c"] {
        let keys = before.values().filter(|b| *b == name).count();
        assert!(keys >= 15, "{name} got {keys} of 150 keys: {before:?}");
    }

    lb.reload(&format!("{hashing}{}", pool(&[a, b])), "");
    let after = placement().await;
    for (key, was) in &before {
        let now = &after[key];
        match was.as_str() {
            "c" => assert_ne!(now, "c", "{key} is still on the removed backend"),
            _ => assert_eq!(now, was, "{key} moved from {was}, which stayed"),
        }
    }
}

/// Lines of a wharf node's access log for `path`.
fn access_lines(node: &Wharf, since: usize, path: &str) -> usize {
    let log = node.log();
    let needle = format!("path={path}");
    log.get(since..)
        .unwrap_or_default()
        .iter()
        .filter(|l| l.contains("access") && l.contains(&needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_costs_no_get_is_ejected_within_the_checks_and_comes_back_slowly() {
    const INTERVAL: Duration = Duration::from_millis(300);
    const FALL: u32 = 3;
    let apps = apps_dir(&["hello"]);
    let start_node = || {
        Wharf::builder(apps.path())
            .env("RUST_LOG", "info,access=debug")
            .start()
    };
    let mut nodes = [start_node(), start_node()];
    let upstream = format!(
        "connect_timeout_ms = 300\nslow_start_ms = 3000\n{}\
         [upstream.health_check]\npath = \"/hello\"\ninterval_ms = {}\ntimeout_ms = 300\n\
         rise = 2\nfall = {FALL}\n\
         [upstream.outlier]\nbase_ejection_ms = 500\n",
        servers(&[(nodes[0].addr, 1), (nodes[1].addr, 1)]),
        INTERVAL.as_millis(),
    );
    let lb = Balancer::start(&upstream, "");
    let path = "/hello/through-the-balancer";
    let load = Load::start(lb.url(path), 2);
    poll_until(10 * SECOND, "both nodes serve the load", || {
        match (
            access_lines(&nodes[0], 0, path),
            access_lines(&nodes[1], 0, path),
        ) {
            (a, b) if a >= 5 && b >= 5 => Ok(()),
            counts => Err(counts),
        }
    })
    .unwrap();

    let killed_at = Instant::now();
    nodes[0].kill();
    let dead = nodes[0].addr;
    poll_until_async(5 * SECOND, "the killed node is out", async || {
        match lb.state(dead).await.as_str() {
            "down" | "ejected" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await
    .unwrap();
    let out_after = killed_at.elapsed();
    // One interval more than interval × fall: the check under way when it died, and jitter.
    assert!(
        out_after <= INTERVAL * (FALL + 1),
        "out after {out_after:?}, checks every {INTERVAL:?}, fall {FALL}"
    );
    let out = load.since(killed_at).len();
    poll_until(5 * SECOND, "the survivor serves on", || {
        match load.since(killed_at).len() {
            n if n > out + 20 => Ok(()),
            n => Err(n),
        }
    })
    .unwrap();

    let mark = nodes[0].log_len();
    block_in_place(|| nodes[0].restart());
    assert_eq!(nodes[0].addr, dead, "restarted elsewhere");
    poll_until_async(10 * SECOND, "the node is back, in slow start", async || {
        let server = lb.server(dead).await;
        match server["state"].as_str() {
            Some("slow_start") => Ok(()),
            _ => Err(server),
        }
    })
    .await
    .unwrap();
    poll_until(
        10 * SECOND,
        "the node serves the load again",
        || match access_lines(&nodes[0], mark, path) {
            n if n >= 5 => Ok(()),
            n => Err(n),
        },
    )
    .unwrap();
    poll_until_async(10 * SECOND, "its slow start ends", async || {
        match lb.state(dead).await.as_str() {
            "up" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await
    .unwrap();
    let seen = load.stop().await;
    assert_eq!(failures(&seen), Vec::<&str>::new(), "of {}", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_a_backend_that_dies_mid_request_gets_502_and_is_never_sent_twice() {
    let [a, b] = backends();
    a.set_mode(Mode::DieMidRequest);
    b.set_mode(Mode::DieMidRequest);
    let lb = Balancer::start(&pool(&[&a, &b]), "");
    let reply = lb
        .client
        .post_json(&lb.url("/orders"), "{\"item\": 1}")
        .await
        .unwrap();
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("closed the connection before answering"),
        "{}",
        reply.body
    );
    let posts = a.requests(&http::Method::POST) + b.requests(&http::Method::POST);
    assert_eq!(posts, 1, "the backends saw the POST {posts} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_slower_than_the_response_timeout_gets_504_saying_so() {
    let [a] = backends();
    a.set_delay(5 * SECOND);
    let lb = Balancer::start(&format!("response_timeout_ms = 300\n{}", pool(&[&a])), "");
    let start = Instant::now();
    let reply = lb.get("/slow").await;
    let took = start.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(
        reply.body.contains("did not answer in time"),
        "{}",
        reply.body
    );
    assert!(
        took >= 300 * MS && took < 3 * SECOND,
        "answered after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_the_answer_is_503_with_retry_after_at_once() {
    let [a, b] = backends();
    let upstream = format!(
        "{}[upstream.health_check]\ninterval_ms = 100\ntimeout_ms = 100\nfall = 1\n",
        pool(&[&a, &b])
    );
    let lb = Balancer::start(&upstream, "");
    assert_eq!(lb.get("/").await.status, 200);
    a.stop();
    b.stop();
    poll_until_async(5 * SECOND, "both backends are down", async || {
        let states: Vec<String> = vec![lb.state(a.addr()).await, lb.state(b.addr()).await];
        match states.iter().all(|s| s == "down" || s == "ejected") {
            true => Ok(()),
            false => Err(states),
        }
    })
    .await
    .unwrap();

    let mut took = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let reply = lb.get("/").await;
        took.push(start.elapsed());
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(reply.headers.contains_key("retry-after"), "{reply:?}");
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(median < 10 * MS, "median {median:?} of {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_holds_when_every_backend_fails() {
    const REQUESTS: u64 = 40;
    let backends: [Backend; 3] = backends();
    for backend in &backends {
        // Longer than the requests take to arrive: every first try is in flight at
        // once, so the budget is a share of all of them, and no retry's place comes
        // free before the last first try has failed.
        backend.set_delay(SECOND);
        backend.set_mode(Mode::Fail {
            status: 503,
            retry_after: None,
        });
    }
    let refs: Vec<&Backend> = backends.iter().collect();
    let upstream = format!(
        "{}[upstream.outlier]\nconsecutive_failures = 0\n\
         [upstream.retry]\nattempts = 1\nbudget_percent = 20\nbudget_min = 3\n",
        pool(&refs)
    );
    let lb = Balancer::start(&upstream, "");
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (client, url) = (HttpClient::http1(), lb.url("/fails"));
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();
    for request in requests {
        let reply = request.await.unwrap().unwrap();
        // Out of retries, the client gets the last backend's own answer.
        assert_eq!(reply.status, 503, "{}", reply.body);
        backend_of(&reply);
    }
    let seen: u64 = backends.iter().map(Backend::total_requests).sum();
    let budget = (REQUESTS * 20 / 100).max(3);
    assert!(
        seen <= REQUESTS + budget,
        "the backends saw {seen} requests for {REQUESTS}, budget {budget}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_name_the_real_client_and_only_a_trusted_proxy_may_add_to_them() {
    let [a] = backends();
    let (client_ip, proxy_ip) = (next_loopback_ip(), next_loopback_ip());
    let firewall = format!("[firewall]\ntrusted_proxies = [\"{proxy_ip}\"]\n");
    let lb = Balancer::start(&pool(&[&a]), &firewall);
    let spoofed = [
        ("host", "lb.test"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "evil.test"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
    ];

    let reply = get_from(client_ip, lb.node.addr, "/who", &spoofed).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let got = a.last_headers().unwrap();
    let header = |name: &str| got.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("x-forwarded-for"), Some(client_ip.to_string()));
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(header("x-forwarded-host").as_deref(), Some("lb.test"));
    let forwarded = header("forwarded").unwrap_or_default();
    assert!(forwarded.contains(&client_ip.to_string()), "{forwarded}");
    assert!(forwarded.contains("proto=http"), "{forwarded}");
    assert!(!format!("{got:?}").contains("6.6.6.6"), "{got:?}");
    assert!(!format!("{got:?}").contains("evil.test"), "{got:?}");
    assert_eq!(header("x-hop"), None, "a hop-by-hop header went on");
    assert!(
        header("x-request-id").is_some_and(|id| !id.is_empty()),
        "{got:?}"
    );

    let reply = get_from(proxy_ip, lb.node.addr, "/who", &spoofed).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let got = a.last_headers().unwrap();
    let header = |name: &str| got.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        header("x-forwarded-for"),
        Some(format!("6.6.6.6, {proxy_ip}"))
    );
    let forwarded = header("forwarded").unwrap_or_default();
    let (from_client, from_proxy) = (
        forwarded.find("6.6.6.6"),
        forwarded.rfind(&proxy_ip.to_string()),
    );
    assert!(
        matches!((from_client, from_proxy), (Some(c), Some(p)) if c < p),
        "{forwarded}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_through_the_balancer() {
    let [a] = backends();
    let lb = Balancer::start(&pool(&[&a]), "");
    let tcp = tokio::net::TcpStream::connect(lb.node.addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("ws://lb.test/chat", tcp)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-backend"], "a");
    for i in 0..10 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let echo = tokio::time::timeout(REQUEST_TIMEOUT, ws.next())
            .await
            .unwrap();
        assert_eq!(echo.unwrap().unwrap(), Message::text(text));
    }
    let blob: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let echo = tokio::time::timeout(REQUEST_TIMEOUT, ws.next())
        .await
        .unwrap();
    assert_eq!(echo.unwrap().unwrap(), Message::binary(blob));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_streams_through_with_the_balancer_growing_less_than_64_mib() {
    const CHUNK: usize = 64 * 1024;
    const SIZE: u64 = 1 << 30;
    let [a] = backends();
    // A body this large needs room past the default max_body_bytes (8 MiB), as it does
    // past nginx's client_max_body_size.
    let lb = Balancer::start(&pool(&[&a]), "[limits]\nmax_body_bytes = 2147483648\n");
    // Warm: the connection pool and buffers a first upload makes are not growth.
    let reply = lb
        .client
        .send("POST", &lb.url("/upload"), None, &"x".repeat(CHUNK))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let before = lb.node.memory();
    let received = a.body_bytes();

    let stream = tokio::net::TcpStream::connect(lb.node.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let chunks = futures_util::stream::iter(
        (0..SIZE / CHUNK as u64)
            .map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
    );
    let request = http::Request::post("/upload")
        .header("host", "lb.test")
        .header("content-length", SIZE)
        .body(StreamBody::new(chunks))
        .unwrap();
    let start = Instant::now();
    let upload = async {
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, body) = tokio::time::timeout(180 * SECOND, upload)
        .await
        .expect("the upload took over 3 minutes");
    eprintln!("1 GiB through the balancer in {:?}", start.elapsed());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("a: POST /upload, {SIZE} body bytes\n"));
    assert_eq!(a.body_bytes() - received, SIZE);
    let after = lb.node.memory();
    let growth = after.peak.saturating_sub(before.peak);
    assert!(
        growth < 64 << 20,
        "the balancer's peak RSS grew {} MiB ({before:?} → {after:?})",
        growth >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_edited_under_load_loses_no_request() {
    let [a, b, c] = &backends();
    // No slow start: the added backend's exact share is checked at the end.
    let upstream = |servers: String| format!("slow_start_ms = 0\n{servers}");
    let lb = Balancer::start(&upstream(pool(&[a, b])), "");
    let load = Load::start(lb.url("/edit"), 2);
    poll_until(10 * SECOND, "a and b answer", || {
        let last = load.last(100);
        match (answered_by(&last, "a"), answered_by(&last, "b")) {
            (a, b) if a > 10 && b > 10 => Ok(()),
            shares => Err(shares),
        }
    })
    .unwrap();

    block_in_place(|| lb.reload(&upstream(pool(&[a, b, c])), ""));
    poll_until(
        10 * SECOND,
        "the added backend answers",
        || match answered_by(&load.last(100), "c") {
            n if n > 10 => Ok(()),
            n => Err(n),
        },
    )
    .unwrap();

    let weighted = [(a.addr(), 3), (b.addr(), 1), (c.addr(), 1)];
    block_in_place(|| lb.reload(&upstream(servers(&weighted)), ""));
    let reweighted = Instant::now();
    poll_until(10 * SECOND, "a answers about 3 in 5", || {
        let since = load.since(reweighted);
        let last = &since[since.len().saturating_sub(100)..];
        match answered_by(last, "a") {
            n if last.len() == 100 && (50..=70).contains(&n) => Ok(()),
            n => Err((n, last.len())),
        }
    })
    .unwrap();

    let remaining = [(a.addr(), 3), (c.addr(), 1)];
    block_in_place(|| lb.reload(&upstream(servers(&remaining)), ""));
    let removed = Instant::now();
    poll_until(
        10 * SECOND,
        "the removed backend answers none of the last 50",
        || {
            let since = load.since(removed);
            let last = &since[since.len().saturating_sub(50)..];
            match answered_by(last, "b") {
                0 if last.len() == 50 => Ok(()),
                n => Err((n, last.len())),
            }
        },
    )
    .unwrap();

    let seen = load.stop().await;
    assert_eq!(failures(&seen), Vec::<&str>::new(), "of {}", seen.len());
    let shares = lb.shares(40).await;
    assert_eq!(shares, BTreeMap::from([("a".into(), 30), ("c".into(), 10)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_over_the_admin_api_lets_requests_in_flight_finish_and_enable_brings_it_back() {
    let [a, b] = backends();
    let lb = Balancer::start(&format!("slow_start_ms = 0\n{}", pool(&[&a, &b])), "");
    a.set_delay(2 * SECOND);
    // Round robin: of two requests at once, one is a's.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (HttpClient::http1(), lb.url("/deploy"));
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();
    poll_until(5 * SECOND, "a request is in flight on a", || {
        match a.in_flight() {
            1 => Ok(()),
            n => Err(n),
        }
    })
    .unwrap();

    let drained = lb.admin(a.addr(), "drain").await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    assert_eq!(lb.state(a.addr()).await, "drained");
    for i in 0..20 {
        let reply = lb.get("/after-drain").await;
        assert_eq!(
            backend_of(&reply),
            "b",
            "request {i} went to the drained backend"
        );
    }
    let mut from = Vec::new();
    for request in slow {
        let reply = request.await.unwrap().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        from.push(backend_of(&reply));
    }
    from.sort();
    assert_eq!(
        from,
        ["a", "b"],
        "the request in flight on a did not finish there"
    );

    a.set_delay(Duration::ZERO);
    let enabled = lb.admin(a.addr(), "enable").await;
    assert_eq!(enabled.status, 200, "{}", enabled.body);
    poll_until_async(5 * SECOND, "a answers again", async || {
        match backend_of(&lb.get("/after-enable").await).as_str() {
            "a" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await
    .unwrap();
}

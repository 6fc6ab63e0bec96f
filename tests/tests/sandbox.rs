//! The sandbox: traps, timeouts, memory limits, outbound HTTP policy, isolation.

use std::time::{Duration, Instant};
use wharf_tests::{HttpClient, Wharf, apps_dir};

/// How late a 504 may come after the deadline. The design target is 100 ms; a loaded
/// 2-core CI machine running tests in parallel gets some slack on top of that.
const TIMEOUT_SLACK: Duration = Duration::from_millis(400);

fn misbehave(extra_manifest: &str) -> (tempfile::TempDir, Wharf) {
    let dir = misbehave_apps(extra_manifest);
    let wharf = Wharf::start(dir.path());
    (dir, wharf)
}

/// misbehave (1 s deadline, 32 MB of memory, and `extra_manifest`) beside hello.
fn misbehave_apps(extra_manifest: &str) -> tempfile::TempDir {
    let dir = apps_dir(&["misbehave", "hello"]);
    std::fs::write(
        dir.path().join("misbehave.toml"),
        format!("timeout_ms = 1000\nmax_memory_mb = 32\n{extra_manifest}"),
    )
    .unwrap();
    dir
}

/// The compiler tiers the sandbox must hold on, as the `[apps] tiered` value that pins
/// each: Winch's code alone, Cranelift's alone.
const TIERS: [(&str, &str); 2] = [("\"baseline\"", "baseline"), ("false", "optimised")];

/// Like `misbehave`, with every app serving from one compiler `tier` (see [`TIERS`]).
fn misbehave_on((tiered, tier): (&str, &str), extra_manifest: &str) -> (tempfile::TempDir, Wharf) {
    let dir = misbehave_apps(extra_manifest);
    let wharf = Wharf::builder(dir.path())
        .ip(std::net::Ipv4Addr::LOCALHOST.into())
        .config(&format!("[apps]\ntiered = {tiered}\n"))
        .start();
    let status = format!("{tier})");
    assert_eq!(
        wharf.banner.matches(&status).count(),
        2,
        "both apps serve from the {tier} tier:\n{}",
        wharf.banner
    );
    eprintln!("on the {tier} tier");
    (dir, wharf)
}

#[tokio::test]
async fn trap_panic_and_stack_overflow_are_500_and_the_next_request_is_fine() {
    for tier in TIERS {
        let (_dir, wharf) = misbehave_on(tier, "");
        let client = HttpClient::http1();
        for path in ["/misbehave/trap", "/misbehave/panic", "/misbehave/stack"] {
            let reply = client.get(&wharf.url(path)).await.unwrap();
            assert_eq!(reply.status, 500, "{path}: {}", reply.body);
            // Guest internals stay in the log.
            assert!(!reply.body.contains("wasm"), "{}", reply.body);
            let ok = client.get(&wharf.url("/misbehave/ok")).await.unwrap();
            assert_eq!((ok.status, ok.body.as_str()), (200, "ok"));
        }
        wharf
            .wait_for_log(&["guest panicked on purpose"], Duration::from_secs(5))
            .unwrap();
    }
}

#[tokio::test]
async fn infinite_loop_gets_504_in_time_while_others_are_served() {
    for tier in TIERS {
        let (_dir, wharf) = misbehave_on(tier, "");
        let client = HttpClient::http1();
        let started = Instant::now();
        let looping = tokio::spawn({
            let client = client.clone();
            let url = wharf.url("/misbehave/loop");
            async move { client.get(&url).await.unwrap() }
        });
        // While the guest spins, other requests (to the same app and another) are answered.
        let mut served = 0;
        while !looping.is_finished() && served < 200 {
            assert_eq!(client.status(&wharf.url("/hello")).await, 200);
            assert_eq!(client.status(&wharf.url("/misbehave/ok")).await, 200);
            served += 1;
        }
        let reply = looping.await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(reply.status, 504, "{}", reply.body);
        assert!(served > 0, "nothing was served while the guest looped");
        assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
        assert!(
            elapsed < Duration::from_millis(1000) + TIMEOUT_SLACK,
            "{elapsed:?}"
        );
        eprintln!(
            "504 after {elapsed:?} for a 1000 ms deadline; {served} requests served meanwhile"
        );
    }
}

#[tokio::test]
async fn guest_blocked_in_host_call_still_times_out() {
    for tier in TIERS {
        let (_dir, wharf) = misbehave_on(tier, "");
        let started = Instant::now();
        let reply = HttpClient::http1()
            .get(&wharf.url("/misbehave/sleep?ms=60000"))
            .await
            .unwrap();
        assert_eq!(reply.status, 504);
        assert!(started.elapsed() < Duration::from_millis(1000) + TIMEOUT_SLACK);
    }
}

#[tokio::test]
async fn memory_bomb_is_500_and_the_host_lives() {
    for tier in TIERS {
        let (_dir, wharf) = misbehave_on(tier, "");
        let client = HttpClient::http1();
        for _ in 0..3 {
            let reply = client.get(&wharf.url("/misbehave/oom")).await.unwrap();
            assert_eq!(reply.status, 500, "{}", reply.body);
            assert_eq!(client.status(&wharf.url("/misbehave/ok")).await, 200);
        }
    }
}

#[tokio::test]
async fn outbound_http_only_to_allowed_hosts() {
    // A local upstream the manifest allows, and one it does not.
    let allowed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let allowed_addr = allowed.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = allowed.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream",
                )
                .await;
        }
    });
    let denied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let denied_addr = denied.local_addr().unwrap();

    let (_dir, wharf) = misbehave(&format!(
        "allowed_outbound_hosts = [\"http://{allowed_addr}\"]\n"
    ));
    let client = HttpClient::http1();
    let ok = client
        .get(&wharf.url(&format!("/misbehave/outbound?url=http://{allowed_addr}/x")))
        .await
        .unwrap();
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (200, "upstream 200: upstream")
    );

    let refused = client
        .get(&wharf.url(&format!("/misbehave/outbound?url=http://{denied_addr}/x")))
        .await
        .unwrap();
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert!(
        refused.body.contains("HttpRequestDenied"),
        "{}",
        refused.body
    );
    let elsewhere = client
        .get(&wharf.url("/misbehave/outbound?url=http://localhost:1/"))
        .await
        .unwrap();
    assert!(
        elsewhere.body.contains("HttpRequestDenied"),
        "{}",
        elsewhere.body
    );
    wharf
        .wait_for_log(
            &["outbound request refused", &denied_addr.to_string()],
            Duration::from_secs(5),
        )
        .unwrap();
}

/// A server on 127.0.0.1:0 answering every request with `302 Location: location`.
async fn redirector(location: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\
                 connection: close\r\n\r\n"
            );
            let _ = s.write_all(head.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_name_any_rule_allows_is_refused_when_it_resolves_to_loopback() {
    let backend = wharf_tests::Backend::start("inside", "127.0.0.1".parse().unwrap());
    let port = backend.addr().port();
    let (_dir, wharf) = misbehave("allowed_outbound_hosts = [\"*\", \"*.localhost\"]\n");
    let reply = HttpClient::http1()
        .get(&wharf.url(&format!(
            "/misbehave/outbound?url=http://localhost:{port}/x"
        )))
        .await
        .unwrap();
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.body, "refused: ErrorCode::DestinationIpProhibited");
    assert_eq!(backend.connections(), 0, "a connection reached the backend");
    wharf
        .wait_for_log(
            &["outbound request refused", "127.0.0.1 (loopback)"],
            Duration::from_secs(5),
        )
        .unwrap();
}

#[tokio::test]
async fn a_loopback_address_is_reached_through_a_rule_naming_its_ip_literal_or_localhost() {
    let backend = wharf_tests::Backend::start("inside", "127.0.0.1".parse().unwrap());
    let addr = backend.addr();
    for (rule, url) in [
        (format!("http://{addr}"), format!("http://{addr}/x")),
        (
            "localhost".to_string(),
            format!("http://localhost:{}/x", addr.port()),
        ),
    ] {
        let (_dir, wharf) = misbehave(&format!("allowed_outbound_hosts = [\"{rule}\"]\n"));
        let reply = HttpClient::http1()
            .get(&wharf.url(&format!("/misbehave/outbound?url={url}")))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{rule}: {}", reply.body);
        assert!(
            reply.body.starts_with("upstream 200: inside: GET /x"),
            "{rule}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn a_redirect_to_an_internal_address_is_refused_on_the_guest_s_next_request() {
    let inside = wharf_tests::Backend::start("inside", "127.0.0.1".parse().unwrap());
    let location = format!("http://localhost:{}/secret", inside.addr().port());
    let allowed = redirector(location.clone()).await;
    // The redirecting host is named by its literal; the target only by the wildcard.
    let (_dir, wharf) = misbehave(&format!(
        "allowed_outbound_hosts = [\"http://{allowed}\", \"*\"]\n"
    ));
    let reply = HttpClient::http1()
        .get(&wharf.url(&format!(
            "/misbehave/outbound?follow=1&url=http://{allowed}/start"
        )))
        .await
        .unwrap();
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(
        reply.body,
        format!("upstream 302 to {location}\nrefused: ErrorCode::DestinationIpProhibited")
    );
    assert_eq!(inside.connections(), 0, "the redirect target was reached");
}

#[tokio::test]
async fn the_admin_address_is_refused_even_to_a_localhost_rule() {
    let elsewhere = wharf_tests::Backend::start("elsewhere", "127.0.0.1".parse().unwrap());
    let (_dir, _config, wharf) = misbehave_with_config(
        "allowed_outbound_hosts = [\"localhost\"]\n",
        "[admin]\naddress = \"127.0.0.1:0\"\n",
    );
    let admin = wharf.admin.expect("an admin line in the banner");
    let client = HttpClient::http1();
    let get = async |port: u16| {
        let url = format!("/misbehave/outbound?url=http://localhost:{port}/healthz");
        client.get(&wharf.url(&url)).await.unwrap()
    };
    // The rule works for other local services...
    assert_eq!(get(elsewhere.addr().port()).await.status, 200);
    // ...but not for the node's own admin listener.
    let reply = get(admin.port()).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.body, "refused: ErrorCode::DestinationIpProhibited");
    wharf
        .wait_for_log(&["the node's admin or database"], Duration::from_secs(5))
        .unwrap();
}

#[tokio::test]
async fn environment_holds_only_the_app_variables() {
    let (_dir, wharf) = misbehave("[variables]\ncolour = \"teal\"\n");
    let reply = HttpClient::http1()
        .get(&wharf.url("/misbehave/env"))
        .await
        .unwrap();
    let vars: Vec<(String, String)> = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(vars, vec![("colour".to_string(), "teal".to_string())]);
}

#[tokio::test]
async fn guest_output_goes_to_the_log_tagged_with_app_and_request() {
    let (_dir, wharf) = misbehave("");
    let reply = HttpClient::http1()
        .get(&wharf.url("/misbehave/print?marker=zebra42"))
        .await
        .unwrap();
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    for stream in ["stdout", "stderr"] {
        let line = format!("{stream} says zebra42");
        wharf
            .wait_for_log(&[&line, "app=misbehave", &id], Duration::from_secs(5))
            .unwrap();
    }
}

#[tokio::test]
async fn fresh_instance_per_request_unless_reuse_is_opted_in() {
    for tier in TIERS {
        let (_dir, wharf) = misbehave_on(tier, "");
        let client = HttpClient::http1();
        for _ in 0..5 {
            assert_eq!(
                client
                    .get(&wharf.url("/misbehave/count"))
                    .await
                    .unwrap()
                    .body,
                "1"
            );
        }
        drop(wharf);

        let (_dir, wharf) = misbehave_on(tier, "reuse_instances = true\n");
        let mut last = 0;
        for _ in 0..5 {
            last = client
                .get(&wharf.url("/misbehave/count"))
                .await
                .unwrap()
                .body
                .parse()
                .unwrap();
        }
        assert!(last > 1, "instances were not reused");
        // A trap throws the instance away instead of returning it to the pool.
        assert_eq!(client.status(&wharf.url("/misbehave/trap")).await, 500);
        assert_eq!(client.status(&wharf.url("/misbehave/ok")).await, 200);
    }
}

#[tokio::test]
async fn refused_outbound_request_is_logged_with_scheme_host_and_port_only() {
    let denied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let denied_addr = denied.local_addr().unwrap();
    let (_dir, wharf) = misbehave("");
    let reply = HttpClient::http1()
        .get(&wharf.url(&format!(
            "/misbehave/outbound?url=http://{denied_addr}/private/path?token=hunter2secret"
        )))
        .await
        .unwrap();
    assert_eq!(reply.status, 502, "{}", reply.body);
    let line = wharf
        .wait_for_log(&["outbound request refused"], Duration::from_secs(5))
        .unwrap();
    assert!(
        line.contains(&format!("http://{denied_addr}")),
        "no scheme, host and port in: {line}"
    );
    assert!(!line.contains("hunter2secret"), "query logged: {line}");
    assert!(!line.contains("/private/path"), "path logged: {line}");
}

/// The most a guest may print per request and stream, as `guest_log.rs` bounds it.
const GUEST_OUTPUT_PER_REQUEST: usize = 64 * 1024;

#[tokio::test]
async fn guest_printing_in_a_loop_is_cut_at_the_bound_and_the_drop_is_counted() {
    let (_dir, wharf) = misbehave("");
    let client = HttpClient::http1();
    let reply = client
        .get(&wharf.url("/misbehave/spam?lines=20000"))
        .await
        .unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "spammed"));
    assert_eq!(client.status(&wharf.url("/misbehave/ok")).await, 200);
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    let dropped = wharf
        .wait_for_log(&[&id, "guest output dropped"], Duration::from_secs(10))
        .unwrap();
    assert!(dropped.contains(r#"stream="stdout""#), "{dropped}");
    let spam: Vec<String> = wharf
        .log()
        .into_iter()
        .filter(|l| l.contains(&id) && l.contains("spam line"))
        .collect();
    // Each line is about 50 bytes of guest text.
    let bytes = spam.len() * "spam line 00000000 of a guest that prints in a loop".len();
    assert!(
        bytes <= GUEST_OUTPUT_PER_REQUEST,
        "{} lines ({bytes} bytes) of one request's output logged",
        spam.len()
    );
    assert!(!spam.is_empty(), "the output before the bound was lost");
    let reports = wharf
        .log()
        .iter()
        .filter(|l| l.contains(&id) && l.contains("guest output dropped"))
        .count();
    assert_eq!(reports, 1, "one line says how much was dropped");
}

#[tokio::test]
async fn control_characters_in_guest_output_are_escaped_in_the_log() {
    let (_dir, wharf) = misbehave("");
    let reply = HttpClient::http1()
        .get(&wharf.url("/misbehave/control?marker=ctl7q"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let line = wharf
        .wait_for_log(&["ctl7q", "end"], Duration::from_secs(5))
        .unwrap();
    for c in ['\x1b', '\r', '\0'] {
        assert!(!line.contains(c), "raw {c:?} in the log: {line:?}");
    }
    assert!(line.contains(r"\u{1b}[2Jred\rforged\u{0}end"), "{line:?}");
}

/// Whatever wharf writes to stderr goes to a pipe nobody reads: once the pipe is full,
/// every write to it would block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_pipe_nobody_reads_does_not_stall_serving() {
    let dir = apps_dir(&["misbehave"]);
    let wharf = Wharf::builder(dir.path()).unread_stderr().start();
    let addr = wharf.addr;
    let client = HttpClient::http1();
    // Far more than a pipe holds (64 KiB), from several requests.
    for _ in 0..8 {
        let reply = tokio::time::timeout(
            Duration::from_secs(20),
            client.get(&format!("http://{addr}/misbehave/spam?lines=5000")),
        )
        .await
        .expect("a guest printing to a stalled log never finished")
        .unwrap();
        assert_eq!(reply.status, 200);
    }
    let ok = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(&format!("http://{addr}/misbehave/ok")),
    )
    .await
    .expect("serving stalled behind the log")
    .unwrap();
    assert_eq!(ok.status, 200);
}

/// Like `misbehave`, with `config` as the node's wharf.toml.
fn misbehave_with_config(
    manifest: &str,
    config: &str,
) -> (tempfile::TempDir, tempfile::TempDir, Wharf) {
    let dir = apps_dir(&["misbehave", "hello"]);
    std::fs::write(
        dir.path().join("misbehave.toml"),
        format!("timeout_ms = 5000\nmax_memory_mb = 32\n{manifest}"),
    )
    .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let path = config_dir.path().join("wharf.toml");
    std::fs::write(&path, config).unwrap();
    let cache = wharf_tests::shared_cache_dir();
    let wharf = Wharf::start_with(
        dir.path(),
        &[("WHARF_CACHE_DIR", cache.as_os_str())],
        &["--config", path.to_str().unwrap()],
    );
    (dir, config_dir, wharf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_of_one_app_never_leave_the_others_without_one() {
    // Idle instances may fill the whole pool; a request for another app then takes
    // the place of one of them.
    let config = "[apps]\nmax_instances = 8\nmax_idle_instances = 8\n";
    let (_apps, _config, wharf) = misbehave_with_config("reuse_instances = true\n", config);
    let client = HttpClient::http1();
    // Eight at once (each busy for 1.5 s), so eight instances exist, then go idle.
    let busy: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), wharf.url("/misbehave/spin?ms=1500"));
            tokio::spawn(async move { client.get(&url).await.unwrap() })
        })
        .collect();
    for request in busy {
        let reply = request.await.unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "spun"));
    }
    let hello = client.get(&wharf.url("/hello")).await.unwrap();
    assert_eq!(hello.status, 200, "{}", hello.body);
    assert_eq!(client.status(&wharf.url("/misbehave/ok")).await, 200);
}

#[tokio::test]
async fn idle_instances_expire_after_their_time_to_live() {
    let config = "[apps]\nidle_instance_ttl_ms = 500\n";
    let (_apps, _config, wharf) = misbehave_with_config("reuse_instances = true\n", config);
    let client = HttpClient::http1();
    let count =
        |client: HttpClient, url: String| async move { client.get(&url).await.unwrap().body };
    let url = wharf.url("/misbehave/count");
    assert_eq!(count(client.clone(), url.clone()).await, "1");
    assert_eq!(count(client.clone(), url.clone()).await, "2", "not reused");
    let mark = wharf.log_len();
    wharf
        .wait_for_log_since(
            mark,
            &["idle instances expired", "app=misbehave"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(
        count(client, url).await,
        "1",
        "an expired instance was reused"
    );
}

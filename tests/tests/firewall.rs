//! The firewall, end to end.

// Connections: listener rules, caps and the PROXY protocol, before TLS and HTTP.

use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use wharf_tests::{
    Backend, HttpClient, Wharf, apps_dir, https_get_over, next_loopback_ip, poll_until_async,
    tls_client_config,
};

const DEADLINE: Duration = Duration::from_secs(10);
const GET: &[u8] = b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n";

async fn connect_from(ip: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Every byte the server sends until it closes (a reset counts as a close: it comes
/// when the server drops a socket with unread bytes).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    for _ in 0..10_000 {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend(&buf[..n]),
            Err(_) => panic!("still open after {DEADLINE:?}, sent {got:?}"),
        }
    }
    panic!("never closed");
}

/// Sends `prefix` and a GET from `ip`; what came back before the server closed, or
/// the first answer if it keeps the connection open.
async fn get_from(ip: IpAddr, to: SocketAddr, prefix: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut stream = connect_from(ip, to).await;
    let mut request = prefix.to_vec();
    request.extend(GET);
    // A refused connection may be gone before the write.
    let _ = stream.write_all(&request).await;
    let mut buf = vec![0; 4096];
    let n = match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        Ok(Err(_)) => 0,
        Err(_) => panic!("no answer in {DEADLINE:?}"),
    };
    buf.truncate(n);
    (stream, buf)
}

fn status(answer: &[u8]) -> &str {
    std::str::from_utf8(answer)
        .ok()
        .and_then(|a| a.split(' ').nth(1))
        .unwrap_or("closed")
}

fn start(config: &str) -> Wharf {
    let dir = apps_dir(&["hello"]);
    let wharf = Wharf::builder(dir.path()).config(config).start();
    std::mem::forget(dir);
    wharf
}

#[tokio::test]
async fn a_denied_client_is_closed_before_a_byte_is_written() {
    let (denied, other) = (next_loopback_ip(), next_loopback_ip());
    let wharf = start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\ndeny = [\"{denied}\"]\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nallow = [\"{other}\"]\n"
    ));
    let (deny, allow) = (wharf.http[1], wharf.http[2]);
    for to in [deny, allow] {
        let mut stream = connect_from(denied, to).await;
        assert_eq!(read_until_closed(&mut stream).await, b"", "on {to}");
    }
    let (_, answer) = get_from(other, deny, b"").await;
    assert_eq!(status(&answer), "200");
    let (_, answer) = get_from(other, allow, b"").await;
    assert_eq!(status(&answer), "200");
}

#[tokio::test]
async fn a_reload_that_adds_a_deny_applies_to_new_connections() {
    let client = next_loopback_ip();
    let listener = "[[listener]]\naddress = \"127.0.0.1:0\"\n";
    let wharf = start(listener);
    let to = wharf.http[1];
    let (_, answer) = get_from(client, to, b"").await;
    assert_eq!(status(&answer), "200");
    let path = wharf.config.clone().unwrap();
    wharf_tests::replace_file(&path, format!("{listener}deny = [\"{client}\"]\n"));
    wharf.signal("HUP");
    poll_until_async(
        DEADLINE,
        "the reloaded deny closes new connections",
        async || {
            let (_, answer) = get_from(client, to, b"").await;
            match answer.is_empty() {
                true => Ok(()),
                false => Err(status(&answer).to_string()),
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn past_the_per_address_cap_a_connection_is_closed_while_other_addresses_connect() {
    let (busy, other) = (next_loopback_ip(), next_loopback_ip());
    let wharf = start("[firewall]\nmax_connections_per_ip = 2\n");
    let to = wharf.addr;
    // Answered, so counted; kept alive.
    let (first, answer) = get_from(busy, to, b"").await;
    assert_eq!(status(&answer), "200");
    let (_second, answer) = get_from(busy, to, b"").await;
    assert_eq!(status(&answer), "200");
    let mut third = connect_from(busy, to).await;
    assert_eq!(read_until_closed(&mut third).await, b"");
    let (_, answer) = get_from(other, to, b"").await;
    assert_eq!(status(&answer), "200");
    drop(first);
    poll_until_async(
        DEADLINE,
        "a closed connection frees its place",
        async || {
            let (_, answer) = get_from(busy, to, b"").await;
            match status(&answer) {
                "200" => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_admin_listener_answers_when_the_public_ones_are_full() {
    let admin = SocketAddr::new(next_loopback_ip(), 0);
    let wharf = start(&format!(
        "[firewall]\nmax_connections = 20\n[admin]\naddress = \"{admin}\"\n"
    ));
    let mut open = Vec::new();
    for _ in 0..20 {
        let (stream, answer) = get_from(next_loopback_ip(), wharf.addr, b"").await;
        assert_eq!(status(&answer), "200");
        open.push(stream);
    }
    let mut refused = connect_from(next_loopback_ip(), wharf.addr).await;
    assert_eq!(read_until_closed(&mut refused).await, b"");
    let healthz = format!("http://{}/healthz", wharf.admin.unwrap());
    let reply = HttpClient::http1().get(&healthz).await.unwrap();
    assert_eq!(reply.status, 200);
}

fn v2_header(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend(client);
    header.extend([127, 0, 0, 1]);
    header.extend(port.to_be_bytes());
    header.extend(443u16.to_be_bytes());
    header
}

#[tokio::test]
async fn a_trusted_proxys_header_names_the_client_the_rules_see() {
    let proxy = next_loopback_ip();
    let wharf = start(&format!(
        "[firewall]\ntrusted_proxies = [\"{proxy}\"]\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         deny = [\"192.0.2.9\"]\n"
    ));
    let to = wharf.http[1];
    let headers = [
        (
            b"PROXY TCP4 192.0.2.9 127.0.0.1 4711 80\r\n".to_vec(),
            "closed",
        ),
        (
            b"PROXY TCP4 192.0.2.10 127.0.0.1 4711 80\r\n".to_vec(),
            "200",
        ),
        (v2_header([192, 0, 2, 9], 4711), "closed"),
        (v2_header([192, 0, 2, 10], 4711), "200"),
        // The proxy's own health check: no header, the proxy is the client.
        (Vec::new(), "200"),
        (b"PROXY UNKNOWN\r\n".to_vec(), "200"),
        // Malformed: closed.
        (b"PROXY TCP4 192.0.2.10\r\n".to_vec(), "closed"),
    ];
    for (header, expected) in headers {
        let (_, answer) = get_from(proxy, to, &header).await;
        assert_eq!(status(&answer), expected, "{header:?}");
    }
}

#[tokio::test]
async fn a_connection_waiting_for_its_proxy_header_holds_its_place_under_the_cap() {
    let proxy = next_loopback_ip();
    let wharf = start(&format!(
        "[firewall]\ntrusted_proxies = [\"{proxy}\"]\nmax_connections = 2\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n"
    ));
    let to = wharf.http[1];
    let mut waiting = connect_from(proxy, to).await;
    let (_open, answer) = get_from(proxy, to, b"PROXY TCP4 192.0.2.10 127.0.0.1 4711 80\r\n").await;
    assert_eq!(status(&answer), "200");
    // Two open, one of them still silent: a third is closed at once.
    let mut third = connect_from(next_loopback_ip(), to).await;
    assert_eq!(read_until_closed(&mut third).await, b"");
    waiting
        .write_all(b"PROXY TCP4 192.0.2.11 127.0.0.1 4711 80\r\n")
        .await
        .unwrap();
    waiting.write_all(GET).await.unwrap();
    let mut buf = [0; 12];
    waiting.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[tokio::test]
async fn a_header_from_an_untrusted_peer_is_a_bad_request_and_names_nobody() {
    let (proxy, spoofer) = (next_loopback_ip(), next_loopback_ip());
    let wharf = start(&format!(
        "[firewall]\ntrusted_proxies = [\"{proxy}\"]\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         allow = [\"192.0.2.10\"]\n"
    ));
    let to = wharf.http[1];
    // Named by the trusted proxy, 192.0.2.10 is let in.
    let header = b"PROXY TCP4 192.0.2.10 127.0.0.1 4711 80\r\n";
    let (_, answer) = get_from(proxy, to, header).await;
    assert_eq!(status(&answer), "200");
    // Named by anyone else, it is not believed: the rules see the spoofer, who is not
    // allowed in.
    let (_, answer) = get_from(spoofer, to, header).await;
    assert_eq!(status(&answer), "closed");
    // Where the spoofer is let in, the line reaches HTTP, which refuses it and closes.
    let wharf = start(&format!(
        "[firewall]\ntrusted_proxies = [\"{proxy}\"]\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n"
    ));
    let mut stream = connect_from(spoofer, wharf.http[1]).await;
    stream.write_all(header).await.unwrap();
    stream.write_all(GET).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert_eq!(
        status(&answer),
        "400",
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

/// A TLS listener (`listener` holds its extra keys) and a site `fw.test` serving the
/// apps with a `wharf cert dev` certificate made into `dir`, after `top`.
fn tls_config(dir: &std::path::Path, top: &str, listener: &str) -> String {
    let files = wharf::cert::dev(&["fw.test".into()], dir).unwrap();
    format!(
        "{top}\n[[listener]]\naddress = \"127.0.0.1:0\"\ntls = true\n{listener}\n\
         [[site]]\nhosts = [\"fw.test\"]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n",
        files.cert.display(),
        files.key.display()
    )
}

/// The first flight of a real TLS client: its ClientHello for `fw.test`.
fn client_hello(ca: &std::path::Path) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("fw.test").unwrap();
    let mut client = rustls::ClientConnection::new(tls_client_config(ca).unwrap(), name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    hello
}

#[tokio::test]
async fn a_denied_client_gets_no_server_hello_on_a_tls_listener() {
    let (denied, other) = (next_loopback_ip(), next_loopback_ip());
    let dir = tempfile::tempdir().unwrap();
    let wharf = start(&tls_config(
        dir.path(),
        "",
        &format!("deny = [\"{denied}\"]"),
    ));
    let (to, ca) = (wharf.https[0], dir.path().join("wharf-dev-ca.pem"));
    // The same ClientHello: the denied client hears nothing, the other a ServerHello.
    let mut stream = connect_from(denied, to).await;
    let _ = stream.write_all(&client_hello(&ca)).await;
    assert_eq!(read_until_closed(&mut stream).await, b"");
    let mut stream = connect_from(other, to).await;
    stream.write_all(&client_hello(&ca)).await.unwrap();
    let mut first = [0; 1];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(first[0], 0x16, "a TLS handshake record");
    let served = https_get_over(
        connect_from(other, to).await,
        "fw.test",
        None,
        &ca,
        "/hello",
    )
    .await
    .unwrap();
    assert_eq!(served.reply.status, 200);
}

#[tokio::test]
async fn a_proxy_protocol_header_comes_before_the_tls_handshake() {
    let proxy = next_loopback_ip();
    let dir = tempfile::tempdir().unwrap();
    let wharf = start(&tls_config(
        dir.path(),
        &format!("[firewall]\ntrusted_proxies = [\"{proxy}\"]\n"),
        "proxy_protocol = true\ndeny = [\"192.0.2.9\"]",
    ));
    let (to, ca) = (wharf.https[0], dir.path().join("wharf-dev-ca.pem"));
    let mut named = connect_from(proxy, to).await;
    named
        .write_all(b"PROXY TCP4 192.0.2.10 127.0.0.1 4711 443\r\n")
        .await
        .unwrap();
    let served = https_get_over(named, "fw.test", None, &ca, "/hello")
        .await
        .unwrap();
    assert_eq!(served.reply.status, 200);
    // The header names a denied client: closed before any handshake.
    let mut denied = connect_from(proxy, to).await;
    let mut hello = b"PROXY TCP4 192.0.2.9 127.0.0.1 4711 443\r\n".to_vec();
    hello.extend(client_hello(&ca));
    let _ = denied.write_all(&hello).await;
    assert_eq!(read_until_closed(&mut denied).await, b"");
}

/// A site `lb.test` forwarding everything to `backend`, after `top`.
fn upstream_config(backend: &Backend, top: &str) -> String {
    format!(
        "{top}\n[[site]]\nhosts = [\"lb.test\"]\napps = false\n\
         routes = [{{ path = \"/\", upstream = \"app\" }}]\n\
         [[upstream]]\nname = \"app\"\nservers = [{{ address = \"{}\" }}]\n",
        backend.addr()
    )
}

#[tokio::test]
async fn the_client_a_proxy_protocol_header_names_is_the_one_a_backend_hears_of() {
    let proxy = next_loopback_ip();
    let backend = Backend::start("a", next_loopback_ip());
    let wharf = start(&upstream_config(
        &backend,
        &format!(
            "[firewall]\ntrusted_proxies = [\"{proxy}\"]\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n"
        ),
    ));
    let mut stream = connect_from(proxy, wharf.http[1]).await;
    stream
        .write_all(b"PROXY TCP4 192.0.2.10 127.0.0.1 4711 80\r\n")
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert_eq!(
        status(&answer),
        "200",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let seen = backend.last_headers().unwrap();
    assert_eq!(seen["x-forwarded-for"], "192.0.2.10");
}

#[tokio::test]
async fn a_websocket_tunnel_keeps_its_place_under_the_connection_cap() {
    let client = next_loopback_ip();
    let backend = Backend::start("a", next_loopback_ip());
    let wharf = start(&upstream_config(
        &backend,
        "[firewall]\nmax_connections_per_ip = 1\n",
    ));
    let to = wharf.http[0];
    let (mut ws, response) =
        tokio_tungstenite::client_async("ws://lb.test/chat", connect_from(client, to).await)
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    // The upgraded connection is still the client's one connection.
    let mut second = connect_from(client, to).await;
    assert_eq!(read_until_closed(&mut second).await, b"");
    ws.send(Message::text("still here")).await.unwrap();
    let echo = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert_eq!(echo.unwrap().unwrap(), Message::text("still here"));
    ws.close(None).await.unwrap();
    drop(ws);
    poll_until_async(DEADLINE, "the closed tunnel frees its place", async || {
        let answer = ask_from(client, to, "lb.test", "").await;
        match status(answer.as_bytes()) {
            "200" => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await
    .unwrap();
}

// Requests: site rules and rate limits, by the client address.

/// One request from `ip`, on a connection of its own: the head of the answer.
async fn ask_from(ip: IpAddr, to: SocketAddr, host: &str, extra: &str) -> String {
    let head = format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    let mut stream = connect_from(ip, to).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    String::from_utf8_lossy(&read_until_closed(&mut stream).await).into_owned()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn a_site_denying_a_client_answers_403_while_another_site_serves_it() {
    let (denied, other) = (next_loopback_ip(), next_loopback_ip());
    let wharf = start(&format!(
        "[[site]]\nhosts = [\"a.test\"]\ndeny = [\"{denied}\"]\n\
         [[site]]\nhosts = [\"b.test\"]\n"
    ));
    let to = wharf.http[0];
    let answer = ask_from(denied, to, "a.test", "").await;
    assert_eq!(status(answer.as_bytes()), "403", "{answer}");
    assert_eq!(
        status(ask_from(denied, to, "b.test", "").await.as_bytes()),
        "200"
    );
    assert_eq!(
        status(ask_from(other, to, "a.test", "").await.as_bytes()),
        "200"
    );
}

#[tokio::test]
async fn past_its_burst_a_client_gets_429_with_retry_after_until_the_limit_refills() {
    let (client, other) = (next_loopback_ip(), next_loopback_ip());
    let wharf = start("[firewall]\nrate_limit = { per_second = 2, burst = 3 }\n");
    let to = wharf.http[0];
    for i in 0..3 {
        let answer = ask_from(client, to, "localhost", "").await;
        assert_eq!(status(answer.as_bytes()), "200", "request {i}: {answer}");
    }
    let refused = ask_from(client, to, "localhost", "").await;
    assert_eq!(status(refused.as_bytes()), "429", "{refused}");
    assert_eq!(header(&refused, "retry-after"), Some("1"), "{refused}");
    // Another address has its own burst.
    assert_eq!(
        status(ask_from(other, to, "localhost", "").await.as_bytes()),
        "200"
    );
    // Two a second: the next is let in within a second.
    poll_until_async(
        DEADLINE,
        "the refilled limit lets the client in",
        async || match status(ask_from(client, to, "localhost", "").await.as_bytes()) {
            "200" => Ok(()),
            other => Err(other.to_string()),
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_route_limit_counts_that_route_alone() {
    let client = next_loopback_ip();
    let wharf = start(
        "[[site]]\nhosts = [\"localhost\"]\n\
         routes = [{ path = \"/hello\", app = \"hello\", rate_limit = { per_second = 0.1, burst = 1 } }]\n",
    );
    let to = wharf.http[0];
    assert_eq!(
        status(ask_from(client, to, "localhost", "").await.as_bytes()),
        "200"
    );
    let refused = ask_from(client, to, "localhost", "").await;
    assert_eq!(status(refused.as_bytes()), "429", "{refused}");
    // One every ten seconds: the client waits that long.
    assert_eq!(header(&refused, "retry-after"), Some("10"), "{refused}");
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_the_limit_counts_and_anyone_else_cannot() {
    let (proxy, spoofer) = (next_loopback_ip(), next_loopback_ip());
    let wharf = start(&format!(
        "[firewall]\ntrusted_proxies = [\"{proxy}\"]\nrate_limit = {{ per_second = 0.1, burst = 1 }}\n"
    ));
    let to = wharf.http[0];
    let from = |ip, client: &str| {
        let extra = format!("X-Forwarded-For: {client}\r\n");
        async move { status(ask_from(ip, to, "localhost", &extra).await.as_bytes()).to_string() }
    };
    // Behind the proxy, each client has its own limit.
    assert_eq!(from(proxy, "203.0.113.1").await, "200");
    assert_eq!(from(proxy, "203.0.113.1").await, "429");
    assert_eq!(from(proxy, "203.0.113.2").await, "200");
    // Anyone else's header is ignored: a new name each time buys nothing.
    assert_eq!(from(spoofer, "198.51.100.1").await, "200");
    assert_eq!(from(spoofer, "198.51.100.2").await, "429");
}

/// Distinct client addresses the memory test sends (`WHARF_TEST_CLIENTS`).
fn clients() -> u32 {
    std::env::var("WHARF_TEST_CLIENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

#[tokio::test]
async fn a_flood_of_distinct_addresses_is_forgotten_past_max_tracked_clients() {
    // Trusted proxies on a /24 of loopback, so the flood's connections spread over
    // many source addresses.
    let wharf = start(
        "unknown_host = \"404\"\n\
         [firewall]\ntrusted_proxies = [\"127.0.9.0/24\"]\nmax_tracked_clients = 10000\n\
         rate_limit = { per_second = 0.001, burst = 1 }\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n",
    );
    let to = wharf.http[1];
    let before = wharf.memory();
    let n = clients();
    // Each client, named by a PROXY v2 header, asks once: with a burst of one and a
    // refill every 1000 s, a client remembered is refused the second time.
    let ask = move |i: u32| async move {
        let proxy = IpAddr::from([127, 0, 9, 1 + (i % 250) as u8]);
        let client = (0x0a00_0000 + i).to_be_bytes();
        let mut stream = connect_from(proxy, to).await;
        let mut request = v2_header(client, 4711);
        request.extend(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(&request).await.unwrap();
        status(&read_until_closed(&mut stream).await).to_string()
    };
    let started = std::time::Instant::now();
    let workers: Vec<_> = (0..32)
        .map(|w| {
            tokio::spawn(async move {
                for i in (w..n).step_by(32) {
                    assert_eq!(ask(i).await, "404", "client {i}");
                    assert!(started.elapsed() < Duration::from_secs(300), "too slow");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let after = wharf.memory();
    eprintln!(
        "{n} clients in {:?}: resident {} → {} MiB (peak {} MiB)",
        started.elapsed(),
        before.resident >> 20,
        after.resident >> 20,
        after.peak >> 20
    );
    // The newest are remembered (and refused); the first were forgotten to keep the
    // table at 10 000, so they are let in again.
    assert_eq!(ask(n - 1).await, "429");
    assert_eq!(ask(0).await, "404");
}

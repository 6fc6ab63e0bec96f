//! HTTP/2 abuse in raw frames (cleartext, prior knowledge) against a real wharf node:
//! rapid reset, CONTINUATION floods, more streams than allowed, SETTINGS and PING
//! floods, window overflow, and the idle and per-connection request caps (HTTP/1.1
//! too). Each case asserts the exact GOAWAY or RST_STREAM code, that no work reached
//! the guest (the `raw` guest logs every request it handles) or the backend behind the
//! balancer (`wharf_tests::Backend` counts them), and that a fresh connection is served.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_tests::h2::{self, Conn, Frame};
use wharf_tests::{Backend, HttpClient, Wharf, apps_dir, next_loopback_ip, poll_until_async};

const SECOND: Duration = Duration::from_secs(1);
const AUTHORITY: &str = "h2.test";

/// A node serving the `raw` guest under `/raw` and `/lb` from a test backend, with
/// `limits` as its `[limits]` keys.
struct Node {
    node: Wharf,
    backend: Backend,
    _apps: tempfile::TempDir,
}

impl Node {
    fn start(limits: &str) -> Self {
        let apps = apps_dir(&["raw"]);
        let backend = Backend::start("b", next_loopback_ip());
        let config = format!(
            "[[site]]\nhosts = [\"{AUTHORITY}\"]\ndefault = true\n\
             routes = [{{ path = \"/lb\", upstream = \"app\" }}]\n\n\
             [limits]\n{limits}\n\n\
             [[upstream]]\nname = \"app\"\nservers = [{{ address = \"{}\" }}]\n",
            backend.addr()
        );
        let node = Wharf::builder(apps.path()).config(&config).start();
        Self {
            node,
            backend,
            _apps: apps,
        }
    }

    async fn conn(&self) -> Conn {
        Conn::open(self.node.addr).await
    }

    /// Sends `frames` on a new connection, reads until wharf closes it, and asserts it
    /// said GOAWAY with one of `codes` (h2 may answer some floods either way).
    async fn goaway(&self, frames: &[Frame], codes: &[u32]) {
        let mut conn = self.conn().await;
        // wharf may close before the last frames are written.
        let _ = conn.send(frames).await;
        let frames = conn.until_closed(10 * SECOND).await;
        let code = h2::goaway_code(&frames);
        assert!(
            code.is_some_and(|code| codes.contains(&code)),
            "GOAWAY {code:?}, not one of {codes:?}: {frames:?}"
        );
    }

    /// Lines in which the guest said it handled a path starting with `prefix`.
    fn guest_handled(&self, prefix: &str) -> usize {
        let needle = format!("raw guest handled {prefix}");
        self.node
            .log()
            .iter()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// A fresh HTTP/2 connection is served by the guest and the backend alike.
    async fn serves_a_fresh_connection(&self) {
        let client = HttpClient::http2();
        let seen = self.guest_handled("/raw/fresh");
        let reply = client.get(&self.node.url("/raw/fresh")).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let before = self.backend.total_requests();
        let reply = client.get(&self.node.url("/lb/fresh")).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(self.backend.total_requests(), before + 1);
        // The guest's line for it arrives through wharf's log, which leaves in order:
        // once it is in, so is every line of what came before.
        poll_until_async(5 * SECOND, "the guest's line for /raw/fresh", || async {
            match self.guest_handled("/raw/fresh") {
                n if n > seen => Ok(n),
                n => Err(n),
            }
        })
        .await
        .unwrap();
    }
}

/// HEADERS of `GET path` and its RST_STREAM CANCEL, for each of `count` streams from 1.
fn reset_pairs(count: u32, path: &str) -> Vec<Frame> {
    (0..count)
        .flat_map(|i| {
            let stream = 2 * i + 1;
            [
                h2::get(stream, AUTHORITY, path),
                h2::rst_stream(stream, h2::CANCEL),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_reset_streams_gets_goaway_enhance_your_calm_and_starts_no_work() {
    let node = Node::start("");
    for path in ["/raw/reset", "/lb/reset"] {
        node.goaway(&reset_pairs(500, path), &[h2::ENHANCE_YOUR_CALM])
            .await;
    }
    node.serves_a_fresh_connection().await;
    assert_eq!(node.guest_handled("/raw/reset"), 0);
    assert_eq!(node.backend.total_requests(), 1, "only the fresh request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_spread_over_time_count_as_glitches_until_goaway() {
    let node = Node::start("http2_max_glitches = 10");
    let mut conn = node.conn().await;
    // One pair per write, each answered or not before the next: h2's own cap on
    // resets waiting to be accepted never fills, the glitch count does.
    let mut frames = Vec::new();
    for pair in reset_pairs(11, "/lb/slow-reset").chunks(2) {
        if conn.send(pair).await.is_err() {
            break;
        }
    }
    frames.extend(conn.until_closed(10 * SECOND).await);
    assert_eq!(h2::goaway_code(&frames), Some(h2::NO_ERROR), "{frames:?}");
    node.serves_a_fresh_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_past_max_concurrent_streams_is_refused_and_the_others_are_served() {
    let node = Node::start("http2_max_concurrent_streams = 4");
    node.backend.set_delay(SECOND);
    let mut conn = node.conn().await;
    let requests: Vec<Frame> = (0..5)
        .map(|i| h2::get(2 * i + 1, AUTHORITY, "/lb/concurrent"))
        .collect();
    conn.send(&requests).await.unwrap();
    let mut answered = Vec::new();
    let mut refused = Vec::new();
    // Bounded: five streams, each ends in a response head or a reset.
    while answered.len() + refused.len() < 5 {
        let frame = conn.next(10 * SECOND).await.expect("connection open");
        match frame.kind {
            h2::HEADERS => answered.push(frame.stream),
            h2::RST_STREAM => refused.push((frame.stream, frame.error_code())),
            h2::GOAWAY => panic!("GOAWAY {frame:?}"),
            _ => {}
        }
    }
    assert_eq!(refused, [(9, Some(h2::REFUSED_STREAM))]);
    answered.sort();
    assert_eq!(answered, [1, 3, 5, 7]);
    assert_eq!(node.backend.total_requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_ends_at_the_header_list_size() {
    let node = Node::start("max_header_bytes = 16384\nhttp2_max_glitches = 1000000");
    // A header block that never ends, in frames of honest size: only the header list
    // size stops it.
    let mut frames = vec![Frame::new(
        h2::HEADERS,
        0,
        1,
        &h2::get_block(AUTHORITY, "/raw/continuation"),
    )];
    let field = h2::literal("x-flood", &"a".repeat(4000));
    for _ in 0..64 {
        frames.push(Frame::new(h2::CONTINUATION, 0, 1, &field));
    }
    node.goaway(&frames, &[h2::PROTOCOL_ERROR, h2::ENHANCE_YOUR_CALM])
        .await;
    node.serves_a_fresh_connection().await;
    assert_eq!(node.guest_handled("/raw/continuation"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tiny_continuations_gets_goaway_enhance_your_calm() {
    let node = Node::start("");
    let mut frames = vec![Frame::new(
        h2::HEADERS,
        0,
        1,
        &h2::get_block(AUTHORITY, "/raw/tiny"),
    )];
    let field = h2::literal("a", "b");
    for _ in 0..100 {
        frames.push(Frame::new(h2::CONTINUATION, 0, 1, &field));
    }
    // h2 caps the CONTINUATION frames of one header block itself.
    node.goaway(&frames, &[h2::ENHANCE_YOUR_CALM]).await;
    node.serves_a_fresh_connection().await;
    assert_eq!(node.guest_handled("/raw/tiny"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_get_goaway_and_the_connection_closes() {
    let node = Node::start("");
    let settings: Vec<Frame> = (0..1000).map(|_| h2::settings(&[])).collect();
    node.goaway(&settings, &[h2::NO_ERROR]).await;
    let pings: Vec<Frame> = (0..1000).map(h2::ping).collect();
    node.goaway(&pings, &[h2::NO_ERROR]).await;
    node.serves_a_fresh_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_update_past_2_pow_31_is_a_flow_control_error() {
    let node = Node::start("");
    node.goaway(
        &[h2::window_update(0, 0x7fff_ffff)],
        &[h2::FLOW_CONTROL_ERROR],
    )
    .await;
    node.serves_a_fresh_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway_after_the_keepalive_timeout() {
    let node = Node::start("keepalive_timeout_ms = 300");
    let mut conn = node.conn().await;
    conn.send(&[h2::get(1, AUTHORITY, "/raw/before-idle")])
        .await
        .unwrap();
    let frames = conn.until_closed(10 * SECOND).await;
    assert!(
        frames
            .iter()
            .any(|f| f.kind == h2::HEADERS && f.stream == 1),
        "the request is answered first: {frames:?}"
    );
    assert_eq!(h2::goaway_code(&frames), Some(h2::NO_ERROR), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_is_closed_after_the_keepalive_timeout() {
    let node = Node::start("keepalive_timeout_ms = 300\nheader_read_timeout_ms = 60000");
    let mut tcp = tokio::net::TcpStream::connect(node.node.addr)
        .await
        .unwrap();
    tcp.write_all(b"GET /raw/idle HTTP/1.1\r\nHost: h2.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // read_to_end returns only when wharf closes the idle connection.
    tokio::time::timeout(10 * SECOND, tcp.read_to_end(&mut answer))
        .await
        .expect("closed within the deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_http1_request_a_connection_may_carry_is_answered_with_connection_close() {
    let node = Node::start("max_requests_per_connection = 2");
    let mut tcp = tokio::net::TcpStream::connect(node.node.addr)
        .await
        .unwrap();
    // Three pipelined requests: the third never reaches the guest.
    let request = |n| format!("GET /raw/cap{n} HTTP/1.1\r\nHost: h2.test\r\n\r\n");
    let requests = format!("{}{}{}", request(1), request(2), request(3));
    tcp.write_all(requests.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(10 * SECOND, tcp.read_to_end(&mut answer))
        .await
        .expect("closed within the deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert_eq!(answer.matches("http/1.1 200 ok").count(), 2, "{answer}");
    assert_eq!(answer.matches("connection: close").count(), 1, "{answer}");
    node.serves_a_fresh_connection().await;
    assert_eq!(node.guest_handled("/raw/cap3"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_gets_goaway_after_max_requests_per_connection() {
    let node = Node::start("max_requests_per_connection = 2");
    let mut conn = node.conn().await;
    for stream in [1, 3] {
        conn.send(&[h2::get(stream, AUTHORITY, "/raw/h2cap")])
            .await
            .unwrap();
    }
    let frames = conn.until_closed(10 * SECOND).await;
    let mut answered: Vec<u32> = frames
        .iter()
        .filter(|f| f.kind == h2::HEADERS)
        .map(|f| f.stream)
        .collect();
    // The two streams run at once: either may be answered first.
    answered.sort();
    assert_eq!(answered, [1, 3], "{frames:?}");
    assert_eq!(h2::goaway_code(&frames), Some(h2::NO_ERROR), "{frames:?}");
}

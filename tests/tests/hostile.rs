//! The HTTP/1 bad-input suite: hostile requests as raw bytes on a real TCP connection
//! to a real node, through an app route (the `raw` guest, which logs a line per request
//! it handles) and an `[[upstream]]` route (a test backend, which counts requests).
//! Each case asserts the exact status, that the connection closed after it, that a
//! request pipelined behind it never reached the guest or the backend, and that a
//! fresh request right after is served.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use wharf_tests::{Backend, Wharf, apps_dir, next_loopback_ip};

/// Short enough for a test, long enough for a debug build under load.
const HEADER_READ_TIMEOUT_MS: u64 = 500;
const BODY_IDLE_TIMEOUT_MS: u64 = 500;
const MAX_BODY_BYTES: usize = 1024;

/// The longest any answer may take to arrive and its connection to close.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// A node whose default site serves the `raw` guest under `/raw` and the backend under
/// `/up`.
struct Site {
    wharf: Wharf,
    backend: Backend,
    /// How many marker requests [`Site::guest_saw`] has sent.
    markers: AtomicU32,
    _apps: tempfile::TempDir,
}

impl Site {
    fn start() -> Self {
        let backend = Backend::start("b", next_loopback_ip());
        let apps = apps_dir(&["raw"]);
        let config = format!(
            "[limits]\n\
             max_body_bytes = {MAX_BODY_BYTES}\n\
             header_read_timeout_ms = {HEADER_READ_TIMEOUT_MS}\n\
             body_idle_timeout_ms = {BODY_IDLE_TIMEOUT_MS}\n\n\
             [[site]]\nhosts = [\"hostile.test\"]\ndefault = true\n\
             routes = [{{ path = \"/up\", upstream = \"b\" }}]\n\n\
             [[upstream]]\nname = \"b\"\nservers = [{{ address = \"{}\" }}]\n\
             # Every failed body counts against the backend; none may eject it here.\n\
             outlier = {{ consecutive_failures = 0 }}\n",
            backend.addr()
        );
        let wharf = Wharf::builder(apps.path()).config(&config).start();
        Self {
            wharf,
            backend,
            markers: AtomicU32::new(0),
            _apps: apps,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.wharf.addr
    }

    /// Requests the guest handled whose path contains `needle`, of all sent so far.
    /// wharf's log leaves through one writer thread, in order, and may lag the answers:
    /// once the guest's line for a marker request sent now is in, every earlier one is.
    fn guest_saw(&self, needle: &str) -> usize {
        let marker = format!(
            "/raw/marker-{}",
            self.markers.fetch_add(1, Ordering::Relaxed)
        );
        let request =
            format!("GET {marker} HTTP/1.1\r\nHost: hostile.test\r\nConnection: close\r\n\r\n");
        assert_eq!(exchange(self.addr(), request.as_bytes()).statuses, [200]);
        self.wharf
            .wait_for_log(&[&format!("raw guest handled {marker}")], ANSWER_DEADLINE)
            .unwrap();
        let line = format!("raw guest handled {needle}");
        self.wharf
            .log()
            .iter()
            .filter(|l| l.contains(&line))
            .count()
    }

    /// Sends `request` to `route` (`/raw` or `/up`) with a smuggled request behind
    /// it, and checks the answer is `status` alone on a connection closed after it,
    /// that the backend (on `/up`) got at most `reached` requests, and that the next
    /// client is served.
    fn refuses(&self, route: &str, request: &str, status: u16, reached: u64) {
        let before = self.backend.total_requests();
        let request = request.replace("ROUTE", route);
        let answer = exchange(
            self.addr(),
            format!("{request}{}", smuggled(route)).as_bytes(),
        );
        assert_eq!(
            answer.statuses,
            [status],
            "for {request:?}:\n{}",
            answer.text
        );
        assert!(
            answer.closed,
            "left open after {request:?}:\n{}",
            answer.text
        );
        self.nothing_smuggled();
        if route == "/up" {
            // The head of one whose body fails mid-way may or may not have gone out.
            let got = self.backend.total_requests() - before;
            assert!(got <= reached, "the backend got {got} for {request:?}");
        }
        self.serves(route);
    }

    fn nothing_smuggled(&self) {
        assert_eq!(
            self.guest_saw("/raw/smuggled"),
            0,
            "the guest ran a smuggled request"
        );
        let deletes = self.backend.requests(&http::Method::DELETE);
        assert_eq!(deletes, 0, "the backend got a smuggled request");
    }

    /// A well-formed request on a new connection gets 200.
    fn serves(&self, route: &str) {
        let request =
            format!("GET {route}/ok HTTP/1.1\r\nHost: hostile.test\r\nConnection: close\r\n\r\n");
        let answer = exchange(self.addr(), request.as_bytes());
        assert_eq!(
            answer.statuses,
            [200],
            "a fresh request to {route}:\n{}",
            answer.text
        );
    }
}

/// The request a hostile one hides behind itself; its method (DELETE) is one no case
/// uses, so the backend's count of it tells whether it got through.
fn smuggled(route: &str) -> String {
    match route {
        "/up" => "DELETE /up/smuggled HTTP/1.1\r\nHost: hostile.test\r\n\r\n".into(),
        _ => "DELETE /raw/smuggled HTTP/1.1\r\nHost: hostile.test\r\n\r\n".into(),
    }
}

/// What came back on one connection.
struct Answer {
    /// The status of each response, in order.
    statuses: Vec<u16>,
    text: String,
    /// The server closed the connection (within [`ANSWER_DEADLINE`]).
    closed: bool,
}

/// Sends `bytes` on a new connection and reads until the server closes it, for at
/// most [`ANSWER_DEADLINE`].
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(bytes).unwrap();
    read_until_close(&mut stream)
}

fn read_until_close(stream: &mut TcpStream) -> Answer {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + ANSWER_DEADLINE;
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        if Instant::now() >= deadline {
            break false;
        }
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // A close with the client's bytes unread is a reset: closed all the same.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("reading the answer: {e}"),
        }
    };
    let text = String::from_utf8_lossy(&received).into_owned();
    Answer {
        statuses: statuses(&text),
        text,
        closed,
    }
}

/// The status of every response in `text`: each starts a line with `HTTP/1.x NNN`
/// (no body of this suite's answers has such a line).
fn statuses(text: &str) -> Vec<u16> {
    text.split("\r\n")
        .filter_map(|line| line.strip_prefix("HTTP/1."))
        .filter_map(|rest| rest.get(2..5)?.parse().ok())
        .collect()
}

const HOST: &str = "Host: hostile.test\r\n";

#[test]
fn malformed_framing_gets_400_on_a_closed_connection_and_nothing_behind_it_is_served() {
    let site = Site::start();
    let cases = [
        // RFC 9112 §6.3: a request whose last coding is not chunked has no knowable
        // length: 400 and close. (nginx answers 501 for a coding it does not know; the
        // RFC's answer is the right one for a request.)
        "POST ROUTE/body HTTP/1.1\r\nHOSTTransfer-Encoding: gzip\r\n\r\n",
        "POST ROUTE/body HTTP/1.1\r\nHOSTContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        "POST ROUTE/body HTTP/1.1\r\nHOSTContent-Length: 4x\r\n\r\nabcd",
        "POST ROUTE/body HTTP/1.1\r\nHOSTContent-Length: -4\r\n\r\nabcd",
    ];
    for route in ["/raw", "/up"] {
        for case in cases {
            site.refuses(route, &case.replace("HOST", HOST), 400, 0);
        }
    }
}

#[test]
fn malformed_header_fields_get_400_on_a_closed_connection_and_nothing_behind_them_is_served() {
    let site = Site::start();
    let cases = [
        // obs-fold: a line starting with a space continues the last field for some
        // parsers and starts a new one for others.
        "GET ROUTE/a HTTP/1.1\r\nHOSTX-A: a\r\n b\r\n\r\n",
        "GET ROUTE/a HTTP/1.1\r\nHOSTX-A: a\0b\r\n\r\n",
        "GET ROUTE/a HTTP/1.1\r\nHOSTX-A: a\rb\r\n\r\n",
        "GET ROUTE/a HTTP/1.1\r\nHOSTX_A: a\r\n\r\n",
        // No Host and two Hosts (RFC 9112 §3.2): answered by the gateway, which hyper
        // leaves it to, on a connection that closes as well.
        "GET ROUTE/a HTTP/1.1\r\n\r\n",
        "GET ROUTE/a HTTP/1.1\r\nHOSTHost: other.test\r\n\r\n",
    ];
    for route in ["/raw", "/up"] {
        for case in cases {
            site.refuses(route, &case.replace("HOST", HOST), 400, 0);
        }
    }
}

#[test]
fn oversized_heads_get_431_or_414_on_a_closed_connection() {
    let site = Site::start();
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let fields = format!("GET ROUTE/a HTTP/1.1\r\n{HOST}{many}\r\n");
    let cookie = "c".repeat(40 * 1024);
    let big = format!("GET ROUTE/a HTTP/1.1\r\n{HOST}Cookie: {cookie}\r\n\r\n");
    // 10 KB: past max_uri_bytes, answered by the gateway; 70 KB: past hyper's own cap
    // on targets, answered by hyper, whose buffer holds it whole for that.
    let uri = |len: usize| format!("GET ROUTE/{} HTTP/1.1\r\n{HOST}\r\n", "u".repeat(len));
    for route in ["/raw", "/up"] {
        site.refuses(route, &fields, 431, 0);
        site.refuses(route, &big, 431, 0);
        site.refuses(route, &uri(10 * 1024), 414, 0);
        site.refuses(route, &uri(70 * 1024), 414, 0);
    }
}

#[test]
fn a_body_over_the_limit_gets_413_declared_streamed_or_expecting_100_continue() {
    let site = Site::start();
    let over = MAX_BODY_BYTES + 1;
    let declared = format!("POST ROUTE/body HTTP/1.1\r\n{HOST}Content-Length: {over}\r\n\r\n");
    let chunk = "b".repeat(MAX_BODY_BYTES / 2);
    let chunked = format!(
        "POST ROUTE/body HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n1\r\nb\r\n0\r\n\r\n",
        len = chunk.len()
    );
    for route in ["/raw", "/up"] {
        // Refused on its head: neither the guest nor the backend sees it.
        site.refuses(route, &declared, 413, 0);
        // Refused once past the limit: the backend may have had the request's start.
        site.refuses(route, &chunked, 413, 1);
        let expect = format!(
            "POST {route}/body HTTP/1.1\r\n{HOST}Content-Length: {over}\r\nExpect: 100-continue\r\n\r\n"
        );
        let answer = exchange(site.addr(), expect.as_bytes());
        assert_eq!(
            answer.statuses,
            [413],
            "no 100 Continue before it:\n{}",
            answer.text
        );
        assert!(answer.closed);
        site.serves(route);
    }
}

#[test]
fn a_bad_chunk_size_gets_400_on_a_closed_connection() {
    let site = Site::start();
    let bad = format!(
        "POST ROUTE/body HTTP/1.1\r\n{HOST}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    );
    site.refuses("/raw", &bad, 400, 0);
    // The backend may have had the head before the body failed.
    site.refuses("/up", &bad, 400, 1);
}

#[test]
fn content_length_with_chunked_is_read_as_chunked_and_the_connection_closes() {
    // RFC 9112 §6.1: a server may refuse such a request or read it by its
    // Transfer-Encoding, and must close after answering. hyper reads it as chunked
    // (as HAProxy does; nginx refuses it with 400); what hides behind it never runs.
    let site = Site::start();
    let both = format!(
        "POST ROUTE/body HTTP/1.1\r\n{HOST}Content-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    site.refuses("/raw", &both, 200, 0);
    assert_eq!(site.guest_saw("/raw/body"), 1);
    site.refuses("/up", &both, 200, 1);
}

#[test]
fn a_head_never_finished_is_closed_by_the_header_read_timeout() {
    let site = Site::start();
    let started = Instant::now();
    let mut stream = TcpStream::connect(site.addr()).unwrap();
    stream
        .write_all(b"GET /raw/a HTTP/1.1\r\nHost: hostile.test\r\nX-Slow: ")
        .unwrap();
    let answer = read_until_close(&mut stream);
    // hyper closes without an answer, as nginx does on client_header_timeout.
    assert!(answer.closed, "still open after {:?}", started.elapsed());
    assert_eq!(answer.text, "");
    assert!(started.elapsed() >= Duration::from_millis(HEADER_READ_TIMEOUT_MS));
    site.serves("/raw");
}

#[test]
fn a_body_that_stops_arriving_gets_408_on_a_closed_connection() {
    let site = Site::start();
    for (route, reached) in [("/raw", 0), ("/up", 1)] {
        let before = site.backend.total_requests();
        let mut stream = TcpStream::connect(site.addr()).unwrap();
        let head = format!("POST {route}/body HTTP/1.1\r\n{HOST}Content-Length: 100\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&[b'x'; 10]).unwrap();
        let answer = read_until_close(&mut stream);
        assert_eq!(answer.statuses, [408], "{route}:\n{}", answer.text);
        assert!(answer.closed);
        if route == "/up" {
            assert!(site.backend.total_requests() - before <= reached);
        }
        site.serves(route);
    }
}

#[test]
fn a_request_pipelined_after_a_malformed_one_is_never_served() {
    let site = Site::start();
    // The second request is well-formed; the first ends where a lenient parser would
    // let it end.
    let first = format!("GET /raw/a HTTP/1.1\r\n{HOST}X-A: a\0\r\n\r\n");
    let answer = exchange(
        site.addr(),
        format!("{first}{}", smuggled("/raw")).as_bytes(),
    );
    assert_eq!(answer.statuses, [400], "{}", answer.text);
    assert!(answer.closed);
    site.nothing_smuggled();
    // A good request then a smuggled one are both served: pipelining itself works.
    let good = format!(
        "GET /raw/a HTTP/1.1\r\n{HOST}\r\nGET /raw/b HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n"
    );
    assert_eq!(exchange(site.addr(), good.as_bytes()).statuses, [200, 200]);
}

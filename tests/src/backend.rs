//! A small HTTP server to put behind a balancer, run in the test process and steered
//! while it runs: what a backend does wrong on purpose (answers late, fails, dies in the
//! middle of a request, goes away and comes back), and what it saw (requests by method,
//! the last request's headers, how many body bytes arrived).
//!
//! ```no_run
//! # use wharf_tests::{Backend, Mode};
//! # use std::time::Duration;
//! let backend = Backend::start("a", "127.0.0.5".parse().unwrap());
//! backend.set_delay(Duration::from_millis(50));
//! backend.set_mode(Mode::Fail { status: 503, retry_after: Some(1) });
//! backend.stop();
//! backend.resume();
//! ```
//!
//! Every answer carries `x-backend: NAME`, and its body starts with the name. What it
//! answers:
//! - `Upgrade: websocket` → `101` and an echo of every message (text, binary, ping),
//!   until the client closes.
//! - any other request → its body read frame by frame and dropped (only the bytes are
//!   counted, so a 1 GiB upload costs no memory), then, after the delay, `200` with
//!   `NAME: METHOD PATH, N body bytes`, or the failure [`Mode`] asks for.
//!
//! It runs on a tokio runtime of its own (one worker thread), so a test's runtime, sync
//! code and a benchmark can all use it, and its timing does not depend on what the test
//! does with its own threads.

use crate::poll::poll_until;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// How long [`Backend::stop`] waits for its listener and connections to be gone.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a backend does with the next requests (WebSocket upgrades included: unless it
/// dies, they are echoed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads the body, waits the delay, answers 200.
    Answer,
    /// Reads the body, waits the delay, answers `status` (with `Retry-After: SECONDS`
    /// when given).
    Fail {
        status: u16,
        retry_after: Option<u32>,
    },
    /// Reads the request head, then closes the connection without a byte of answer
    /// (and without reading the body): a process that crashed while handling it.
    DieMidRequest,
}

/// A running test backend; stopped (listener and connections) when dropped.
pub struct Backend {
    addr: SocketAddr,
    state: Arc<State>,
    /// The accept loop, which owns every connection task: aborting it cuts them all.
    serving: Mutex<Option<JoinHandle<()>>>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

/// What the handle steers and reads; shared with every connection.
struct State {
    name: Mutex<String>,
    delay: Mutex<Duration>,
    mode: Mutex<Mode>,
    requests: Mutex<HashMap<Method, u64>>,
    last_headers: Mutex<Option<HeaderMap>>,
    body_bytes: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    /// Starts a backend named `name` on port 0 of `ip` (any 127.0.0.x); [`Backend::addr`]
    /// is the port it got.
    pub fn start(name: &str, ip: IpAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("backend-{name}"))
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(State {
            name: Mutex::new(name.to_owned()),
            delay: Mutex::new(Duration::ZERO),
            mode: Mutex::new(Mode::Answer),
            requests: Mutex::new(HashMap::new()),
            last_headers: Mutex::new(None),
            body_bytes: AtomicU64::new(0),
            in_flight: Arc::default(),
            connections: Arc::default(),
        });
        let listener = bind(&runtime, SocketAddr::new(ip, 0));
        let addr = listener.local_addr().unwrap();
        let serving = runtime.spawn(accept_loop(listener, state.clone()));
        Self {
            addr,
            state,
            serving: Mutex::new(Some(serving)),
            runtime: Some(runtime),
        }
    }

    /// Where it listens (the same after [`Backend::resume`]).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> String {
        self.state.name.lock().unwrap().clone()
    }

    /// The name later answers carry.
    pub fn set_name(&self, name: &str) {
        *self.state.name.lock().unwrap() = name.to_owned();
    }

    /// How long later requests wait (after their body) before they are answered.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// What later requests get.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Requests with `method` whose head it has read (health checks and upgrades too).
    pub fn requests(&self, method: &Method) -> u64 {
        let requests = self.state.requests.lock().unwrap();
        requests.get(method).copied().unwrap_or(0)
    }

    /// Requests of any method whose head it has read.
    pub fn total_requests(&self) -> u64 {
        self.state.requests.lock().unwrap().values().sum()
    }

    /// The headers of the last request it read.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.state.last_headers.lock().unwrap().clone()
    }

    /// Request body bytes received, over all requests.
    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::Relaxed)
    }

    /// Requests read and not answered yet (waiting for their body or their delay).
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    /// Client connections open now (WebSocket ones included).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Closes the listener (new connections are refused) and cuts every open
    /// connection, mid-request or not; returns once both are done.
    pub fn stop(&self) {
        if let Some(serving) = self.serving.lock().unwrap().take() {
            serving.abort();
            poll_until(STOP_TIMEOUT, "the backend's accept loop ends", || {
                serving.is_finished().then_some(()).ok_or(())
            })
            .unwrap();
        }
        poll_until(
            STOP_TIMEOUT,
            "the backend's connections are closed",
            || match self.connections() {
                0 => Ok(()),
                open => Err(open),
            },
        )
        .unwrap();
    }

    /// Listens again on the same address after [`Backend::stop`] (nothing if it runs).
    pub fn resume(&self) {
        let mut serving = self.serving.lock().unwrap();
        if serving.is_none() {
            let runtime = self.runtime.as_ref().unwrap();
            let listener = bind(runtime, self.addr);
            *serving = Some(runtime.spawn(accept_loop(listener, self.state.clone())));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Not a blocking shutdown: the test dropping it may be inside its own runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A listener on `addr`; SO_REUSEADDR, so that a backend stopped with connections in
/// TIME_WAIT can listen on its port again.
fn bind(runtime: &tokio::runtime::Runtime, addr: SocketAddr) -> TcpListener {
    let _context = runtime.enter();
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("backend binding {addr}: {e}"));
    socket.listen(1024).unwrap()
}

/// Serves connections until aborted; the connection tasks live in its [`JoinSet`], so
/// aborting it aborts them too, and upgraded connections end when `stopping` (dropped
/// with it) closes.
async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    let (_stopping, stopped) = watch::channel(());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Per-connection trouble (a reset before accept, EMFILE): try the next.
            Err(_) => continue,
        };
        // Reap finished tasks, so a long-lived backend does not hold them all.
        while connections.try_join_next().is_some() {}
        let (state, stopped) = (state.clone(), stopped.clone());
        let open = Counted::new(&state.connections);
        connections.spawn(async move {
            let _open = open;
            let service =
                hyper::service::service_fn(move |req| handle(req, state.clone(), stopped.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // An error is the connection ending badly (a client gone, a death on
            // purpose): nothing to do but close it.
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One more in a count while it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a request got no answer: hyper then closes the connection without writing one.
#[derive(Debug)]
struct Died;

impl std::fmt::Display for Died {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("died mid-request on purpose")
    }
}

impl std::error::Error for Died {}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    stopped: watch::Receiver<()>,
) -> Result<Response<Full<Bytes>>, Died> {
    let _in_flight = Counted::new(&state.in_flight);
    *state
        .requests
        .lock()
        .unwrap()
        .entry(req.method().clone())
        .or_default() += 1;
    *state.last_headers.lock().unwrap() = Some(req.headers().clone());
    let name = state.name.lock().unwrap().clone();
    let mode = *state.mode.lock().unwrap();
    if mode == Mode::DieMidRequest {
        return Err(Died);
    }
    if is_websocket(&req) {
        return Ok(websocket(req, &name, &state, stopped));
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut body = req.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The client (the balancer) went away mid-body: no one to answer.
            return Err(Died);
        };
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
            state
                .body_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    }
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, text) = match mode {
        Mode::Fail { status, .. } => (status, format!("{name}: failing with {status}\n")),
        _ => (
            200,
            format!("{name}: {method} {path}, {bytes} body bytes\n"),
        ),
    };
    let mut response = Response::builder()
        .status(status)
        .header("x-backend", &name)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
    if let Mode::Fail {
        retry_after: Some(seconds),
        ..
    } = mode
    {
        response = response.header(header::RETRY_AFTER, seconds);
    }
    Ok(response.body(Full::new(Bytes::from(text))).unwrap())
}

fn is_websocket<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// Answers the handshake (101) and echoes messages on the upgraded connection, which
/// counts as a connection until it closes or the backend stops.
fn websocket(
    req: Request<Incoming>,
    name: &str,
    state: &State,
    mut stopped: watch::Receiver<()>,
) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header("x-backend", name)
            .body(Full::new(Bytes::from(format!(
                "{name}: a WebSocket upgrade needs Sec-WebSocket-Key\n"
            ))))
            .unwrap();
    };
    let accept = derive_accept_key(key.as_bytes());
    let open = Counted::new(&state.connections);
    tokio::spawn(async move {
        let _open = open;
        let echo = async {
            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                return;
            };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            // Pings are answered by tungstenite itself; text and binary come back.
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            _ = echo => {}
            _ = stopped.changed() => {}
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("x-backend", name)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).unwrap(),
        )
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HttpClient, next_loopback_ip};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn it_names_itself_counts_requests_by_method_and_keeps_the_last_headers() {
        let backend = Backend::start("a", next_loopback_ip());
        let client = HttpClient::http1();
        let url = format!("http://{}/x", backend.addr());
        let reply = client.get_with(&url, &[("x-probe", "1")]).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["x-backend"], "a");
        assert_eq!(reply.body, "a: GET /x, 0 body bytes\n");
        let reply = client.post_json(&url, "{\"k\":1}").await.unwrap();
        assert_eq!(reply.body, "a: POST /x, 7 body bytes\n");
        assert_eq!(backend.requests(&Method::GET), 1);
        assert_eq!(backend.requests(&Method::POST), 1);
        assert_eq!(backend.total_requests(), 2);
        assert_eq!(backend.body_bytes(), 7);
        let headers = backend.last_headers().unwrap();
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.get("x-probe").is_none(), "{headers:?}");

        backend.set_name("b");
        assert_eq!(client.get(&url).await.unwrap().headers["x-backend"], "b");
    }

    #[tokio::test]
    async fn it_answers_late_and_fails_with_the_status_and_retry_after_it_is_given() {
        let backend = Backend::start("slow", next_loopback_ip());
        let client = HttpClient::http1();
        let url = format!("http://{}/", backend.addr());
        backend.set_delay(Duration::from_millis(200));
        let start = Instant::now();
        assert_eq!(client.status(&url).await, 200);
        assert!(start.elapsed() >= Duration::from_millis(200));

        backend.set_delay(Duration::ZERO);
        backend.set_mode(Mode::Fail {
            status: 503,
            retry_after: Some(7),
        });
        let reply = client.get(&url).await.unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.headers["retry-after"], "7");
        assert_eq!(reply.headers["x-backend"], "slow");
        assert_eq!(reply.body, "slow: failing with 503\n");
    }

    #[tokio::test]
    async fn dying_mid_request_closes_the_connection_without_a_byte_of_answer() {
        let backend = Backend::start("dies", next_loopback_ip());
        backend.set_mode(Mode::DieMidRequest);
        let mut stream = tokio::net::TcpStream::connect(backend.addr())
            .await
            .unwrap();
        let head = "POST /orders HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("the backend keeps the connection open");
        // A reset (the unread body) or a plain close: either way, no answer.
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
        drop(read);
        assert_eq!(backend.requests(&Method::POST), 1);
    }

    #[tokio::test]
    async fn stopping_refuses_connections_and_cuts_open_ones_and_it_resumes_on_the_same_port() {
        let backend = Backend::start("b", next_loopback_ip());
        let addr = backend.addr();
        backend.set_delay(Duration::from_secs(30));
        let client = HttpClient::http1();
        let url = format!("http://{addr}/");
        let pending = tokio::spawn({
            let (client, url) = (client.clone(), url.clone());
            async move { client.get(&url).await }
        });
        crate::poll_until_async(Duration::from_secs(5), "the request arrives", async || {
            match backend.in_flight() {
                1 => Ok(()),
                n => Err(n),
            }
        })
        .await
        .unwrap();

        let start = Instant::now();
        backend.stop();
        let cut = pending.await.unwrap();
        assert!(cut.is_err(), "{cut:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

        backend.set_delay(Duration::ZERO);
        backend.resume();
        assert_eq!(backend.addr(), addr);
        assert_eq!(HttpClient::http1().status(&url).await, 200);
    }

    #[tokio::test]
    async fn a_websocket_gets_its_messages_back_until_the_backend_stops() {
        use tokio_tungstenite::tungstenite::Message;
        let backend = Backend::start("ws", next_loopback_ip());
        let tcp = tokio::net::TcpStream::connect(backend.addr())
            .await
            .unwrap();
        let url = format!("ws://{}/ws", backend.addr());
        let (mut ws, response) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        assert_eq!(response.status(), 101);
        assert_eq!(response.headers()["x-backend"], "ws");
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![1, 2, 3])
        );
        assert_eq!(backend.connections(), 1);

        backend.stop();
        let after = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the WebSocket stays open after stop");
        assert!(!matches!(after, Some(Ok(Message::Text(_)))), "{after:?}");
    }
}

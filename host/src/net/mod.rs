//! Listeners and connections: accept loops (plain and TLS) with the connection-level
//! firewall (rules, caps, PROXY protocol) before any TLS work, hyper's HTTP/1.1 + HTTP/2
//! server with the request limits, and graceful shutdown, of the whole node or of one
//! listener a reload removes.

/// The `AsyncWrite` methods of a wrapper that only watches or replays the read side:
/// each passes straight to the wrapped stream in `$field`.
macro_rules! write_through {
    ($field:ident) => {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().$field).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().$field).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$field.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().$field).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().$field).poll_shutdown(cx)
        }
    };
}

mod drain;
pub mod h2_guard;
pub mod proxy_protocol;
pub mod tls;

use crate::config::LimitsConfig;
use crate::firewall::{Admitted, ConnectionCaps, Rules};
use crate::gateway::{Connection, Gateway, ListenerId};
use crate::metrics::{Cap, DenyRule, ListenerMetrics, Metrics, OpenConnection};
use arc_swap::ArcSwap;
use drain::{Drain, Watcher};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A bound socket, and for HTTPS what terminates TLS on it.
pub struct Listener {
    pub tcp: TcpListener,
    /// The bound address (the real port of a port 0 listener).
    pub local: SocketAddr,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Binds `address` as a plain listener; its real address is known before it serves.
pub async fn bind(address: SocketAddr) -> anyhow::Result<Listener> {
    use anyhow::Context as _;
    let bound = async {
        let tcp = TcpListener::bind(address).await?;
        let local = tcp.local_addr()?;
        Ok::<_, std::io::Error>(Listener {
            tcp,
            local,
            tls: None,
        })
    };
    bound
        .await
        .with_context(|| format!("listening on {address}"))
}

/// What one listener checks a connection against before spending work on it; a reload
/// replaces it in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListenerPolicy {
    /// `[firewall]`'s and the listener's own `allow` and `deny`.
    pub rules: Rules,
    /// Read a PROXY protocol header from trusted proxies.
    pub proxy_protocol: bool,
}

pub type Builder = auto::Builder<TokioExecutor>;

/// Resets of streams not yet handed to wharf that one HTTP/2 connection may hold before
/// h2 answers GOAWAY ENHANCE_YOUR_CALM: a burst of HEADERS+RST_STREAM pairs (rapid reset).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams h2 itself resets for the client's protocol errors before it gives up on the
/// connection (h2's default).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Response bytes buffered per HTTP/2 stream beyond what the client's window lets out: a
/// client that never opens its window holds at most this much per stream.
const MAX_SEND_BUF: usize = 64 * 1024;
/// How long a connection past its glitch threshold has, after GOAWAY, before it is cut.
const GLITCH_GRACE: Duration = Duration::from_secs(1);

/// hyper's HTTP/1.1 + HTTP/2 server as every listener uses it, the admin one included.
pub fn http_server(limits: &LimitsConfig) -> Builder {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's timeouts do nothing unless a timer is set, for each protocol. The h1 head
    // timer also starts as soon as a keep-alive connection goes idle, so an idle HTTP/1.1
    // connection ends at the sooner of it and `keepalive_timeout`.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        // More fields than this: hyper's parser answers 431 itself.
        .max_headers(limits.max_headers)
        .max_buf_size(head_buffer(limits));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        .max_send_buf_size(MAX_SEND_BUF);
    builder
}

/// hyper reads a request head whole into its buffer and answers 431 when the buffer
/// fills first, so the buffer holds the largest head the limits let through, and a
/// request line up to hyper's own cap on targets (64 KiB, past which it answers 414
/// itself): a 70 KB target gets 414, as from nginx, which reads the request line
/// apart. The gateway answers the rest (target past `max_uri_bytes`: 414; fields past
/// `max_header_bytes`: 431). A request line longer still gets 431.
fn head_buffer(limits: &LimitsConfig) -> usize {
    const HYPER_MAX_URI: usize = 64 * 1024;
    const REQUEST_LINE: usize = 1024;
    let head = limits.max_header_bytes + limits.max_uri_bytes.max(HYPER_MAX_URI) + REQUEST_LINE;
    // hyper refuses a buffer under 8 KiB.
    head.max(8 * 1024)
}

/// The next connection on `listener`. An accept error belongs to one connection (reset
/// before accept, out of descriptors) and must not end the server; a short back-off
/// keeps EMFILE from spinning.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves the gateway on any number of listeners, which come and go with reloads.
pub struct Server {
    gateway: Arc<Gateway>,
    /// What a new connection is served with; a reload swaps it, and connections open
    /// by then keep what they started with.
    http: ArcSwap<Http>,
    /// Open connections across the public listeners, counted against the caps.
    caps: Arc<ConnectionCaps>,
    metrics: Arc<Metrics>,
    /// The node is draining: each new connection carries one request and closes.
    closing: AtomicBool,
}

struct Http {
    builder: Builder,
    /// A PROXY protocol header is part of the request's head, as far as time goes.
    header_read: Duration,
    tls_handshake: Duration,
    keepalive: Duration,
    max_requests: u64,
    max_glitches: u32,
}

impl Server {
    pub fn new(
        gateway: Arc<Gateway>,
        limits: &LimitsConfig,
        caps: Arc<ConnectionCaps>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            http: ArcSwap::from_pointee(Http::new(limits)),
            caps,
            metrics,
            closing: AtomicBool::new(false),
        })
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn caps(&self) -> &Arc<ConnectionCaps> {
        &self.caps
    }

    /// From now on each new connection carries one request and closes (HTTP/1.1
    /// `Connection: close`, HTTP/2 GOAWAY): a draining node still answers, while its
    /// clients move to other nodes.
    pub fn close_new_connections(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Connections accepted from now on are served with `limits`.
    pub fn set_limits(&self, limits: &LimitsConfig) {
        self.http.store(Arc::new(Http::new(limits)));
    }

    /// Starts accepting on `listener`, checking connections against `policy`; its
    /// connections say they came through `id`.
    pub fn serve(
        self: &Arc<Self>,
        listener: Listener,
        id: ListenerId,
        policy: ListenerPolicy,
    ) -> Serving {
        let local = listener.local;
        let tls = listener.tls.is_some();
        let graceful = Arc::new(ArcSwap::from_pointee(Drain::new()));
        let policy = Arc::new(ArcSwap::from_pointee(policy));
        let metrics = self.metrics.listener(local, tls);
        let accept = tokio::spawn(accept_loop(
            self.clone(),
            listener,
            id,
            policy.clone(),
            graceful.clone(),
            metrics,
        ));
        Serving {
            local,
            tls,
            policy,
            accept,
            graceful,
        }
    }
}

impl Http {
    fn new(limits: &LimitsConfig) -> Self {
        Self {
            builder: http_server(limits),
            header_read: limits.header_read_timeout,
            tls_handshake: limits.tls_handshake_timeout,
            keepalive: limits.keepalive_timeout,
            max_requests: limits.max_requests_per_connection,
            max_glitches: limits.http2_max_glitches,
        }
    }

    /// The same, for a connection that carries one request.
    fn one_request(&self) -> Self {
        Self {
            builder: self.builder.clone(),
            max_requests: 1,
            ..*self
        }
    }
}

/// A listener accepting connections.
pub struct Serving {
    /// The bound address (the real port of a port 0 listener).
    pub local: SocketAddr,
    pub tls: bool,
    policy: Arc<ArcSwap<ListenerPolicy>>,
    accept: tokio::task::JoinHandle<()>,
    /// The connections accepted since the listener started or last finished them.
    graceful: Arc<ArcSwap<Drain>>,
}

impl Serving {
    /// Connections accepted from now on are checked against `policy`.
    pub fn set_policy(&self, policy: ListenerPolicy) {
        self.policy.store(Arc::new(policy));
    }

    /// Closes the socket: new connections are refused from now on. The open ones go on
    /// until [`Draining::finish`].
    pub async fn stop_accepting(self) -> Draining {
        self.accept.abort();
        let _ = self.accept.await;
        Draining(self.graceful.load_full())
    }

    /// Asks every connection open now to finish, as a drain does, while the listener
    /// goes on accepting new ones. The returned future completes once they have ended.
    pub fn finish_open_connections(&self) -> impl Future<Output = ()> + use<> {
        let open = self.graceful.swap(Arc::new(Drain::new()));
        open.signal();
        async move { open.closed().await }
    }
}

/// The open connections of listeners that stopped accepting.
pub struct Draining(Arc<Drain>);

impl Draining {
    pub fn connections(&self) -> usize {
        self.0.count()
    }

    /// Asks each connection to finish (HTTP/2 GOAWAY; HTTP/1.1 closes after the
    /// response in flight) and waits for them; past `drain`, what is left is closed.
    pub async fn finish(self, drain: Duration) {
        if tokio::time::timeout(drain, self.0.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline of {drain:?} passed; closing what is left");
        }
    }
}

async fn accept_loop(
    server: Arc<Server>,
    listener: Listener,
    id: ListenerId,
    policy: Arc<ArcSwap<ListenerPolicy>>,
    graceful: Arc<ArcSwap<Drain>>,
    metrics: ListenerMetrics,
) {
    loop {
        let (tcp, peer) = accept(&listener.tcp).await;
        let _ = tcp.set_nodelay(true);
        // On an unspecified address (0.0.0.0) only the stream knows which one it reached;
        // elsewhere the listener's own address is it, without a getsockname per connection.
        let local = match listener.local.ip().is_unspecified() {
            true => tcp.local_addr().unwrap_or(listener.local),
            false => listener.local,
        };
        let (server, policy, watcher) = (
            server.clone(),
            policy.load_full(),
            graceful.load().watcher(),
        );
        let tls = listener.tls.clone();
        let metrics = metrics.clone();
        // The firewall and the handshake run in the connection's own task, never in the
        // accept loop.
        tokio::spawn(async move {
            let http = match server.closing.load(Ordering::Relaxed) {
                false => server.http.load_full(),
                true => Arc::new(server.http.load().one_request()),
            };
            let Some(stream) = admit(&server, &policy, tcp, peer, &http, &metrics).await else {
                return;
            };
            let mut conn = Connection {
                peer,
                client: stream.client,
                local,
                listener: id,
                tls: false,
                sni: None,
            };
            let gateway = server.gateway.clone();
            let Some(acceptor) = tls else {
                return serve_connection(stream, conn, &http, gateway, watcher).await;
            };
            match tls::handshake(&acceptor, stream, http.tls_handshake).await {
                // The validation has seen the certificate; nothing more to say.
                Ok(stream) if tls::is_acme_validation(&stream) => {
                    tracing::debug!(%peer, "TLS-ALPN-01 validation answered")
                }
                Ok(stream) => {
                    metrics.handshakes.inc();
                    conn.tls = true;
                    conn.sni = tls::server_name(&stream).map(Arc::from);
                    serve_connection(stream, conn, &http, gateway, watcher).await
                }
                Err(e) => {
                    metrics.handshake_failed(&e);
                    tracing::debug!(%peer, "TLS handshake failed: {e}")
                }
            }
        });
    }
}

/// The connection as the firewall lets it in: after a trusted proxy's PROXY header,
/// within the listener's rules and the caps. `None`: it is closed, nothing written.
async fn admit(
    server: &Server,
    policy: &ListenerPolicy,
    mut tcp: TcpStream,
    peer: SocketAddr,
    http: &Http,
    metrics: &ListenerMetrics,
) -> Option<Stream> {
    let firewall = &server.metrics.firewall;
    // The global place first: a connection waiting for its PROXY header holds a task
    // and a socket already.
    let Some(mut admitted) = server.caps.enter() else {
        firewall.refused(Cap::Global);
        tracing::debug!(%peer, "closed: over the connection cap");
        return None;
    };
    let mut client = peer;
    let mut head = Vec::new();
    if policy.proxy_protocol && server.gateway.firewall().trusted.contains(peer.ip()) {
        match proxy_protocol::read_header(&mut tcp, http.header_read).await {
            Ok((named, rest)) => {
                client = named.unwrap_or(peer);
                head = rest;
            }
            Err(e) => {
                tracing::debug!(%peer, "closed: {e}");
                return None;
            }
        }
    }
    if !policy.rules.is_open() && !policy.rules.admits(client.ip()) {
        firewall.denied(DenyRule::Listener);
        tracing::debug!(%peer, %client, "closed: the listener's rules deny the client");
        return None;
    }
    if !admitted.attribute(client.ip()) {
        firewall.refused(Cap::PerIp);
        tracing::debug!(%peer, %client, "closed: over the client's connection cap");
        return None;
    }
    Some(Stream {
        head,
        read: 0,
        tcp,
        client,
        _admitted: admitted,
        _open: metrics.opened(),
    })
}

/// A connection's socket, with what the firewall read ahead of the client's bytes
/// replayed first, and its place in the connection caps, given back when the socket
/// closes: an upgraded connection (a WebSocket tunnel) outlives its HTTP task.
pub struct Stream {
    /// Bytes read past a PROXY header, which belong to TLS or HTTP.
    head: Vec<u8>,
    read: usize,
    tcp: TcpStream,
    client: SocketAddr,
    _admitted: Admitted,
    /// Counted open until the socket closes, like the cap place.
    _open: OpenConnection,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.read);
            buf.put_slice(&this.head[this.read..this.read + n]);
            this.read += n;
            if this.read == this.head.len() {
                this.head = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    write_through!(tcp);
}

/// Serves one connection until its client closes it, or until wharf does: the listener
/// drains, it stays idle for `keepalive_timeout`, it reaches `max_requests_per_connection`,
/// or (HTTP/2) its client passes `http2_max_glitches`. Each of these asks hyper for a
/// graceful end (HTTP/2 GOAWAY; HTTP/1.1 closes after the response in flight); only the
/// glitches also cut the connection after [`GLITCH_GRACE`].
async fn serve_connection<S>(
    stream: S,
    conn: Connection,
    http: &Http,
    gateway: Arc<Gateway>,
    mut watcher: Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let tripped = Arc::new(Notify::new());
    let io = h2_guard::GuardedIo::new(stream, http.max_glitches, tripped.clone());
    let activity = Arc::new(Activity::new(http.max_requests));
    let service = {
        let activity = activity.clone();
        service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (gateway, conn) = (gateway.clone(), conn.clone());
            let (in_flight, last) = activity.start();
            async move {
                let _in_flight = in_flight;
                let http2 = req.version() == http::Version::HTTP_2;
                if http2 {
                    // hyper polls a stream's service future once before it looks for the
                    // client's RST_STREAM: yielding first lets a reset already read drop
                    // the request before any guest or backend sees it.
                    tokio::task::yield_now().await;
                }
                let mut response = gateway.handle(req, &conn).await;
                if last && !http2 {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    // With upgrades: a WebSocket forwarded to an upstream needs the client's side too.
    let connection = http
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    // Draining, but waiting for the first request (bounded by the header read timeout).
    let mut awaiting_first = false;
    let mut cut_at = None;
    // Each turn is one event (a request ended, a timer, a signal), never a busy loop.
    loop {
        let idle_at = activity.idle_deadline(http.keepalive);
        let cut = cut_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                return;
            }
            () = watcher.draining(), if !closing && !awaiting_first => {
                // A connection the drain finds before its first request was just
                // accepted, and its client's request may be on the way: closing it now
                // would leave that request unanswered. It serves that one, then closes.
                if activity.requests.load(Ordering::Relaxed) == 0 {
                    awaiting_first = true;
                    continue;
                }
            }
            () = activity.first_started.notified(), if awaiting_first && !closing => {}
            () = activity.cap_reached.notified(), if !closing => {}
            () = tokio::time::sleep_until(idle_at), if !closing => {
                if !activity.idle_for(http.keepalive) {
                    continue;
                }
            }
            () = tripped.notified(), if cut_at.is_none() => {
                tracing::info!(%peer, "HTTP/2 connection past its glitch threshold: GOAWAY");
                cut_at = Some(Instant::now() + GLITCH_GRACE);
                if closing {
                    continue;
                }
            }
            () = tokio::time::sleep_until(cut), if cut_at.is_some() => return,
        }
        closing = true;
        connection.as_mut().graceful_shutdown();
    }
}

/// A connection's requests: how many it has carried, how many are in flight, and since
/// when none is.
struct Activity {
    requests: AtomicU64,
    max_requests: u64,
    in_flight: AtomicUsize,
    since: std::sync::Mutex<Instant>,
    /// Notified when the last request the connection may carry starts.
    cap_reached: Notify,
    /// Notified when the first request starts.
    first_started: Notify,
}

impl Activity {
    fn new(max_requests: u64) -> Self {
        Self {
            requests: AtomicU64::new(0),
            max_requests,
            in_flight: AtomicUsize::new(0),
            since: std::sync::Mutex::new(Instant::now()),
            cap_reached: Notify::new(),
            first_started: Notify::new(),
        }
    }

    /// Counts a request starting: its guard, and whether it is the connection's last.
    fn start(self: &Arc<Self>) -> (InFlight, bool) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            self.first_started.notify_one();
        }
        let last = n >= self.max_requests;
        if n == self.max_requests {
            self.cap_reached.notify_one();
        }
        (InFlight(self.clone()), last)
    }

    /// When the connection may next have been idle for `timeout`: with a request in
    /// flight, no sooner than a whole `timeout` from now.
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        let since = self.since.lock().expect("not poisoned");
        match self.in_flight.load(Ordering::Relaxed) {
            0 => *since + timeout,
            _ => Instant::now() + timeout,
        }
    }

    fn idle_for(&self, timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && self.idle_deadline(timeout) <= Instant::now()
    }
}

/// A request in flight on its connection, until its response head is ready (or it is
/// dropped, cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Under the lock, so the idle clock restarts no earlier than the count reaches 0.
        let mut since = self.0.since.lock().expect("not poisoned");
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            *since = Instant::now();
        }
    }
}

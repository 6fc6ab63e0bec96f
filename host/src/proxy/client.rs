//! The connections to one backend: kept alive and reused (HTTP/1.1), or one shared
//! connection (HTTP/2), plain or TLS (SNI set, verified against the system's roots or
//! the upstream's `ca`), capped per backend, with connect, response-head and body-idle
//! timeouts.
//!
//! Built on hyper's `client::conn` rather than a pooling client, because a retry is only
//! safe when it is known that the request never left: a reused HTTP/1.1 connection
//! that the backend closed while idle hands the request back unsent, and it goes on a
//! fresh connection without the caller seeing anything.

use crate::config::BackendAddress;
use crate::http::{Body, BoxError};
use anyhow::Context as _;
use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep, timeout_at};
use tokio_rustls::TlsConnector;

/// How a [`Client`] connects; from the backend's `[[upstream]]`.
#[derive(Clone)]
pub struct ClientSettings {
    pub http2: bool,
    /// For `https://` backends.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The TLS settings for an upstream's `https://` backends: the system's roots, or only
/// the authorities in `ca`; ALPN h2 when `http2`, else http/1.1. The error names `ca`.
pub fn tls_config(ca: Option<&Path>, http2: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading ca {}", ca.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "ca {}: no certificate in it",
                ca.display()
            );
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("ca {}: a certificate is not usable", ca.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // One unreadable system certificate should not stop the others from working.
            let (added, _) = roots.add_parsable_certificates(found.certs);
            anyhow::ensure!(
                added > 0,
                "no system root certificates could be read ({:?}); set `ca` to a PEM file",
                found.errors
            );
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the aws-lc-rs provider implements TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match http2 {
        true => b"h2".to_vec(),
        false => b"http/1.1".to_vec(),
    }];
    Ok(Arc::new(config))
}

/// One backend's connections.
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    address: BackendAddress,
    settings: ClientSettings,
    /// One permit per request in flight: the cap.
    slots: Arc<Semaphore>,
    /// HTTP/1.1 connections not in use, the most recently used last (reusing the
    /// warmest one lets the others reach the idle timeout and close).
    idle: Mutex<Vec<Parked>>,
    /// HTTP/2: the one shared connection. The lock is held while it is being made, so
    /// requests arriving meanwhile wait for that one rather than open their own.
    shared: tokio::sync::Mutex<Option<H2>>,
    /// Connections whose task runs.
    open: Arc<AtomicUsize>,
}

/// An idle HTTP/1.1 connection and since when.
struct Parked {
    conn: H1,
    since: Instant,
}

/// The body type requests are sent with: the caller's, its pauses limited.
type Outgoing = IdleLimit;

/// An HTTP/1.1 connection; dropping it closes it.
struct H1 {
    sender: http1::SendRequest<Outgoing>,
    task: Task,
}

/// The shared HTTP/2 connection; it closes when the last clone is dropped.
#[derive(Clone)]
struct H2 {
    sender: http2::SendRequest<Outgoing>,
    task: Arc<Task>,
}

enum Conn {
    H1(H1),
    H2(H2),
}

/// A connection's task (hyper's connection future): dropping this ends it, which
/// closes the socket, unless it was detached.
struct Task(Option<AbortHandle>);

impl Task {
    /// Lets the task run to its end: after a 101 it hands the socket to the upgrade.
    fn detach(mut self) {
        self.0 = None;
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Counts a connection as open while it lives (it lives in the connection's task).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Counted(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why [`Client::send`] got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be had (TCP or TLS failed within the connect timeout): the
    /// request never left, and here it is back, untouched (its body unread), for
    /// another backend.
    Connect {
        request: Box<Request<Body>>,
        error: String,
    },
    /// The request was (maybe partly) sent and the connection closed, broke or spoke
    /// something that was not HTTP before a response head. The backend may have acted
    /// on it.
    Failed { error: String, bad_response: bool },
    /// No response head within the response timeout.
    Timeout,
    /// Every connection slot of this backend stayed taken for the connect timeout:
    /// this balancer's own cap, not a fault of the backend. The request never left;
    /// here it is back.
    Busy {
        request: Box<Request<Body>>,
        error: String,
    },
}

impl SendError {
    fn connect(request: Request<Outgoing>, error: String) -> Self {
        SendError::Connect {
            request: Box::new(request.map(|mut body| std::mem::take(&mut body.inner))),
            error,
        }
    }

    fn failed(error: hyper::Error) -> Self {
        SendError::Failed {
            bad_response: error.is_parse(),
            error: error.to_string(),
        }
    }
}

impl Client {
    pub fn new(address: &BackendAddress, settings: ClientSettings) -> Self {
        Client {
            inner: Arc::new(Inner {
                address: address.clone(),
                slots: Arc::new(Semaphore::new(settings.max_connections)),
                settings,
                idle: Mutex::new(Vec::new()),
                shared: tokio::sync::Mutex::new(None),
                open: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    /// Sends `request` (origin-form URI; the client adds scheme and authority for
    /// HTTP/2) and returns the response head with a body that holds the connection until
    /// it ends or is dropped, then gives it back to the pool when it can be reused.
    /// The response keeps hyper's upgrade handle in its extensions, for
    /// [`super::tunnel`].
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, SendError> {
        let inner: &Inner = &self.inner;
        // Waiting for a slot is part of getting a connection: one deadline for both.
        let deadline = Instant::now() + inner.settings.connect_timeout;
        let Ok(permit) = timeout_at(deadline, inner.slots.clone().acquire_owned()).await else {
            let error = format!(
                "{}: all {} connections busy for {} ms",
                inner.address,
                inner.settings.max_connections,
                inner.settings.connect_timeout.as_millis()
            );
            let request = Box::new(request);
            return Err(SendError::Busy { request, error });
        };
        let permit = permit.expect("the semaphore is never closed");
        let (version, uri) = (request.version(), request.uri().clone());
        let limit = inner.settings.idle_timeout;
        let request = request.map(|body| IdleLimit::new(body, limit));
        let progress = request.body().progress.clone();
        let sent = match inner.settings.http2 {
            true => inner.send_h2(request, deadline).await,
            false => inner.send_h1(request, deadline).await,
        };
        match sent {
            Ok((response, held)) => Ok(self.inner.respond(response, held, permit, progress)),
            // Handed back as it came, for another backend that may speak another version.
            Err(SendError::Connect { mut request, error }) => {
                *request.version_mut() = version;
                *request.uri_mut() = uri;
                Err(SendError::Connect { request, error })
            }
            Err(error) => Err(error),
        }
    }

    /// An active health check: `GET path` on a fresh connection (to `port` of the
    /// backend's host when given), within `timeout`; the status, or why there is none.
    pub async fn probe(
        &self,
        port: Option<u16>,
        path: &str,
        timeout: Duration,
    ) -> Result<StatusCode, String> {
        let inner = &self.inner;
        let port = port.unwrap_or(inner.address.port);
        let path = PathAndQuery::try_from(path).map_err(|e| format!("path {path:?}: {e}"))?;
        let attempt = async {
            let request = Request::get(Uri::from(path))
                .header(HOST, inner.authority(port).as_str())
                .body(IdleLimit::new(
                    Empty::new().map_err(Into::into).boxed_unsync(),
                    inner.settings.idle_timeout,
                ))
                .expect("a path and an authority make a valid request");
            // The connection is dropped, so closed, with the response.
            let response = match inner.open(port).await? {
                Conn::H1(mut conn) => conn.sender.send_request(request).await,
                Conn::H2(mut conn) => {
                    let request = inner.h2_request(request, port);
                    conn.sender.send_request(request).await
                }
            };
            response.map(|r| r.status()).map_err(|e| e.to_string())
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
    }

    /// Connections open now (in use and idle), for the status.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// On an idle connection, or a fresh one when there is none or the idle one turns
    /// the request down unsent (the backend closed it meanwhile).
    async fn send_h1(
        &self,
        mut request: Request<Outgoing>,
        deadline: Instant,
    ) -> Result<(Response<Incoming>, Option<Conn>), SendError> {
        *request.version_mut() = Version::HTTP_11;
        let mut reused = self.checkout(deadline).await;
        // At most twice: a reused connection, then a fresh one.
        loop {
            let was_reused = reused.is_some();
            let mut conn = match reused.take() {
                Some(conn) => conn,
                None => match self.open_by(deadline).await {
                    Ok(Conn::H1(conn)) => conn,
                    Ok(Conn::H2(_)) => unreachable!("http2 is off"),
                    Err(error) => return Err(SendError::connect(request, error)),
                },
            };
            let progress = request.body().progress.clone();
            let sent = conn.sender.try_send_request(request);
            match head_within(sent, progress, self.settings.response_timeout).await {
                None => return Err(SendError::Timeout),
                Some(Ok(response)) => return Ok((response, Some(Conn::H1(conn)))),
                Some(Err(mut refused)) => match refused.take_message() {
                    Some(back) if was_reused => request = back,
                    Some(back) => {
                        let error = format!("{}: {}", self.address, refused.into_error());
                        return Err(SendError::connect(back, error));
                    }
                    None => return Err(SendError::failed(refused.into_error())),
                },
            }
        }
    }

    /// On the shared connection, made (again) if there is none or it closed.
    async fn send_h2(
        &self,
        request: Request<Outgoing>,
        deadline: Instant,
    ) -> Result<(Response<Incoming>, Option<Conn>), SendError> {
        let mut request = request;
        let mut stale = None;
        // At most twice: the shared connection, then a fresh one if it refused unsent.
        loop {
            let retry = stale.is_some();
            let mut conn = match self.shared(deadline, stale.take()).await {
                Ok(conn) => conn,
                Err(error) => return Err(SendError::connect(request, error)),
            };
            let progress = request.body().progress.clone();
            let sent = conn
                .sender
                .try_send_request(self.h2_request(request, self.address.port));
            match head_within(sent, progress, self.settings.response_timeout).await {
                None => return Err(SendError::Timeout),
                Some(Ok(response)) => return Ok((response, Some(Conn::H2(conn)))),
                Some(Err(mut refused)) => match refused.take_message() {
                    Some(back) => {
                        if retry {
                            let error = format!("{}: {}", self.address, refused.into_error());
                            return Err(SendError::connect(back, error));
                        }
                        request = back;
                        stale = Some(conn);
                    }
                    None => return Err(SendError::failed(refused.into_error())),
                },
            }
        }
    }

    /// `request` as HTTP/2 sends it: the absolute URI names the target (Host when the
    /// client sent one, else the backend), as `:scheme` and `:authority`.
    fn h2_request<B>(&self, mut request: Request<B>, port: u16) -> Request<B> {
        let scheme = match self.address.tls {
            true => Scheme::HTTPS,
            false => Scheme::HTTP,
        };
        let authority = request
            .headers()
            .get(HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok())
            .unwrap_or_else(|| {
                Authority::try_from(self.authority(port))
                    .expect("a backend address is an authority")
            });
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from_parts({
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme);
            parts.authority = Some(authority);
            parts.path_and_query = Some(path);
            parts
        })
        .expect("scheme, authority and path make a URI");
        *request.version_mut() = Version::HTTP_2;
        request
    }

    /// The freshest idle connection that is still open and ready; stale ones are
    /// dropped (closed) on the way.
    async fn checkout(&self, deadline: Instant) -> Option<H1> {
        let limit = self.settings.idle_timeout;
        if self.idle.lock().expect("idle list lock").is_empty() {
            return None;
        }
        // An idle connection's task sees the backend's close only when it runs: letting
        // the wakeups already due run first shows such a connection as closed, where
        // otherwise the request would be written to it and lost.
        tokio::task::yield_now().await;
        loop {
            let parked = {
                let mut idle = self.idle.lock().expect("idle list lock");
                idle.retain(|p| p.since.elapsed() <= limit && !p.conn.sender.is_closed());
                idle.pop()?
            };
            let mut conn = parked.conn;
            // Ready at once normally; a connection still finishing (or closing) is let go.
            if let Ok(Ok(())) = timeout_at(deadline, conn.sender.ready()).await {
                return Some(conn);
            }
        }
    }

    /// The shared HTTP/2 connection, made anew when there is none, it closed, or it is
    /// `stale` (turned a request down).
    async fn shared(&self, deadline: Instant, stale: Option<H2>) -> Result<H2, String> {
        let mut shared = timeout_at(deadline, self.shared.lock())
            .await
            .map_err(|_| self.connect_timed_out())?;
        if let Some(conn) = shared.as_ref() {
            let refused = stale.is_some_and(|s| Arc::ptr_eq(&s.task, &conn.task));
            if !refused && !conn.sender.is_closed() {
                return Ok(conn.clone());
            }
        }
        match self.open_by(deadline).await? {
            Conn::H2(conn) => Ok(shared.insert(conn).clone()),
            Conn::H1(_) => unreachable!("http2 is on"),
        }
    }

    /// The response with its body: the body holds the slot and the connection until it
    /// ends, then an HTTP/1.1 connection goes back to the idle list.
    fn respond(
        self: &Arc<Self>,
        response: Response<Incoming>,
        held: Option<Conn>,
        permit: OwnedSemaphorePermit,
        request: Progress,
    ) -> Response<Body> {
        let held = match held {
            // The connection becomes the tunnel: its task must run on to hand it over.
            Some(Conn::H1(conn)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                conn.task.detach();
                None
            }
            held => held,
        };
        let limit = self.settings.idle_timeout;
        response.map(|body| {
            let mut body = ResponseBody {
                body: IdleLimit::new(body.map_err(BoxError::from).boxed_unsync(), limit),
                held,
                request,
                permit: Some(permit),
                pool: self.clone(),
            };
            // Nothing to read (HEAD, 204, 304): servers do not poll such a body, and the
            // connection is free now.
            if hyper::body::Body::is_end_stream(&body) {
                body.finish();
            }
            body.boxed_unsync()
        })
    }

    fn park(&self, conn: H1) {
        if !conn.sender.is_closed() {
            let since = Instant::now();
            self.idle
                .lock()
                .expect("idle list lock")
                .push(Parked { conn, since });
        }
    }

    /// [`Inner::open`] to the backend's own port by `deadline`.
    async fn open_by(&self, deadline: Instant) -> Result<Conn, String> {
        timeout_at(deadline, self.open(self.address.port))
            .await
            .unwrap_or_else(|_| Err(self.connect_timed_out()))
    }

    fn connect_timed_out(&self) -> String {
        format!(
            "{}: no connection within {} ms",
            self.address,
            self.settings.connect_timeout.as_millis()
        )
    }

    /// TCP (and TLS) to `port` of the backend's host, then the HTTP handshake; the
    /// caller puts the time limit on it.
    async fn open(&self, port: u16) -> Result<Conn, String> {
        let address = &self.address;
        let tcp = TcpStream::connect((address.host.as_str(), port))
            .await
            .map_err(|e| format!("{address}: {e}"))?;
        // Requests and small answers should not wait for Nagle's timer.
        tcp.set_nodelay(true)
            .map_err(|e| format!("{address}: {e}"))?;
        if !address.tls {
            return self.handshake(TokioIo::new(tcp)).await;
        }
        let tls = self
            .settings
            .tls
            .as_ref()
            .ok_or_else(|| format!("{address}: no TLS settings for an https:// backend"))?;
        // A name is sent as SNI and checked; an IP address is only checked.
        let name =
            ServerName::try_from(address.host.clone()).map_err(|e| format!("{address}: {e}"))?;
        let stream = TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{address}: TLS: {e}"))?;
        self.handshake(TokioIo::new(stream)).await
    }

    async fn handshake<I>(&self, io: I) -> Result<Conn, String>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let counted = Counted::new(&self.open);
        let failed = |e: hyper::Error| format!("{}: {e}", self.address);
        if self.settings.http2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(failed)?;
            let task = spawn_counted(counted, connection);
            return Ok(Conn::H2(H2 {
                sender,
                task: Arc::new(task),
            }));
        }
        let (sender, connection) = http1::Builder::new().handshake(io).await.map_err(failed)?;
        let task = spawn_counted(counted, connection.with_upgrades());
        Ok(Conn::H1(H1 { sender, task }))
    }

    /// `host:port` (IPv6 in brackets), for Host and `:authority`.
    fn authority(&self, port: u16) -> String {
        match self.address.host.contains(':') {
            true => format!("[{}]:{port}", self.address.host),
            false => format!("{}:{port}", self.address.host),
        }
    }
}

/// Runs a connection's future; it counts as open until the future ends or is aborted.
fn spawn_counted<F>(counted: Counted, connection: F) -> Task
where
    F: Future<Output = hyper::Result<()>> + Send + 'static,
{
    let handle = tokio::spawn(async move {
        let _counted = counted;
        if let Err(e) = connection.await {
            tracing::debug!("backend connection ended: {e}");
        }
    });
    Task(Some(handle.abort_handle()))
}

/// A response body holding its request's slot and connection until it ends.
struct ResponseBody {
    body: IdleLimit,
    held: Option<Conn>,
    /// The request's body: until it is sent whole, the connection is not free, even
    /// once the answer is complete (a backend may answer an upload early).
    request: Progress,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Inner>,
}

impl ResponseBody {
    /// The answer is complete: the connection may serve the next request.
    fn finish(&mut self) {
        if let Some(Conn::H1(conn)) = self.held.take()
            && self.request.ended()
        {
            self.pool.park(conn);
        }
        self.permit = None;
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if this.body.is_end_stream() => this.finish(),
            Some(Ok(_)) => {}
            None => this.finish(),
            // A broken answer: its connection is not reused (dropping it closes it).
            Some(Err(_)) => {
                this.held = None;
                this.permit = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A body that fails when its source sends nothing for `limit` while being read: a
/// stalled upload or download does not hold a connection forever. Pauses of the
/// reader do not count.
struct IdleLimit {
    inner: Body,
    limit: Duration,
    /// Running while a read waits for the source.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// Marked at every frame read, for the response timeout of a request body.
    progress: Progress,
}

impl IdleLimit {
    fn new(inner: Body, limit: Duration) -> Self {
        IdleLimit {
            inner,
            limit,
            timer: None,
            waiting: false,
            progress: Progress::default(),
        }
    }
}

/// When a body last gave a frame: the response timeout runs from the later of the
/// request head and its body's last piece, so a long upload is not taken for a slow
/// backend (nginx counts `proxy_read_timeout` from the end of the request), while a
/// backend that stops reading one still times out.
#[derive(Clone)]
struct Progress {
    base: Instant,
    /// Since `base`.
    nanos: Arc<AtomicU64>,
    /// The body is done with: sent whole, or given up.
    ended: Arc<AtomicBool>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            base: Instant::now(),
            nanos: Arc::new(AtomicU64::new(0)),
            ended: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Progress {
    fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn mark(&self) {
        let nanos = self.base.elapsed().as_nanos() as u64;
        self.nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// The response head `sent` resolves to, unless `limit` passes after the request's
/// last progress with no head.
async fn head_within<F: Future>(sent: F, progress: Progress, limit: Duration) -> Option<F::Output> {
    progress.mark();
    let mut sent = std::pin::pin!(sent);
    loop {
        match timeout_at(progress.last() + limit, &mut sent).await {
            Ok(head) => return Some(head),
            // The body moved meanwhile: the clock starts again from there.
            Err(_) if progress.last() + limit > Instant::now() => continue,
            Err(_) => return None,
        }
    }
}

impl hyper::body::Body for IdleLimit {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            this.progress.mark();
            return Poll::Ready(frame);
        }
        let limit = this.limit;
        if !this.waiting {
            this.waiting = true;
            let until = Instant::now() + limit;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(until),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(until))),
            }
        }
        let timer = this.timer.as_mut().expect("set when waiting");
        ready!(timer.as_mut().poll(cx));
        let error = format!("the body sent nothing for {} ms", limit.as_millis());
        Poll::Ready(Some(Err(error.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// hyper drops a request body once it has sent all of it (or given up on it).
impl Drop for IdleLimit {
    fn drop(&mut self) {
        self.progress.ended.store(true, Ordering::Release);
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

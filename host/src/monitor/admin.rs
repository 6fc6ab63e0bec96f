//! The admin listener: health checks for load balancers and orchestrators, apart from
//! the sites and open only to the networks `[admin] allow` names.
//!
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 while it takes new requests, 503 once it is draining for a
//!   shutdown (readiness). The listeners stay open for `[admin] drain_delay_ms` after
//!   that, so a balancer has time to notice and stop sending before they close.

use crate::net::Listener;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// Whether the node takes new requests, as `/readyz` reports it; shared with whoever
/// starts the drain.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
}

impl Readiness {
    /// From now on `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Binds the admin listener; its address is known (and printed) before serving starts.
pub async fn bind(address: SocketAddr) -> anyhow::Result<Listener> {
    use anyhow::Context as _;
    crate::net::bind(address)
        .await
        .with_context(|| format!("admin listener on {address}"))
}

/// The admin listener, serving until dropped; connections open then finish.
pub struct Admin {
    /// The bound address (the real port of a port 0 listener).
    pub local: SocketAddr,
    settings: Arc<ArcSwap<Settings>>,
    accept: tokio::task::JoinHandle<()>,
}

/// What a new connection to the admin listener is checked and served with.
struct Settings {
    allow: Vec<IpNet>,
    server: crate::net::Builder,
}

impl Settings {
    fn new(allow: Vec<IpNet>, header_read: Duration) -> Arc<Self> {
        Arc::new(Self {
            allow,
            server: crate::net::http_server(header_read),
        })
    }
}

impl Admin {
    /// Serves the admin endpoints on `listener`, with the same HTTP settings (header
    /// read timeout included) as the sites' listeners.
    pub fn spawn(
        listener: Listener,
        allow: Vec<IpNet>,
        readiness: Arc<Readiness>,
        header_read: Duration,
    ) -> Self {
        let settings = Arc::new(ArcSwap::new(Settings::new(allow, header_read)));
        let accept = tokio::spawn(serve(listener.tcp, settings.clone(), readiness));
        Self {
            local: listener.local,
            settings,
            accept,
        }
    }

    /// Requests from now on, on open connections too, are let in by `allow`; connections
    /// accepted from now on are read with `header_read`.
    pub fn update(&self, allow: Vec<IpNet>, header_read: Duration) {
        self.settings.store(Settings::new(allow, header_read));
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        // Closes the socket. A client keeping a connection to it open would go on being
        // answered by settings nothing updates any more: its requests are refused.
        self.accept.abort();
        self.settings
            .store(Settings::new(Vec::new(), Duration::ZERO));
    }
}

async fn serve(listener: TcpListener, settings: Arc<ArcSwap<Settings>>, readiness: Arc<Readiness>) {
    loop {
        let (stream, peer) = crate::net::accept(&listener).await;
        let (current, settings, readiness) =
            (settings.load_full(), settings.clone(), readiness.clone());
        tokio::spawn(async move {
            // The allow-list is read per request, so a reload that narrows it applies to
            // connections already open; the HTTP settings are the connection's own.
            let service = service_fn(move |req| {
                let response = answer(&req, peer, &settings.load().allow, &readiness);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = current
                .server
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer<B>(
    req: &Request<B>,
    peer: SocketAddr,
    allow: &[IpNet],
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let ip = peer.ip().to_canonical();
    if !allow.iter().any(|net| net.contains(&ip)) {
        return text(StatusCode::FORBIDDEN, "forbidden\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if readiness.draining.load(Ordering::Relaxed) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        "/readyz" => text(StatusCode::OK, "ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

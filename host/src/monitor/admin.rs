//! The admin listener: health checks for load balancers and orchestrators, apart from
//! the sites and open only to the networks `[admin] allow` names.
//!
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 while it takes new requests, 503 once it is draining for a
//!   shutdown (readiness). The listeners stay open for `[admin] drain_delay_ms` after
//!   that, so a balancer has time to notice and stop sending before they close.

use crate::config::AdminConfig;
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

/// What the health endpoints report; shared with whoever starts the drain.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
}

impl Health {
    /// From now on `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Binds the admin listener; its address is known (and printed) before serving starts.
pub async fn bind(config: &AdminConfig) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    TcpListener::bind(config.address)
        .await
        .with_context(|| format!("admin listener on {}", config.address))
}

/// Serves the admin endpoints on `listener` until the process ends, with the same
/// HTTP settings (header read timeout included) as the sites' listeners.
pub fn spawn(listener: TcpListener, allow: Vec<IpNet>, health: Arc<Health>, header_read: Duration) {
    let allow: Arc<[IpNet]> = allow.into();
    let server = Arc::new(crate::net::http_server(header_read));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = crate::net::accept(&listener).await;
            let (allow, health, server) = (allow.clone(), health.clone(), server.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let response = answer(&req, peer, &allow, &health);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = server.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}

fn answer<B>(
    req: &Request<B>,
    peer: SocketAddr,
    allow: &[IpNet],
    health: &Health,
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
        "/readyz" if health.draining.load(Ordering::Relaxed) => {
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

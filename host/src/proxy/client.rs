//! The connections to one backend: kept alive and reused (HTTP/1.1), or one shared
//! connection (HTTP/2), plain or TLS (SNI set, verified against the system's roots or
//! the upstream's `ca`), capped per backend, with connect, response-head and body-idle
//! timeouts. (Skeleton: the client helper fills it in.)

use crate::config::BackendAddress;
use crate::http::Body;
use http::{Request, Response, StatusCode};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
    let _ = (ca, http2);
    todo!()
}

/// One backend's connections.
pub struct Client {}

/// Why [`Client::send`] got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be had (TCP or TLS failed, or no free connection slot within
    /// the connect timeout): the request never left, and here it is back, untouched
    /// (its body unread), for another backend.
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
}

impl Client {
    pub fn new(address: &BackendAddress, settings: ClientSettings) -> Self {
        let _ = (address, settings);
        todo!()
    }

    /// Sends `request` (origin-form URI; the client adds scheme and authority for
    /// HTTP/2) and returns the response head with a body that holds the connection until
    /// it ends or is dropped, then gives it back to the pool when it can be reused.
    /// The response keeps hyper's upgrade handle in its extensions, for
    /// [`super::tunnel`].
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, SendError> {
        let _ = request;
        todo!()
    }

    /// An active health check: `GET path` on a fresh connection (to `port` of the
    /// backend's host when given), within `timeout`; the status, or why there is none.
    pub async fn probe(
        &self,
        port: Option<u16>,
        path: &str,
        timeout: Duration,
    ) -> Result<StatusCode, String> {
        let _ = (port, path, timeout);
        todo!()
    }

    /// Connections open now (in use and idle), for the status.
    pub fn open_connections(&self) -> usize {
        todo!()
    }
}

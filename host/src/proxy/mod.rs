//! The load balancer role: `[[upstream]]` pools of backends (other wharf nodes or any
//! HTTP server), which backend gets each request, how it is forwarded, checked and
//! retried.
//!
//! - [`pool`]: [`Upstreams`] (every pool of the node, rebuilt in place on reload) and
//!   [`Pool::forward`], the one loop that picks, sends, retries and records.
//! - [`backend`]: one backend's live state (health, ejection, in flight, latency,
//!   drained), carried over by address when its pool is rebuilt.
//! - [`select`]: which of the eligible backends; a trait, one type per algorithm.
//! - [`latency`]: peak-EWMA response time with a decaying failure penalty.
//! - [`check`]: active health checks.
//! - [`retry`]: when a retry is safe, and the budget that caps retries.
//! - [`client`]: the keep-alive connections to one backend (HTTP/1.1 or HTTP/2,
//!   plain or TLS), capped, with connect and response timeouts.
//! - [`headers`]: what the request and response carry across (hop-by-hop removed,
//!   `X-Forwarded-*`, `Forwarded`, the request id).
//! - [`tunnel`]: upgraded connections (WebSocket) passed through both ways.

pub mod backend;
pub mod check;
pub mod client;
pub mod headers;
pub mod latency;
pub mod pool;
pub mod retry;
pub mod select;
pub mod tunnel;

pub use pool::{AdminAction, Pool, PoolStatus, ServerStatus, Upstreams};

/// In a response's extensions: the backend that answered (`http://127.0.0.2:8080`),
/// for the access log.
#[derive(Debug, Clone)]
pub struct ServedBy(pub std::sync::Arc<str>);

/// Why a request sent to an upstream got no backend's answer. Mapped to 502, 503 or
/// 504 by [`crate::gateway::GatewayError::status`]; the text is the response body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No backend is up (or all are drained): 503 with `Retry-After`, at once.
    #[error("no backend of upstream {0} is up")]
    NoBackend(std::sync::Arc<str>),
    /// Could not connect (or finish TLS) to any backend tried: 502.
    #[error("could not connect to a backend")]
    Connect,
    /// The backend closed or broke the connection before a response head: 502.
    #[error("the backend closed the connection before answering")]
    NoResponse,
    /// The backend's answer was not HTTP: 502.
    #[error("the backend's answer was not valid HTTP")]
    BadResponse,
    /// No response head within `response_timeout_ms`: 504.
    #[error("the backend did not answer in time")]
    Timeout,
    /// Every backend tried had all its `max_connections` in use: 503.
    #[error("every backend of upstream {0} is at its connection limit")]
    Busy(std::sync::Arc<str>),
}

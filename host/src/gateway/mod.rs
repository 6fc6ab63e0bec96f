//! The L7 pipeline: request id, request checks, routing to a target, and the one
//! place where errors become HTTP responses.

mod error;

pub use error::GatewayError;

use crate::runtime::{Body, Runtime};
use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, Version};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Gateway {
    runtime: Arc<Runtime>,
    next_request_id: AtomicU64,
}

pub const REQUEST_ID: &str = "x-request-id";

impl Gateway {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        // Ids from different runs of the process should not collide in a shared log.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            runtime,
            next_request_id: AtomicU64::new(seed << 16),
        }
    }

    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let request_id: Arc<str> = format!("{id:016x}").into();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut response = match self.dispatch(req, request_id.clone()).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        };
        tracing::debug!(target: "access", %request_id, %method, %path, status = response.status().as_u16());
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        response
    }

    async fn dispatch<B>(
        &self,
        req: Request<B>,
        request_id: Arc<str>,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        check_host(&req)?;
        let registry = self.runtime.registry();
        let app = registry
            .route(req.uri().path())
            .ok_or(GatewayError::NotFound)?
            .clone();
        drop(registry);
        Ok(app.invoke(req, request_id).await?)
    }
}

/// HTTP/1.1 requires exactly one Host header (RFC 9112 §3.2) and hyper does not check it.
/// HTTP/2 carries the authority in the URI instead.
fn check_host<B>(req: &Request<B>) -> Result<(), GatewayError> {
    if req.version() >= Version::HTTP_2 {
        return Ok(());
    }
    match req.headers().get_all(HOST).iter().count() {
        1 => Ok(()),
        0 if req.uri().authority().is_some() => Ok(()),
        0 => Err(GatewayError::BadRequest("missing Host header")),
        _ => Err(GatewayError::BadRequest("more than one Host header")),
    }
}

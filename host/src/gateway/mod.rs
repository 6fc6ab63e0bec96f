//! The L7 pipeline: request id, request checks, the site and target a request is
//! for, and the one place where errors become HTTP responses.

mod error;
pub mod sites;
pub mod static_files;

pub use error::GatewayError;
pub use sites::Sites;

use crate::runtime::{Body, Runtime};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HOST, HeaderValue, LOCATION, STRICT_TRANSPORT_SECURITY};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use sites::{Decision, Target};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Gateway {
    runtime: Arc<Runtime>,
    sites: ArcSwap<Sites>,
    next_request_id: AtomicU64,
}

pub const REQUEST_ID: &str = "x-request-id";

/// What the connection a request came on tells about it.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub tls: bool,
    /// The server name the client asked for in the TLS handshake.
    pub sni: Option<Arc<str>>,
}

impl Gateway {
    pub fn new(runtime: Arc<Runtime>, sites: Sites) -> Self {
        // Ids from different runs of the process should not collide in a shared log.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            runtime,
            sites: ArcSwap::from_pointee(sites),
            next_request_id: AtomicU64::new(seed << 16),
        }
    }

    /// Replaces the sites atomically: requests already routed finish as they were.
    pub fn set_sites(&self, sites: Sites) {
        self.sites.store(Arc::new(sites));
    }

    pub async fn handle<B>(&self, req: Request<B>, conn: &Connection) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let request_id: Arc<str> = format!("{id:016x}").into();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut response = match self.dispatch(req, conn, request_id.clone()).await {
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
        conn: &Connection,
        request_id: Arc<str>,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        check_host(&req)?;
        let host = sites::request_host(&req);
        let sites = self.sites.load();
        let site = sites.find(host.as_deref(), conn.sni.as_deref())?;
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let site = match sites.decide(site, host.as_deref(), conn.tls, path_and_query) {
            Decision::Serve(site) => site,
            Decision::Redirect(location) => {
                return Ok(redirect(StatusCode::PERMANENT_REDIRECT, &location));
            }
        };
        let hsts = conn.tls.then(|| site.hsts().cloned()).flatten();
        let target = site.route(req.uri().path(), &self.runtime.registry())?;
        drop(sites);
        let mut response = match target {
            Target::App(app) => app.invoke(req, request_id).await?,
            Target::Static { files, prefix } => files.serve(req, &prefix).await,
            Target::Redirect { to, status } => redirect(status, &to),
        };
        if let Some(hsts) = hsts {
            response
                .headers_mut()
                .insert(STRICT_TRANSPORT_SECURITY, hsts);
        }
        Ok(response)
    }
}

/// An empty answer sending the client to `location`.
pub(crate) fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync());
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
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

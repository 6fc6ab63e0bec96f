//! The L7 pipeline: request id, request checks, the one normal form of the path (see
//! [`crate::http::path`]), the site and target a request is for, and the one place where errors
//! become HTTP responses.

pub mod access;
mod build_errors;
mod error;
pub mod limits;
pub mod sites;
pub mod static_files;

pub use build_errors::BuildErrors;
pub use error::GatewayError;
pub use sites::Sites;

use access::{AccessLog, Trail};

use crate::config::{LimitsConfig, LogConfig};
use crate::firewall::Firewall;
use crate::firewall::client::client_ip;
use crate::http::{Body, path};
use crate::metrics::{Kind, Metrics, RateScope, RouteMetrics};
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderValue, LOCATION, STRICT_TRANSPORT_SECURITY};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use sites::{Decision, Target};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Gateway {
    runtime: Arc<Runtime>,
    /// Under `wharf dev`: apps whose newest sources do not compile.
    build_errors: Option<Arc<BuildErrors>>,
    sites: ArcSwap<Sites>,
    /// `[firewall]`: trusted proxies and the rate limit across sites.
    firewall: ArcSwap<Firewall>,
    /// `[limits]` as requests are checked against them.
    limits: ArcSwap<LimitsConfig>,
    /// `[log]`'s access log settings.
    access: ArcSwap<AccessLog>,
    metrics: Arc<Metrics>,
    /// The handles of answers given before any site was found.
    unrouted: Arc<RouteMetrics>,
    next_request_id: AtomicU64,
}

pub const REQUEST_ID: &str = "x-request-id";

/// A request's id, in the `x-request-id` response header, the header sent to a
/// backend, and the log lines of the request (the guest's output among them): sixteen
/// hex digits of wharf's own, or the id a trusted proxy sent (see [`RequestId::given`]).
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

/// The longest id taken from a trusted proxy.
const MAX_GIVEN_ID: usize = 128;

impl RequestId {
    fn own(n: u64) -> Self {
        let digits = format!("{n:016x}");
        Self(HeaderValue::try_from(digits).expect("hex digits are a valid header value"))
    }

    /// The `x-request-id` of `headers` if it is fit for logs and headers (1 to 128 of
    /// `A-Z a-z 0-9 - _ . :`), which wharf keeps rather than making one, so a request
    /// has one id through every hop. Only asked of a trusted proxy's requests.
    fn given(headers: &http::HeaderMap) -> Option<Self> {
        let value = headers.get(REQUEST_ID)?;
        let bytes = value.as_bytes();
        let fit = |b: &u8| b.is_ascii_alphanumeric() || b"-_.:".contains(b);
        let ok = !bytes.is_empty() && bytes.len() <= MAX_GIVEN_ID && bytes.iter().all(fit);
        ok.then(|| Self(value.clone()))
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("only visible ASCII")
    }
}

#[cfg(test)]
impl RequestId {
    /// An id for tests of what runs under a request, outside the gateway.
    pub(crate) fn for_test(n: u64) -> Self {
        Self::own(n)
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which listener a connection came in through: numbered in the order the node bound
/// them, and kept by a listener that a reload keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(pub u32);

impl std::fmt::Display for ListenerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "listener#{}", self.0)
    }
}

/// What the connection a request came on tells about it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer's address, as the socket sees it (a proxy's, behind one).
    pub peer: SocketAddr,
    /// The client's address: the peer's, or the one a trusted proxy's PROXY protocol
    /// header named. (From a trusted peer, `X-Forwarded-For` may name another per
    /// request: see [`crate::firewall::client`].)
    pub client: SocketAddr,
    /// The address the client reached (the real one on a listener bound to 0.0.0.0).
    pub local: SocketAddr,
    pub listener: ListenerId,
    pub tls: bool,
    /// The server name the client asked for in the TLS handshake.
    pub sni: Option<Arc<str>>,
}

impl Connection {
    /// What the client used: `https` when TLS ended here.
    pub fn scheme(&self) -> http::uri::Scheme {
        match self.tls {
            true => http::uri::Scheme::HTTPS,
            false => http::uri::Scheme::HTTP,
        }
    }
}

impl Gateway {
    pub fn new(
        runtime: Arc<Runtime>,
        sites: Sites,
        firewall: Firewall,
        limits: &LimitsConfig,
        log: &LogConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        // Ids from different runs of the process should not collide in a shared log.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            runtime,
            build_errors: None,
            sites: ArcSwap::from_pointee(sites),
            firewall: ArcSwap::from_pointee(firewall),
            limits: ArcSwap::from_pointee(limits.clone()),
            access: ArcSwap::from_pointee(AccessLog::new(log)),
            unrouted: metrics.route("", Kind::None, ""),
            metrics,
            next_request_id: AtomicU64::new(seed << 16),
        }
    }

    /// Browsers asking for an app in `errors` get its compiler output (`wharf dev`).
    pub fn with_build_errors(mut self, errors: Arc<BuildErrors>) -> Self {
        self.build_errors = Some(errors);
        self
    }

    /// The application server behind the app routes.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The sites requests are routed by, for building the next ones.
    pub fn sites(&self) -> Arc<Sites> {
        self.sites.load_full()
    }

    /// Replaces the sites atomically: requests already routed finish as they were.
    pub fn set_sites(&self, sites: Sites) {
        self.sites.store(Arc::new(sites));
    }

    /// The firewall requests are checked against, for building the next one.
    pub fn firewall(&self) -> Arc<Firewall> {
        self.firewall.load_full()
    }

    /// Requests from now on are checked against `firewall`.
    pub fn set_firewall(&self, firewall: Firewall) {
        self.firewall.store(Arc::new(firewall));
    }

    /// Requests from now on are checked against `limits`.
    pub fn set_limits(&self, limits: &LimitsConfig) {
        self.limits.store(Arc::new(limits.clone()));
    }

    /// Requests from now on are logged as `log` says.
    pub fn set_log(&self, log: &LogConfig) {
        self.access.store(Arc::new(AccessLog::new(log)));
    }

    /// The node's metric families, for building the next sites.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub async fn handle<B>(&self, req: Request<B>, conn: &Connection) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        let started = tokio::time::Instant::now();
        // One look at the firewall: who the client is, which id the request has, and
        // whether the rate limit across sites lets it in.
        let (client, id, admitted) = {
            let firewall = self.firewall.load();
            let client = client_ip(conn.client.ip(), req.headers(), &firewall.trusted);
            let given = match firewall.trusted.contains(conn.client.ip()) {
                true => RequestId::given(req.headers()),
                false => None,
            };
            let id = given.unwrap_or_else(|| {
                RequestId::own(self.next_request_id.fetch_add(1, Ordering::Relaxed))
            });
            let admitted = match &firewall.rate {
                Some(rate) => rate.check(client).map_err(|retry_after| {
                    self.metrics.firewall.rate_limited(RateScope::Global);
                    GatewayError::TooManyRequests { retry_after }
                }),
                None => Ok(()),
            };
            (client, id, admitted)
        };
        // What the access log line names, taken before the request moves on (and only
        // when there is a log to write it to).
        let log = self.access.load_full();
        let named = log.is_on().then(|| access::Request {
            id: id.clone(),
            client,
            method: req.method().clone(),
            host: sites::request_host(&req).map(Cow::into_owned),
            path: req.uri().path().to_owned(),
        });
        let http1 = req.version() < Version::HTTP_2;
        let mut trail = Trail {
            route: self.unrouted.start(),
            body: None,
        };
        let answer = match admitted {
            Ok(()) => {
                self.dispatch(req, conn, id.clone(), client, &mut trail)
                    .await
            }
            Err(refused) => Err(refused),
        };
        let mut response = answer.unwrap_or_else(|e| error_response(e, http1));
        response
            .headers_mut()
            .insert(REQUEST_ID, id.header_value().clone());
        access::record(response, trail, started, &log, named)
    }

    async fn dispatch<B>(
        &self,
        req: Request<B>,
        conn: &Connection,
        id: RequestId,
        client: IpAddr,
        trail: &mut Trail,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Unpin + 'static,
    {
        check_host(&req)?;
        let limits = self.limits.load();
        limits::check_head(&req, &limits)?;
        let (req, body) = limits::limit_body(req, &limits);
        drop(limits);
        trail.body = Some(body.clone());
        let req = with_normal_path(req)?;
        if let Some(errors) = &self.build_errors
            && accepts_html(&req)
            && let Some((app, output)) = errors.for_path(req.uri().path(), &self.runtime.registry())
        {
            return Err(GatewayError::BuildFailed { app, output });
        }
        let host = sites::request_host(&req);
        let sites = self.sites.load();
        let site = sites.find(host.as_deref(), conn.sni.as_deref())?;
        trail.route = site.answers().start();
        // From here on every answer is this site's, a refusal or an error too: each
        // carries its HSTS header (over TLS) and its `headers`.
        let hsts = conn.tls.then(|| site.hsts().cloned()).flatten();
        let headers = site.headers().clone();
        let http1 = req.version() < http::Version::HTTP_2;
        // A redirect to the canonical host or to HTTPS is one more target; it has no
        // route of its own (the site's counts it).
        let routed = (|| {
            // An answer goes out whatever the site's rules (the CA's address is not
            // known); a token with no answer is one more request the rules count.
            let acme = sites.acme_answer(conn.tls, req.uri().path());
            if let Some(Ok(answer)) = acme {
                return Ok((Target::AcmeAnswer(answer), None));
            }
            site.admit(client)?;
            if acme.is_some() {
                return Err(GatewayError::NotFound);
            }
            let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
            match sites.decide(site, host.as_deref(), conn.tls, path_and_query) {
                Decision::Serve(site) => site
                    .route(req.uri().path(), &self.runtime.registry(), client)
                    .map(|(target, route)| (target, Some(route))),
                Decision::Redirect(to) => {
                    let status = StatusCode::PERMANENT_REDIRECT;
                    Ok((Target::Redirect { to, status }, None))
                }
            }
        })();
        drop(sites);
        let answer = match routed {
            Err(e) => Err(e),
            Ok((target, route)) => {
                if let Some(route) = route {
                    trail.route = route.start();
                }
                let answer = match target {
                    Target::App(app) => app
                        .invoke(req, conn.scheme(), id.as_str().into())
                        .await
                        .map_err(GatewayError::from),
                    Target::Static { files, prefix } => files.serve(req, &prefix).await,
                    Target::Redirect { to, status } => Ok(redirect(status, &to)),
                    Target::Upstream(pool) => pool.forward(req, conn, id).await,
                    Target::AcmeAnswer(answer) => Ok(acme_answer(answer)),
                };
                // A body that broke a limit made the target fail; the client hears why.
                body.answer(answer)
            }
        };
        let mut response = answer.unwrap_or_else(|e| error_response(e, http1));
        let fields = response.headers_mut();
        if let Some(hsts) = hsts {
            fields.insert(STRICT_TRANSPORT_SECURITY, hsts);
        }
        for (name, value) in headers.iter() {
            if !fields.contains_key(name) {
                fields.insert(name, value.clone());
            }
        }
        Ok(response)
    }
}

/// `req` with its path in normal form (see [`crate::http::path`]), so that routing, static files
/// and apps all see the one path.
fn with_normal_path<B>(mut req: Request<B>) -> Result<Request<B>, GatewayError> {
    let Cow::Owned(normal) = path::normalize(req.uri().path())? else {
        return Ok(req);
    };
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut uri = req.uri().clone().into_parts();
    uri.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|_| GatewayError::BadRequest("the path is not valid"))?,
    );
    *req.uri_mut() =
        Uri::from_parts(uri).map_err(|_| GatewayError::BadRequest("the path is not valid"))?;
    Ok(req)
}

/// A key authorization, as RFC 8555 §8.3 has it served.
fn acme_answer(answer: String) -> Response<Body> {
    let mut response = Response::new(crate::proxy::retry::full(answer.into()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
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

/// A browser navigating, rather than a program calling an API.
fn accepts_html<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
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

/// The answer to a request that failed with `e`. hyper closes an HTTP/1 connection
/// after an answer that says so.
fn error_response(e: GatewayError, http1: bool) -> Response<Body> {
    let closes = http1 && e.closes_connection();
    let mut response = e.into_response();
    if closes {
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(CONNECTION, close);
    }
    response
}

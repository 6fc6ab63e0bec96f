//! The admin listener: health checks for load balancers and orchestrators, and the
//! upstream pools' state and controls, apart from the sites and open only to the
//! networks `[admin] allow` names.
//!
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 while it should get new requests; 503 with the reasons, one per
//!   line, while it should not: draining for a shutdown, an app that failed to load
//!   with no version serving, the database primary down with no replica up (with one,
//!   reads go on and writes get 503), an upstream with no backend up (see
//!   [`Live::not_ready`]). Once draining, the listeners stay open for
//!   `[admin] drain_delay_ms`, so a balancer has time to notice and stop sending before
//!   they close.
//! - `GET /metrics`: every metric of the node, in the OpenMetrics text format.
//! - `GET /status`: the status page, one self-contained HTML page that reads
//!   `/status.json` every two seconds; `GET /status.json`: what it shows.
//! - `GET /upstreams`: every `[[upstream]]` and each backend's state, requests in
//!   flight, latency and ejections, as JSON.
//! - `POST /upstreams/NAME/servers/ADDR/drain`: the backend gets no new requests; those
//!   in flight (and open WebSockets) finish. For deploys: drain, wait for in flight to
//!   reach 0 in `/upstreams`, restart, enable.
//! - `POST /upstreams/NAME/servers/ADDR/enable`: back in rotation, through slow start.
//!
//! With `[admin] token_env` or `token_file` set, every request but `/healthz`,
//! `/readyz` and `/status` must carry `Authorization: Bearer TOKEN`, or gets 401 with
//! `WWW-Authenticate: Bearer`. The probes stay open: load balancers and orchestrators
//! send no secrets, and what they learn is public anyway. The status page holds no
//! data, only the script that fetches `/status.json`; a browser, which cannot send the
//! header on navigation, opens `/status#token=TOKEN` and the page sends it from there
//! (a URL fragment never reaches the server or its logs).
//!
//! ADDR is the server as written in wharf.toml or as `/upstreams` shows it, plain
//! (`127.0.0.2:8080`) or percent-encoded (`http%3A%2F%2F127.0.0.2%3A8080`). A
//! drain lasts until enabled (or the process restarts), across reloads. A wrong method
//! gets 405 with `Allow`, a pool or server that does not exist 404 naming it.

use super::live::Live;
use crate::config::{AdminConfig, LimitsConfig};
use crate::metrics::Format;
use crate::net::Listener;
use crate::proxy::AdminAction;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

/// What the admin listener serves, for the line that says where it listens.
pub const ENDPOINTS: &str =
    "/healthz, /readyz, /metrics, /status, /status.json, /upstreams, POST /drain, POST /acme/renew";

/// The status page, embedded: no files to install, no outside assets.
const STATUS_PAGE: &str = include_str!("status.html");

/// Binds the admin listener; its address is known (and printed) before serving starts.
pub async fn bind(address: SocketAddr) -> anyhow::Result<Listener> {
    use anyhow::Context as _;
    crate::net::bind(address)
        .await
        .with_context(|| format!("admin listener on {address}"))
}

/// `wharf drain`: asks the node behind `admin` to drain (`POST /drain`, with the
/// token), then waits, at most `patience`, for its admin listener to stop answering:
/// the node has exited.
pub async fn drain(admin: &AdminConfig, patience: Duration) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut address = admin.address;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let token = admin.token()?;
    let authorization = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST /drain HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n{authorization}Connection: close\r\n\r\n"
    );
    let asked = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut answer).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), asked)
        .await
        .map_err(|_| anyhow::anyhow!("the admin listener on {address} did not answer in 10 s"))?
        .with_context(|| format!("asking the admin listener on {address} to drain"))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status.split(' ').nth(1) == Some("202"),
        "{address} refused to drain: {status}: {}",
        body.trim()
    );
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::net::TcpStream::connect(address).await.is_ok() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the node on {address} is still up after {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(format!(
        "drained: the node with admin listener {address} has stopped"
    ))
}

/// The admin listener, serving until dropped; connections open then finish.
pub struct Admin {
    /// The bound address (the real port of a port 0 listener).
    pub local: SocketAddr,
    settings: Arc<ArcSwap<Settings>>,
    accept: tokio::task::JoinHandle<()>,
}

/// Who may use the admin endpoints.
pub struct Access {
    /// Client networks let in; others get 403.
    pub allow: Vec<IpNet>,
    /// The bearer token the endpoints but the probes require, if any.
    pub token: Option<String>,
}

impl Access {
    /// `[admin] allow` and the token as it reads now; an unreadable token file or an
    /// unset variable is an error naming the key.
    pub fn of(settings: &AdminConfig) -> anyhow::Result<Self> {
        Ok(Self {
            allow: settings.allow.clone(),
            token: settings.token()?,
        })
    }
}

/// What a new connection to the admin listener is checked and served with.
struct Settings {
    allow: Vec<IpNet>,
    /// SHA-256 of the token: comparing digests in constant time hides the token's
    /// length as well as its bytes.
    token: Option<[u8; 32]>,
    server: crate::net::Builder,
}

impl Settings {
    fn new(access: Access, limits: &LimitsConfig) -> Arc<Self> {
        Arc::new(Self {
            allow: access.allow,
            token: access.token.map(|t| Sha256::digest(t.as_bytes()).into()),
            server: crate::net::http_server(limits),
        })
    }

    /// Whether `req` carries the token (always, when none is required).
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let Some(presented) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
        else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(expected).into()
    }
}

/// The credentials of an `Authorization: Bearer ...` value; the scheme is
/// case-insensitive (RFC 9110 section 11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, credentials) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| credentials.trim_ascii())
}

impl Admin {
    /// Serves the admin endpoints on `listener` to `access`, with the node's `[limits]`
    /// as the sites' listeners have them, reporting on `node`.
    pub fn spawn(
        listener: Listener,
        access: Access,
        node: Arc<Live>,
        limits: &LimitsConfig,
    ) -> Self {
        let settings = Arc::new(ArcSwap::new(Settings::new(access, limits)));
        let accept = tokio::spawn(serve(listener.tcp, settings.clone(), node));
        Self {
            local: listener.local,
            settings,
            accept,
        }
    }

    /// Requests from now on, on open connections too, are let in by `access`;
    /// connections accepted from now on are read with `limits`.
    pub fn update(&self, access: Access, limits: &LimitsConfig) {
        self.settings.store(Settings::new(access, limits));
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        // Closes the socket. A client keeping a connection to it open would go on being
        // answered by settings nothing updates any more: its requests are refused.
        self.accept.abort();
        let nobody = Access {
            allow: Vec::new(),
            token: None,
        };
        self.settings
            .store(Settings::new(nobody, &LimitsConfig::default()));
    }
}

async fn serve(listener: TcpListener, settings: Arc<ArcSwap<Settings>>, node: Arc<Live>) {
    loop {
        let (stream, peer) = crate::net::accept(&listener).await;
        let (current, settings, node) = (settings.load_full(), settings.clone(), node.clone());
        tokio::spawn(async move {
            // The allow-list and the token are read per request, so a reload that changes
            // them applies to connections already open; the HTTP settings are the
            // connection's own.
            let service = service_fn(move |req| {
                let response = answer(&req, peer, &settings.load(), &node);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = current
                .server
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An admin endpoint, from a request's path.
#[derive(Debug, PartialEq)]
enum Endpoint<'a> {
    Healthz,
    Readyz,
    Metrics,
    Status,
    StatusJson,
    Upstreams,
    /// `POST /drain`: the node drains and stops, as on SIGTERM.
    Drain,
    /// `POST /acme/renew`: new certificates for every ACME site, now.
    AcmeRenew,
    /// `/upstreams/NAME/servers/ADDR/(drain|enable)`, NAME and ADDR decoded.
    Server {
        pool: Cow<'a, str>,
        server: Cow<'a, str>,
        action: AdminAction,
    },
}

impl<'a> Endpoint<'a> {
    fn of(path: &'a str) -> Option<Self> {
        match path {
            "/healthz" => return Some(Self::Healthz),
            "/readyz" => return Some(Self::Readyz),
            "/metrics" => return Some(Self::Metrics),
            "/status" => return Some(Self::Status),
            "/status.json" => return Some(Self::StatusJson),
            "/upstreams" => return Some(Self::Upstreams),
            "/drain" => return Some(Self::Drain),
            "/acme/renew" => return Some(Self::AcmeRenew),
            _ => {}
        }
        let (pool, rest) = path.strip_prefix("/upstreams/")?.split_once('/')?;
        // The last segment is the action, so an address written with its scheme
        // (`http://h:80`, slashes and all) is still one server.
        let (server, action) = rest.strip_prefix("servers/")?.rsplit_once('/')?;
        let action = match action {
            "drain" => AdminAction::Drain,
            "enable" => AdminAction::Enable,
            _ => return None,
        };
        let decode = |s: &'a str| percent_encoding::percent_decode_str(s).decode_utf8_lossy();
        let (pool, server) = (decode(pool), decode(server));
        if pool.is_empty() || server.is_empty() {
            return None;
        }
        Some(Self::Server {
            pool,
            server,
            action,
        })
    }

    /// The methods the endpoint answers, as `Allow` lists them.
    fn allow(&self) -> &'static str {
        match self {
            Self::Server { .. } | Self::Drain | Self::AcmeRenew => "POST",
            _ => "GET, HEAD",
        }
    }
}

fn answer<B>(
    req: &Request<B>,
    peer: SocketAddr,
    settings: &Settings,
    node: &Live,
) -> Response<Full<Bytes>> {
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let ip = peer.ip().to_canonical();
    if !settings.allow.iter().any(|net| net.contains(&ip)) {
        return text(StatusCode::FORBIDDEN, "forbidden\n");
    }
    let endpoint = Endpoint::of(req.uri().path());
    let open = matches!(
        endpoint,
        Some(Endpoint::Healthz | Endpoint::Readyz | Endpoint::Status)
    );
    // Before routing, so that without the token not even which paths exist shows.
    if !open && !settings.authorized(req) {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "unauthorized: bearer token required\n",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let Some(endpoint) = endpoint else {
        return text(
            StatusCode::NOT_FOUND,
            format!("not found: try {ENDPOINTS}\n"),
        );
    };
    let allowed = endpoint.allow();
    if !allowed.split(", ").any(|m| m == req.method().as_str()) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, format!("use {allowed}\n"));
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
        return response;
    }
    match endpoint {
        Endpoint::Healthz => text(StatusCode::OK, "ok\n"),
        Endpoint::Readyz => match node.not_ready() {
            why if why.is_empty() => text(StatusCode::OK, "ready\n"),
            why => text(StatusCode::SERVICE_UNAVAILABLE, why.join("\n") + "\n"),
        },
        Endpoint::Metrics => {
            let format = match accepts_openmetrics(req) {
                true => Format::OpenMetrics,
                false => Format::Text,
            };
            typed(node.metrics_text(format), format.content_type())
        }
        Endpoint::Status => typed(STATUS_PAGE, "text/html; charset=utf-8"),
        Endpoint::StatusJson => json(node.status()),
        Endpoint::Upstreams => json(node.upstreams.load().status()),
        Endpoint::Drain => {
            tracing::info!("drain asked for (admin)");
            node.readiness.request_drain();
            text(
                StatusCode::ACCEPTED,
                "draining: open connections finish, then the node stops\n",
            )
        }
        Endpoint::AcmeRenew => match node.acme.load().as_ref() {
            Some(acme) => {
                tracing::info!("ACME renewal asked for (admin)");
                acme.renew_all();
                text(
                    StatusCode::ACCEPTED,
                    "renewing: every ACME site orders a new certificate\n",
                )
            }
            None => text(StatusCode::NOT_FOUND, "no site has tls = \"acme\"\n"),
        },
        Endpoint::Server {
            pool,
            server,
            action,
        } => match node.upstreams.load().admin(&pool, &server, action) {
            Ok(()) => {
                let done = match action {
                    AdminAction::Drain => "drained: no new requests, those in flight finish",
                    AdminAction::Enable => "enabled: back in rotation, through slow start",
                };
                tracing::info!(upstream = %pool, server = %server, "{done} (admin)");
                text(
                    StatusCode::OK,
                    format!("upstream {pool} server {server} {done}\n"),
                )
            }
            Err(why) => text(StatusCode::NOT_FOUND, format!("{why}\n")),
        },
    }
}

/// Whether the client (Prometheus) takes the OpenMetrics format.
fn accepts_openmetrics<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// A 200 of `content_type`, never cached: each read is of the node now.
fn typed(body: impl Into<Bytes>, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::OK, body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
    typed(format!("{value}\n"), "application/json")
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An admin listener on 127.0.0.1:0 with no upstreams, letting in `allow`.
    async fn admin(allow: &str) -> Admin {
        admin_with_token(allow, None).await
    }

    /// Like `admin`, requiring `token`.
    async fn admin_with_token(allow: &str, token: Option<&str>) -> Admin {
        let listener = bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        Admin::spawn(
            listener,
            Access {
                allow: vec![allow.parse().unwrap()],
                token: token.map(String::from),
            },
            Live::for_test(),
            &LimitsConfig::default(),
        )
    }

    /// The response to `method path` on a new connection: status, headers, body.
    async fn request(admin: &Admin, method: &str, path: &str) -> (u16, String, String) {
        request_with(admin, method, path, "").await
    }

    /// Like `request`, with `headers` (each line ending in CRLF) added.
    async fn request_with(
        admin: &Admin,
        method: &str,
        path: &str,
        headers: &str,
    ) -> (u16, String, String) {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(admin.local).await.unwrap();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\n\
                 {headers}connection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the admin listener did not answer within 10 s");
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[test]
    fn a_server_path_is_decoded_whether_or_not_its_address_is_percent_encoded() {
        let server = |path| match Endpoint::of(path) {
            Some(Endpoint::Server {
                pool,
                server,
                action,
            }) => Some((pool.into_owned(), server.into_owned(), action)),
            _ => None,
        };
        let expected = |addr: &str, action| Some(("app".to_string(), addr.to_string(), action));
        assert_eq!(
            server("/upstreams/app/servers/127.0.0.2:8080/drain"),
            expected("127.0.0.2:8080", AdminAction::Drain)
        );
        assert_eq!(
            server("/upstreams/app/servers/http%3A%2F%2F127.0.0.2%3A8080/enable"),
            expected("http://127.0.0.2:8080", AdminAction::Enable)
        );
        assert_eq!(
            server("/upstreams/app/servers/http://127.0.0.2:8080/drain"),
            expected("http://127.0.0.2:8080", AdminAction::Drain)
        );
        for path in [
            "/upstreams/app",
            "/upstreams/app/servers",
            "/upstreams/app/servers/127.0.0.2:8080",
            "/upstreams/app/servers/127.0.0.2:8080/restart",
            "/upstreams/app/backends/127.0.0.2:8080/drain",
            "/upstreams//servers/127.0.0.2:8080/drain",
            "/upstreams/app/servers//drain",
        ] {
            assert_eq!(Endpoint::of(path), None, "{path}");
        }
        assert_eq!(Endpoint::of("/upstreams"), Some(Endpoint::Upstreams));
    }

    #[tokio::test]
    async fn upstreams_are_shown_as_json() {
        let admin = admin("127.0.0.0/8").await;
        let (status, head, body) = request(&admin, "GET", "/upstreams").await;
        assert_eq!(status, 200, "{body}");
        assert!(head.contains("content-type: application/json"), "{head}");
        serde_json::from_str::<serde_json::Value>(&body).expect("the body is JSON");
    }

    #[tokio::test]
    async fn a_drain_of_a_pool_that_does_not_exist_is_404_naming_it() {
        let admin = admin("127.0.0.0/8").await;
        for action in ["drain", "enable"] {
            let path = format!("/upstreams/nope/servers/127.0.0.2%3A8080/{action}");
            let (status, _, body) = request(&admin, "POST", &path).await;
            assert_eq!(status, 404, "{body}");
            assert!(body.contains("\"nope\""), "{body}");
        }
    }

    #[tokio::test]
    async fn the_wrong_method_is_405_with_the_methods_allowed() {
        let admin = admin("127.0.0.0/8").await;
        let (status, head, _) =
            request(&admin, "GET", "/upstreams/app/servers/127.0.0.2:8080/drain").await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: post"), "{head}");
        for path in ["/upstreams", "/healthz", "/readyz"] {
            let (status, head, _) = request(&admin, "POST", path).await;
            assert_eq!(status, 405, "{path}");
            assert!(head.contains("allow: get, head"), "{path}: {head}");
        }
        let (status, _, body) = request(&admin, "GET", "/nothing").await;
        assert_eq!(status, 404);
        assert!(body.contains("/upstreams"), "{body}");
    }

    #[tokio::test]
    async fn the_allow_list_holds_for_the_upstream_endpoints_too() {
        let admin = admin("10.0.0.0/8").await;
        for (method, path) in [
            ("GET", "/upstreams"),
            ("POST", "/upstreams/app/servers/127.0.0.2:8080/drain"),
            ("POST", "/upstreams/app/servers/127.0.0.2:8080/enable"),
        ] {
            let (status, _, _) = request(&admin, method, path).await;
            assert_eq!(status, 403, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn with_a_token_every_endpoint_but_the_probes_wants_it_as_a_bearer_credential() {
        let admin = admin_with_token("127.0.0.0/8", Some("s3cret")).await;
        let drain = "/upstreams/nope/servers/127.0.0.2:8080/drain";
        for (method, path) in [("GET", "/upstreams"), ("POST", drain), ("GET", "/metrics")] {
            for headers in [
                "",
                "authorization: Bearer wrong\r\n",
                "authorization: Bearer s3cre\r\n",
                "authorization: Bearer s3cretX\r\n",
                "authorization: Basic s3cret\r\n",
                "authorization: s3cret\r\n",
            ] {
                let (status, head, _) = request_with(&admin, method, path, headers).await;
                assert_eq!(status, 401, "{method} {path} with {headers:?}");
                assert!(head.contains("www-authenticate: bearer"), "{head}");
            }
        }
        for headers in [
            "authorization: Bearer s3cret\r\n",
            "authorization: bearer  s3cret\r\n",
        ] {
            let (status, _, body) = request_with(&admin, "GET", "/upstreams", headers).await;
            assert_eq!(status, 200, "{headers:?}: {body}");
        }
        // With the token, what was 401 is answered as without a token at all.
        let (status, _, _) =
            request_with(&admin, "POST", drain, "authorization: Bearer s3cret\r\n").await;
        assert_eq!(status, 404);
        for path in ["/healthz", "/readyz", "/status"] {
            let (status, _, _) = request(&admin, "GET", path).await;
            assert_eq!(status, 200, "{path}");
        }
        let (status, _, _) = request(&admin, "GET", "/status.json").await;
        assert_eq!(status, 401, "the page is open, its data is not");
    }

    #[tokio::test]
    async fn metrics_are_openmetrics_text_with_the_node_gauges() {
        let admin = admin("127.0.0.0/8").await;
        let openmetrics = "accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n";
        let (status, head, body) = request_with(&admin, "GET", "/metrics", openmetrics).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            head.contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        for line in [
            "# TYPE wharf_firewall_denied counter",
            r#"wharf_firewall_denied_total{rule="listener"} 0"#,
            "# TYPE wharf_build_info gauge",
            "wharf_ready 1",
            "wharf_log_lines_dropped_total 0",
        ] {
            assert!(body.contains(line), "{line:?} missing from\n{body}");
        }
        assert!(body.ends_with("# EOF\n"), "{body}");
        // Without asking for OpenMetrics: the text format.
        let (_, head, body) = request(&admin, "GET", "/metrics").await;
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            body.contains("# TYPE wharf_firewall_denied_total counter"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn the_status_page_and_its_data_are_served() {
        let admin = admin("127.0.0.0/8").await;
        let (status, head, body) = request(&admin, "GET", "/status").await;
        assert_eq!(status, 200);
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(body.contains("status.json"), "the page fetches its data");
        let (status, head, body) = request(&admin, "GET", "/status.json").await;
        assert_eq!(status, 200, "{body}");
        assert!(head.contains("cache-control: no-store"), "{head}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["node"]["ready"], true, "{status}");
        for key in [
            "apps",
            "upstreams",
            "databases",
            "certificates",
            "reload_errors",
        ] {
            assert!(status[key].is_array(), "{key} in {status}");
        }
        assert_eq!(status["history"]["interval_seconds"], 5);
    }

    #[tokio::test]
    async fn a_draining_node_is_not_ready_and_says_why() {
        let node = Live::for_test();
        let listener = bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let everyone = Access {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            token: None,
        };
        let admin = Admin::spawn(listener, everyone, node.clone(), &LimitsConfig::default());
        assert_eq!(request(&admin, "GET", "/readyz").await.0, 200);
        node.readiness.start_draining();
        let (status, _, body) = request(&admin, "GET", "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.starts_with("draining"), "{body}");
    }

    #[tokio::test]
    async fn wharf_drain_posts_with_the_token_and_waits_for_the_node_to_stop() {
        let node = Live::for_test();
        let listener = bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let access = Access {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            token: Some("secret".into()),
        };
        let admin = Admin::spawn(listener, access, node.clone(), &LimitsConfig::default());
        let (status, head, _) = request(&admin, "GET", "/drain").await;
        assert_eq!(status, 401, "{head}");
        let (status, head, _) =
            request_with(&admin, "GET", "/drain", "authorization: Bearer secret\r\n").await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: post"), "{head}");
        assert_eq!(request(&admin, "POST", "/drain").await.0, 401);
        let early =
            tokio::time::timeout(Duration::from_millis(50), node.readiness.drain_requested());
        assert!(early.await.is_err(), "asked to drain without the token");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "secret\n").unwrap();
        let config = AdminConfig {
            address: admin.local,
            allow: Vec::new(),
            drain_delay: Duration::ZERO,
            token_env: None,
            token_file: Some(dir.path().join("token")),
            track_file: None,
        };
        let client = tokio::spawn(async move { drain(&config, Duration::from_secs(10)).await });
        tokio::time::timeout(Duration::from_secs(5), node.readiness.drain_requested())
            .await
            .expect("the drain was not asked for");
        assert!(!client.is_finished(), "returned before the node stopped");
        drop(admin);
        let answer = client.await.unwrap().unwrap();
        assert!(answer.starts_with("drained"), "{answer}");
    }

    #[tokio::test]
    async fn an_update_changes_the_token_required_from_the_next_request_on() {
        let admin = admin_with_token("127.0.0.0/8", Some("old")).await;
        let old = "authorization: Bearer old\r\n";
        let new = "authorization: Bearer new\r\n";
        assert_eq!(request_with(&admin, "GET", "/upstreams", old).await.0, 200);
        admin.update(
            Access {
                allow: vec!["127.0.0.0/8".parse().unwrap()],
                token: Some("new".into()),
            },
            &LimitsConfig::default(),
        );
        assert_eq!(request_with(&admin, "GET", "/upstreams", old).await.0, 401);
        assert_eq!(request_with(&admin, "GET", "/upstreams", new).await.0, 200);
    }

    #[test]
    fn a_bearer_credential_is_read_whatever_the_case_of_its_scheme() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
    }
}

//! The admin listener: health checks for load balancers and orchestrators, and the
//! upstream pools' state and controls, apart from the sites and open only to the
//! networks `[admin] allow` names.
//!
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 while it takes new requests, 503 once it is draining for a
//!   shutdown (readiness). The listeners stay open for `[admin] drain_delay_ms` after
//!   that, so a balancer has time to notice and stop sending before they close.
//! - `GET /upstreams`: every `[[upstream]]` and each backend's state, requests in
//!   flight, latency and ejections, as JSON.
//! - `POST /upstreams/NAME/servers/ADDR/drain`: the backend gets no new requests; those
//!   in flight (and open WebSockets) finish. For deploys: drain, wait for in flight to
//!   reach 0 in `/upstreams`, restart, enable.
//! - `POST /upstreams/NAME/servers/ADDR/enable`: back in rotation, through slow start.
//!
//! ADDR is the server as written in wharf.toml or as `/upstreams` shows it, plain
//! (`127.0.0.2:8080`) or percent-encoded (`http%3A%2F%2F127.0.0.2%3A8080`). A
//! drain lasts until enabled (or the process restarts), across reloads. A wrong method
//! gets 405 with `Allow`, a pool or server that does not exist 404 naming it.

use crate::net::Listener;
use crate::proxy::{AdminAction, Upstreams};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use std::borrow::Cow;
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

/// What the admin listener serves, for the line that says where it listens.
pub const ENDPOINTS: &str = "/healthz, /readyz, /upstreams";

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
            server: crate::net::http_server(&crate::config::LimitsConfig {
                header_read_timeout: header_read,
                ..Default::default()
            }),
        })
    }
}

impl Admin {
    /// Serves the admin endpoints on `listener`, with the same HTTP settings (header
    /// read timeout included) as the sites' listeners. `upstreams` are the node's live
    /// pools, swapped by reloads.
    pub fn spawn(
        listener: Listener,
        allow: Vec<IpNet>,
        readiness: Arc<Readiness>,
        upstreams: Arc<ArcSwap<Upstreams>>,
        header_read: Duration,
    ) -> Self {
        let settings = Arc::new(ArcSwap::new(Settings::new(allow, header_read)));
        let node = Arc::new(NodeState {
            readiness,
            upstreams,
        });
        let accept = tokio::spawn(serve(listener.tcp, settings.clone(), node));
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

/// What the endpoints report on and act on.
struct NodeState {
    readiness: Arc<Readiness>,
    upstreams: Arc<ArcSwap<Upstreams>>,
}

async fn serve(listener: TcpListener, settings: Arc<ArcSwap<Settings>>, node: Arc<NodeState>) {
    loop {
        let (stream, peer) = crate::net::accept(&listener).await;
        let (current, settings, node) = (settings.load_full(), settings.clone(), node.clone());
        tokio::spawn(async move {
            // The allow-list is read per request, so a reload that narrows it applies to
            // connections already open; the HTTP settings are the connection's own.
            let service = service_fn(move |req| {
                let response = answer(&req, peer, &settings.load().allow, &node);
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
    Upstreams,
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
            "/upstreams" => return Some(Self::Upstreams),
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
            Self::Server { .. } => "POST",
            _ => "GET, HEAD",
        }
    }
}

fn answer<B>(
    req: &Request<B>,
    peer: SocketAddr,
    allow: &[IpNet],
    node: &NodeState,
) -> Response<Full<Bytes>> {
    // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let ip = peer.ip().to_canonical();
    if !allow.iter().any(|net| net.contains(&ip)) {
        return text(StatusCode::FORBIDDEN, "forbidden\n");
    }
    let Some(endpoint) = Endpoint::of(req.uri().path()) else {
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
        Endpoint::Readyz if node.readiness.draining.load(Ordering::Relaxed) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        Endpoint::Readyz => text(StatusCode::OK, "ready\n"),
        Endpoint::Upstreams => {
            let mut body = node.upstreams.load().status().to_string();
            body.push('\n');
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An admin listener on 127.0.0.1:0 with no upstreams, letting in `allow`.
    async fn admin(allow: &str) -> Admin {
        let listener = bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        Admin::spawn(
            listener,
            vec![allow.parse().unwrap()],
            Arc::default(),
            Arc::default(),
            Duration::from_secs(5),
        )
    }

    /// The response to `method path` on a new connection: status, headers, body.
    async fn request(admin: &Admin, method: &str, path: &str) -> (u16, String, String) {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(admin.local).await.unwrap();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\n\
                 connection: close\r\n\r\n"
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
        let (status, _, body) = request(&admin, "GET", "/metrics").await;
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
}

//! Sending a guest's outbound HTTP request, with the address checked as well as the
//! name.
//!
//! The name check (`allowed_outbound_hosts`) happens before this. Here the name is
//! resolved once, each address is checked, and the connection goes to a checked
//! address: there is no second lookup between check and connect, so a name whose DNS
//! answer changes (DNS rebinding) cannot slip an internal address past the check.
//!
//! An address is *reserved* when it is loopback, private (10/8, 172.16/12,
//! 192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), shared address space
//! (100.64/10), unspecified (0/8, ::), multicast or broadcast and reserved (240/4),
//! in IPv4 or IPv4-mapped IPv6 form, or is the node's own admin listener or database.
//! A reserved address is tried only when a rule that matched the request names it:
//! an IP-literal rule equal to it, or a `localhost` rule for loopback (but not the
//! node's own addresses, which need their IP literal). A wildcard or a name never
//! grants one: what a name resolves to is up to whoever runs its DNS.
//!
//! Connecting, TLS (the web PKI roots, the host name as SNI), the timeouts (connect,
//! first byte, between bytes) and the error codes are those of
//! `wasmtime_wasi_http::default_send_request`, which this replaces.

use super::manifest::OutboundRule;
use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::Body;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions};

/// What wasmtime waits when the guest sets no timeout of its own.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Why an address needs a rule naming it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reserved {
    Loopback,
    Private,
    LinkLocal,
    SharedAddressSpace,
    Unspecified,
    Multicast,
    Broadcast,
    /// The node's admin listener or database.
    Node,
}

impl std::fmt::Display for Reserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::SharedAddressSpace => "shared (CGNAT)",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast or reserved",
            Self::Node => "the node's admin or database",
        })
    }
}

/// Whether `addr` is reserved, and why; `node` are the node's own addresses.
pub fn reserved(addr: SocketAddr, node: &[SocketAddr]) -> Option<Reserved> {
    let ip = addr.ip().to_canonical();
    if node
        .iter()
        .any(|n| n.ip().to_canonical() == ip && n.port() == addr.port())
    {
        return Some(Reserved::Node);
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some(Reserved::Loopback)
            } else if v4.is_private() {
                Some(Reserved::Private)
            } else if v4.is_link_local() {
                Some(Reserved::LinkLocal)
            } else if a == 100 && b & 0xc0 == 64 {
                Some(Reserved::SharedAddressSpace)
            } else if a == 0 {
                Some(Reserved::Unspecified)
            } else if v4.is_multicast() {
                Some(Reserved::Multicast)
            } else if a >= 240 {
                Some(Reserved::Broadcast)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some(Reserved::Loopback)
            } else if v6.is_unspecified() {
                Some(Reserved::Unspecified)
            } else if v6.is_unique_local() {
                Some(Reserved::Private)
            } else if v6.is_unicast_link_local() {
                Some(Reserved::LinkLocal)
            } else if first & 0xff00 == 0xff00 {
                Some(Reserved::Multicast)
            } else {
                None
            }
        }
    }
}

/// Why a request was not sent: for the log; the guest gets the error code.
pub enum Refusal {
    /// Every address the name resolved to is reserved and no matching rule names it.
    Reserved(Vec<(IpAddr, Reserved)>),
    Failed(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

/// The response, and the future that drives its connection to the end.
pub type Sent = (
    Response<IncomingBody>,
    Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
);

/// Sends `req` (whose host and port the rules in `matched` allow) to the first of the
/// addresses its host resolves to that passes the check.
pub async fn send(
    mut req: Request<impl Body<Data = Bytes, Error = Error> + Send + 'static>,
    options: Option<RequestOptions>,
    matched: &[&OutboundRule],
    node: &[SocketAddr],
) -> Result<Sent, Refusal> {
    let uri = req.uri();
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
    let use_tls = uri.scheme() == Some(&Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if use_tls { 443 } else { 80 });
    let option = |pick: fn(&RequestOptions) -> Option<Duration>| {
        options.as_ref().and_then(pick).unwrap_or(DEFAULT_TIMEOUT)
    };
    let connect_timeout = option(|o| o.connect_timeout);
    let first_byte_timeout = option(|o| o.first_byte_timeout);
    let between_bytes_timeout = option(|o| o.between_bytes_timeout);

    let connect = connect(&host, port, matched, node);
    let stream = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let stream: Box<dyn Stream> = if use_tls {
        // `[::1]` is the host of the URI; the name rustls checks is `::1`.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(name)
            .map_err(Error::InvalidDnsNameError)?
            .to_owned();
        let tls = tokio_rustls::TlsConnector::from(TLS.clone())
            .connect(name, stream)
            .await
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(Error::from)?;

    // The request line carries the path only: scheme and authority are for proxies.
    *req.uri_mut() = path_only(req.uri());
    let mut send = Box::pin(tokio::time::timeout(
        first_byte_timeout,
        sender.send_request(req),
    ));
    let mut conn = Some(Box::pin(conn));
    // The connection is driven while the response is awaited; if it ends first, the
    // response (or why there is none) is ready.
    let response = tokio::select! {
        response = &mut send => response,
        ended = conn.as_mut().expect("the connection has not ended yet") => {
            ended.map_err(Error::from)?;
            conn = None;
            send.await
        }
    };
    let response = response
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    // Tokio panics on an interval of zero; 1 ns is as good as zero.
    let between_bytes = tokio::time::interval(between_bytes_timeout.max(Duration::from_nanos(1)));
    let response = response.map(|incoming| IncomingBody::new(incoming, between_bytes));
    let io = async move {
        match conn {
            None => Ok(()),
            Some(conn) => conn.await.map_err(|e| {
                if e.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(e)
                }
            }),
        }
    };
    Ok((response, Box::pin(io)))
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Resolves `host` once and connects to the first address that passes the check.
async fn connect(
    host: &str,
    port: u16,
    matched: &[&OutboundRule],
    node: &[SocketAddr],
) -> Result<TcpStream, Refusal> {
    // An IP literal resolves to itself without a lookup.
    let addrs = tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(Error::Connect)?;
    let mut refused = Vec::new();
    let mut last_error = None;
    for addr in addrs {
        if let Some(why) = reserved(addr, node) {
            let named = matched
                .iter()
                .any(|rule| rule.names(addr.ip(), why == Reserved::Loopback));
            if !named {
                refused.push((addr.ip(), why));
                continue;
            }
        }
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => Refusal::Failed(Error::Connect(e)),
        None if !refused.is_empty() => Refusal::Reserved(refused),
        None => Refusal::Failed(Error::DestinationNotFound),
    })
}

fn path_only(uri: &http::Uri) -> http::Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    http::Uri::builder()
        .path_and_query(path)
        .build()
        .expect("a valid path and query stays valid")
}

/// TLS to outbound hosts: the web PKI roots, as wasmtime's own client has them.
static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
});

/// A response body that fails when no data comes for `between_bytes`.
pub struct IncomingBody {
    incoming: hyper::body::Incoming,
    between_bytes: tokio::time::Interval,
}

impl IncomingBody {
    fn new(incoming: hyper::body::Incoming, mut between_bytes: tokio::time::Interval) -> Self {
        // An interval's first tick is immediate; the first wait is a full period.
        between_bytes.reset();
        Self {
            incoming,
            between_bytes,
        }
    }
}

impl Body for IncomingBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.between_bytes.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if e.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Error::from))),
            Poll::Pending => {
                ready!(self.between_bytes.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(addr: &str) -> Option<Reserved> {
        let ip: IpAddr = addr.parse().unwrap();
        reserved(SocketAddr::new(ip, 80), &[])
    }

    #[test]
    fn internal_ranges_are_reserved_in_every_form_and_public_ones_are_not() {
        use Reserved::*;
        for (addr, why) in [
            ("127.0.0.1", Loopback),
            ("127.9.9.9", Loopback),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("::ffff:192.168.1.1", Private),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("169.254.169.254", LinkLocal),
            ("::ffff:169.254.169.254", LinkLocal),
            ("fe80::1", LinkLocal),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("::", Unspecified),
            ("224.0.0.1", Multicast),
            ("ff02::1", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Broadcast),
        ] {
            assert_eq!(check(addr), Some(why), "{addr}");
        }
        for addr in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(check(addr), None, "{addr}");
        }
    }

    #[test]
    fn the_node_addresses_are_reserved_by_address_and_port() {
        let node: SocketAddr = "203.0.113.5:9180".parse().unwrap();
        let at = |s: &str| reserved(s.parse().unwrap(), &[node]);
        assert_eq!(at("203.0.113.5:9180"), Some(Reserved::Node));
        assert_eq!(at("[::ffff:203.0.113.5]:9180"), Some(Reserved::Node));
        assert_eq!(at("203.0.113.5:443"), None);
    }
}

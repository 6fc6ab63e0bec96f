//! What crosses the balancer with a request and its answer: hop-by-hop headers stop
//! here (RFC 9110 §7.6.1), the forwarding headers say who really asked, and the
//! request id goes on so the backend's log lines match ours.

use crate::gateway::{Connection, REQUEST_ID, RequestId};
use http::header::{
    CONNECTION, FORWARDED, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use ipnet::IpNet;
use std::net::IpAddr;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// Part of an `h2c` upgrade, which is never passed on (RFC 9113 §3.2 makes it
/// connection-specific).
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Makes `req` the request a backend gets: hop-by-hop headers removed (those named in
/// `Connection` too; `Upgrade` kept on an upgrade request), `X-Forwarded-For`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` set from the connection's
/// client (the peer, or whom its PROXY protocol header named; values the client sent
/// replaced, unless its address is in `trusted`, then appended to), the request id in `x-request-id`, the URI in origin form.
pub fn to_backend<B>(req: &mut Request<B>, conn: &Connection, id: RequestId, trusted: &[IpNet]) {
    let upgrade = match is_upgrade(req) {
        true => req.headers().get(UPGRADE).cloned(),
        false => None,
    };
    // An HTTP/2 client names the host only in the URI, which becomes origin form
    // below; HTTP/1.1 backends need it as Host.
    let host = match req.headers().get(HOST) {
        Some(host) => Some(host.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    let headers = req.headers_mut();
    let te_trailers = headers
        .get_all(TE)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("trailers")));
    remove_hop_by_hop(headers);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
    if let Some(host) = &host {
        headers.insert(HOST, host.clone());
    }

    // Behind a PROXY protocol header the peer is a load balancer relaying bytes, not
    // the one who wrote the request's headers: the client it named did.
    let peer = conn.client.ip().to_canonical();
    let is_trusted = trusted.iter().any(|n| n.contains(&peer));
    let proto = match conn.tls {
        true => "https",
        false => "http",
    };
    set_or_append(headers, X_FORWARDED_FOR, &peer.to_string(), is_trusted);
    if !(is_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(is_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match &host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
            None => headers.remove(X_FORWARDED_HOST),
        };
    }
    let mut forwarded = format!("for={};proto={}", forwarded_for(peer), proto);
    if let Some(host) = host.as_ref().and_then(|h| h.to_str().ok()) {
        forwarded.push_str(";host=");
        forwarded.push_str(&forwarded_value(host));
    }
    set_or_append(headers, FORWARDED, &forwarded, is_trusted);
    headers.insert(REQUEST_ID, id.header_value().clone());

    let origin = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(origin);
}

/// Hop-by-hop headers removed from a backend's answer (kept on a 101).
pub fn from_backend<B>(resp: &mut Response<B>) {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        remove_hop_by_hop(resp.headers_mut());
    }
}

/// The request asks to switch protocols (WebSocket and other `Upgrade`s, over HTTP/1.1).
/// Not to `h2c`: a backend that took it would turn the connection into a tunnel of
/// HTTP/2 requests that the balancer never sees, so never routes, checks or marks with
/// forwarding headers (h2c smuggling). Such a request goes on as a plain one.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let upgrade = req.headers().get_all(UPGRADE);
    req.version() == Version::HTTP_11
        && upgrade.iter().next().is_some()
        && !upgrade
            .iter()
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("h2c")))
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")))
}

/// Removes `Connection`, the headers it names, and the ones that are hop-by-hop by
/// definition.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(tokens)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        HTTP2_SETTINGS,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The comma-separated tokens of a header value (values that are not text have none).
fn tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// `name: value` alone, or, from a trusted peer, appended to what it sent (its
/// header lines joined into one list).
fn set_or_append(headers: &mut HeaderMap, name: HeaderName, value: &str, append: bool) {
    let mut list: Vec<&str> = Vec::new();
    let sent: Vec<HeaderValue> = match append {
        true => headers.get_all(&name).iter().cloned().collect(),
        false => Vec::new(),
    };
    list.extend(sent.iter().filter_map(|v| v.to_str().ok()));
    list.push(value);
    // Every part is a header value already or made of address and host characters.
    let joined = HeaderValue::from_str(&list.join(", ")).expect("a valid header value");
    headers.insert(name, joined);
}

/// The `for=` of RFC 7239: an IPv6 address in brackets, quoted.
fn forwarded_for(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// A `Forwarded` parameter value: a token as it is, anything else (`host:port`)
/// quoted.
fn forwarded_value(value: &str) -> String {
    let token = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    match token {
        true => value.to_string(),
        false => format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::ListenerId;
    use std::net::SocketAddr;

    fn conn(peer: &str, tls: bool) -> Connection {
        Connection {
            peer: peer.parse().unwrap(),
            client: peer.parse().unwrap(),
            local: "127.0.0.1:443".parse::<SocketAddr>().unwrap(),
            listener: ListenerId(0),
            tls,
            sni: None,
        }
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn values(req: &Request<()>, name: &str) -> Vec<String> {
        req.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn to_backend_sets_forwarding_headers_and_strips_hop_by_hop_ones() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // (peer, tls, uri, headers sent, header checked, values the backend gets)
        type Case<'a> = (
            &'a str,
            bool,
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a str,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // A client's own X-Forwarded-For is a lie until trusted: replaced.
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[("host", "example.com"), ("x-forwarded-for", "1.2.3.4")],
                "x-forwarded-for",
                &["192.0.2.7"],
            ),
            // A trusted proxy's list grows by its own address, lines joined.
            (
                "10.1.2.3:5000",
                false,
                "/a",
                &[
                    ("host", "example.com"),
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-forwarded-for", "198.51.100.1"),
                ],
                "x-forwarded-for",
                &["203.0.113.9, 198.51.100.1, 10.1.2.3"],
            ),
            // An IPv4-mapped IPv6 peer is the IPv4 address, trusted as one.
            (
                "[::ffff:10.0.0.5]:5000",
                false,
                "/a",
                &[("host", "example.com"), ("x-forwarded-for", "203.0.113.9")],
                "x-forwarded-for",
                &["203.0.113.9, 10.0.0.5"],
            ),
            (
                "192.0.2.7:5000",
                true,
                "/a",
                &[("host", "example.com"), ("x-forwarded-proto", "http")],
                "x-forwarded-proto",
                &["https"],
            ),
            (
                "10.1.2.3:5000",
                false,
                "/a",
                &[("host", "example.com"), ("x-forwarded-proto", "https")],
                "x-forwarded-proto",
                &["https"],
            ),
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[("host", "example.com:8080"), ("x-forwarded-host", "evil")],
                "x-forwarded-host",
                &["example.com:8080"],
            ),
            (
                "10.1.2.3:5000",
                false,
                "/a",
                &[("host", "internal"), ("x-forwarded-host", "example.com")],
                "x-forwarded-host",
                &["example.com"],
            ),
            // IPv6 in Forwarded is quoted in brackets; host:port is quoted.
            (
                "[2001:db8::1]:5000",
                true,
                "/a",
                &[("host", "example.com:8443"), ("forwarded", "for=evil")],
                "forwarded",
                &["for=\"[2001:db8::1]\";proto=https;host=\"example.com:8443\""],
            ),
            (
                "10.1.2.3:5000",
                false,
                "/a",
                &[("host", "example.com"), ("forwarded", "for=203.0.113.9")],
                "forwarded",
                &["for=203.0.113.9, for=10.1.2.3;proto=http;host=example.com"],
            ),
            // Headers named in Connection are hop-by-hop too.
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[
                    ("host", "example.com"),
                    ("connection", "keep-alive, x-secret"),
                    ("x-secret", "1"),
                ],
                "x-secret",
                &[],
            ),
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[("host", "example.com"), ("connection", "keep-alive")],
                "connection",
                &[],
            ),
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[("host", "example.com"), ("keep-alive", "timeout=5")],
                "keep-alive",
                &[],
            ),
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[("host", "example.com"), ("te", "gzip, trailers")],
                "te",
                &["trailers"],
            ),
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[("host", "example.com"), ("te", "gzip")],
                "te",
                &[],
            ),
            // Upgrade without Connection: upgrade is no upgrade: removed.
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[("host", "example.com"), ("upgrade", "websocket")],
                "upgrade",
                &[],
            ),
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[
                    ("host", "example.com"),
                    ("connection", "Upgrade"),
                    ("upgrade", "websocket"),
                ],
                "upgrade",
                &["websocket"],
            ),
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[
                    ("host", "example.com"),
                    ("connection", "keep-alive, Upgrade"),
                    ("upgrade", "websocket"),
                ],
                "connection",
                &["upgrade"],
            ),
            // An HTTP/2 client's authority becomes Host.
            (
                "192.0.2.7:5000",
                true,
                "https://example.com/a?b",
                &[],
                "host",
                &["example.com"],
            ),
            (
                "192.0.2.7:5000",
                false,
                "/a",
                &[("host", "example.com"), ("x-request-id", "spoofed")],
                "x-request-id",
                &["00000000000000ff"],
            ),
        ];
        for (peer, tls, uri, sent, name, expected) in cases {
            let mut req = request(uri, sent);
            to_backend(
                &mut req,
                &conn(peer, *tls),
                RequestId::for_test(0xff),
                &trusted,
            );
            assert_eq!(
                values(&req, name),
                *expected,
                "{name} from {peer} sending {sent:?}"
            );
        }
    }

    #[test]
    fn behind_a_proxy_protocol_header_the_named_client_is_forwarded_and_decides_trust() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let relayed = |client: &str| Connection {
            client: client.parse().unwrap(),
            ..conn("10.0.0.1:4000", false)
        };
        let sent = [("x-forwarded-for", "198.51.100.1")];
        // The balancer is trusted, the client it names is not: what it sent is replaced.
        let mut req = request("/", &sent);
        to_backend(
            &mut req,
            &relayed("192.0.2.9:5000"),
            RequestId::for_test(1),
            &trusted,
        );
        assert_eq!(values(&req, "x-forwarded-for"), ["192.0.2.9"]);
        assert_eq!(values(&req, "forwarded"), ["for=192.0.2.9;proto=http"]);
        // A trusted proxy behind the balancer: its list grows by its address.
        let mut req = request("/", &sent);
        to_backend(
            &mut req,
            &relayed("10.1.1.1:5000"),
            RequestId::for_test(1),
            &trusted,
        );
        assert_eq!(values(&req, "x-forwarded-for"), ["198.51.100.1, 10.1.1.1"]);
    }

    #[test]
    fn to_backend_makes_the_uri_origin_form() {
        let mut req = request("https://example.com/a/b?c=d", &[]);
        to_backend(
            &mut req,
            &conn("192.0.2.7:1", true),
            RequestId::for_test(1),
            &[],
        );
        assert_eq!(req.uri().to_string(), "/a/b?c=d");
        assert!(req.uri().authority().is_none());
    }

    #[test]
    fn from_backend_strips_hop_by_hop_headers_except_on_a_switch() {
        let mut resp = Response::builder()
            .header("connection", "close, x-internal")
            .header("x-internal", "1")
            .header("keep-alive", "timeout=5")
            .header("content-type", "text/plain")
            .body(())
            .unwrap();
        from_backend(&mut resp);
        let names: Vec<_> = resp.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type"]);

        let mut switch = Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        from_backend(&mut switch);
        assert_eq!(switch.headers().len(), 2);
    }

    #[test]
    fn an_upgrade_needs_http1_the_connection_token_and_an_upgrade_header() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        assert!(is_upgrade(&request("/", &ws)));
        assert!(!is_upgrade(&request("/", &[("upgrade", "websocket")])));
        assert!(!is_upgrade(&request("/", &[("connection", "upgrade")])));
        let mut h2 = request("/", &ws);
        *h2.version_mut() = Version::HTTP_2;
        assert!(!is_upgrade(&h2));
    }

    #[test]
    fn an_h2c_upgrade_is_not_passed_on() {
        let h2c = [
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ];
        let mut req = request("/", &h2c);
        assert!(!is_upgrade(&req));
        let mixed = [("connection", "upgrade"), ("upgrade", "websocket, H2C")];
        assert!(!is_upgrade(&request("/", &mixed)));
        to_backend(
            &mut req,
            &conn("192.0.2.1:5000", false),
            RequestId::for_test(1),
            &[],
        );
        for gone in ["upgrade", "connection", "http2-settings"] {
            assert!(!req.headers().contains_key(gone), "{gone} was passed on");
        }
        // Without Connection naming it, too.
        let mut req = request("/", &[("upgrade", "h2c"), ("http2-settings", "AAMA")]);
        to_backend(
            &mut req,
            &conn("192.0.2.1:5000", false),
            RequestId::for_test(1),
            &[],
        );
        assert!(!req.headers().contains_key("http2-settings"));
        assert!(!req.headers().contains_key("upgrade"));
    }
}

//! HTTP pieces several modules share: the response body type and a body that holds
//! something to its end ([`held_until_end`]), the one normal form of
//! a request path ([`path`]), route prefix matching, and host-name patterns with the
//! one table that looks them up.
//!
//! # Host names: one rule
//! Sites, SNI certificate selection, the configuration's checks and apps' outbound
//! allow-lists all match a host against configured names the same way:
//! - ASCII case does not matter, and one trailing dot (the absolute DNS form,
//!   `example.com.`) is ignored, in the pattern and in the host alike;
//! - `*.example.com` covers exactly **one** label in front of `example.com`:
//!   `a.example.com`, but neither `example.com` nor `a.b.example.com`. That is how
//!   browsers match a wildcard certificate (RFC 6125 §6.4.3) and how HAProxy picks a
//!   certificate by SNI, so a site, its certificate and an allow-list entry written
//!   alike cover the same names. (nginx's `server_name *.x` covers any depth; wharf
//!   does not follow it, since a site would then answer names its certificate cannot.)
//! - an exact name wins over a wildcard (`api.example.com` over `*.example.com`).

pub mod path;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of every response wharf sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What a response body carries to its end: told of each data frame, and dropped when
/// the body ends (its last frame, or an error) or is dropped unread (a HEAD, a client
/// gone), whichever comes first.
pub trait HeldToEnd: Send + Unpin + 'static {
    fn data(&mut self, _bytes: usize) {}
}

/// `body`, holding `held` until its end.
pub fn held_until_end(body: Body, held: impl HeldToEnd) -> Body {
    use http_body_util::BodyExt;
    Holding {
        body,
        held: Some(held),
    }
    .boxed_unsync()
}

struct Holding<H> {
    body: Body,
    held: Option<H>,
}

impl<H: HeldToEnd> hyper::body::Body for Holding<H> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(std::pin::Pin::new(&mut this.body).poll_frame(cx));
        match (&frame, &mut this.held) {
            (Some(Ok(frame)), Some(held)) => {
                if let Some(data) = frame.data_ref() {
                    held.data(data.len());
                }
            }
            (Some(Ok(_)), None) => {}
            _ => this.held = None,
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// True if `path` matches `prefix` on a segment boundary: `/hello` matches `/hello`,
/// `/hello/x` and `/hello?q`, but not `/helloworld`.
pub fn route_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A configured host name: an exact host, or `*.parent` for any one label under
/// `parent` (see the module doc). Held in lower case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// A DNS name, or an IP address (`127.0.0.1`, `[::1]`).
    Exact(String),
    /// The parent of a `*.parent` pattern.
    Wildcard(String),
}

/// Why a string is not a [`HostPattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host name or a `*.parent` wildcard")]
pub struct NotAHostPattern(String);

impl FromStr for HostPattern {
    type Err = NotAHostPattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let host = normalize(s);
        let pattern = match host.strip_prefix("*.") {
            Some(parent) if is_dns_name(parent) => Self::Wildcard(parent.to_string()),
            None if is_dns_name(&host) || is_ipv6_literal(&host) => Self::Exact(host.into_owned()),
            _ => return Err(NotAHostPattern(s.to_string())),
        };
        Ok(pattern)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(host) => f.write_str(host),
            Self::Wildcard(parent) => write!(f, "*.{parent}"),
        }
    }
}

impl HostPattern {
    /// Whether `host` (any case, a trailing dot allowed) is one this pattern covers.
    pub fn matches(&self, host: &str) -> bool {
        let host = normalize(host);
        match self {
            Self::Exact(name) => *host == **name,
            Self::Wildcard(parent) => parent_of(&host) == Some(parent.as_str()),
        }
    }
}

/// Values by host pattern, looked up by host: an exact entry first, then the
/// wildcard of the host's parent.
#[derive(Debug, Clone)]
pub struct HostTable<T> {
    exact: HashMap<String, T>,
    /// By the parent of `*.parent`.
    wildcard: HashMap<String, T>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> HostTable<T> {
    /// Adds `pattern`; returns the value it had already, which the caller reports as a
    /// host listed twice.
    pub fn insert(&mut self, pattern: HostPattern, value: T) -> Option<T> {
        match pattern {
            HostPattern::Exact(host) => self.exact.insert(host, value),
            HostPattern::Wildcard(parent) => self.wildcard.insert(parent, value),
        }
    }

    /// The value for `host` (any case, a trailing dot allowed).
    pub fn get(&self, host: &str) -> Option<&T> {
        let host = normalize(host);
        self.exact
            .get(host.as_ref())
            .or_else(|| self.wildcard.get(parent_of(&host)?))
    }
}

/// Lower case without the trailing dot, borrowed when it already is.
fn normalize(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    match host.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(host.to_ascii_lowercase()),
        false => Cow::Borrowed(host),
    }
}

/// What a one-label wildcard would have to name for `host` to match it.
fn parent_of(host: &str) -> Option<&str> {
    let (label, parent) = host.split_once('.')?;
    (!label.is_empty()).then_some(parent)
}

/// Labels of letters, digits, `-` and `_` (service names such as `db_1`), none empty or
/// starting or ending with `-`; at most 253 bytes, as DNS allows.
fn is_dns_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// `[::1]`: the form an IPv6 address takes in a URL and a Host header.
fn is_ipv6_literal(host: &str) -> bool {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .is_some_and(|addr| addr.parse::<std::net::Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(route_matches("/hello", "/hello"));
        assert!(route_matches("/hello", "/hello/world"));
        assert!(!route_matches("/hello", "/helloworld"));
        assert!(route_matches("/api/", "/api"));
        assert!(route_matches("/", "/anything"));
    }

    fn pattern(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn a_wildcard_covers_one_label_and_case_and_a_trailing_dot_do_not_matter() {
        let cases = [
            ("example.com", "example.com", true),
            ("example.com", "EXAMPLE.Com.", true),
            ("Example.COM.", "example.com", true),
            ("example.com", "www.example.com", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "A.Example.com.", true),
            ("*.Example.com.", "a.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "evil-example.com", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("[::1]", "[::1]", true),
        ];
        for (p, host, expected) in cases {
            assert_eq!(pattern(p).matches(host), expected, "{p} against {host}");
        }
    }

    #[test]
    fn a_table_prefers_the_exact_host_then_the_wildcard_of_its_parent() {
        let mut table = HostTable::default();
        assert_eq!(table.insert(pattern("*.apps.test"), "apps"), None);
        assert_eq!(table.insert(pattern("api.apps.test"), "api"), None);
        assert_eq!(
            table.insert(pattern("API.apps.test."), "again"),
            Some("api")
        );
        table.insert(pattern("api.apps.test"), "api");
        for (host, expected) in [
            ("api.apps.test", Some("api")),
            ("Api.Apps.Test.", Some("api")),
            ("shop.apps.test", Some("apps")),
            ("shop.apps.test.", Some("apps")),
            ("a.b.apps.test", None),
            ("apps.test", None),
            ("other.test", None),
        ] {
            assert_eq!(table.get(host).copied(), expected, "{host}");
        }
    }

    #[test]
    fn only_names_addresses_and_one_leading_wildcard_label_are_patterns() {
        for bad in [
            "",
            ".",
            "*",
            "*.",
            "a.*.test",
            "**.test",
            "*a.test",
            "a..test",
            "-a.test",
            "bad_host!",
            "a b",
            "[::1",
            "[nope]",
            "host:80",
            "a.test..",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?}");
        }
        assert_eq!(pattern("*.Test."), HostPattern::Wildcard("test".into()));
        assert_eq!(pattern("db_1"), HostPattern::Exact("db_1".into()));
        assert_eq!(pattern("*.Example.com").to_string(), "*.example.com");
    }
}

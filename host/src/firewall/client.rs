//! The client's address: the peer's, unless the peer is a proxy wharf trusts, which
//! names the client in its PROXY protocol header or in `X-Forwarded-For`.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::Arc;

/// `[firewall] trusted_proxies`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trusted(Arc<[IpNet]>);

impl Trusted {
    pub fn new(nets: &[IpNet]) -> Self {
        Self(nets.into())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }
}

/// The client behind `peer` (the connection's address, after any PROXY protocol
/// header). From a trusted peer it is the last hop of `X-Forwarded-For` that is not
/// itself a trusted proxy: hops further left were written by whoever sent them, and
/// only the ones trusted proxies appended can be believed.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &Trusted) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    // Several X-Forwarded-For lines are one list, in order (RFC 9110 §5.3).
    let hops = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|line| line.to_str().unwrap_or("").rsplit(','));
    let mut client = peer;
    for hop in hops {
        // A hop that is not an address (a typo, `unknown`, an obfuscated name) ends what
        // can be believed: the last address before it stands.
        let Some(ip) = parse_hop(hop.trim()) else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// An address as proxies write it in `X-Forwarded-For`: `192.0.2.1`, `2001:db8::1`,
/// or with a port, `192.0.2.1:4711` and `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| addr.ip().to_canonical())
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";

#[cfg(test)]
mod tests {
    use super::*;

    fn client(peer: &str, xff: &[&str]) -> String {
        let trusted = Trusted::new(&["10.0.0.0/8".parse().unwrap()]);
        let mut headers = HeaderMap::new();
        for line in xff {
            headers.append(X_FORWARDED_FOR, line.parse().unwrap());
        }
        client_ip(peer.parse().unwrap(), &headers, &trusted).to_string()
    }

    #[test]
    fn the_last_untrusted_hop_is_the_client() {
        // From anyone untrusted the header is ignored.
        assert_eq!(client("192.0.2.9", &["203.0.113.1"]), "192.0.2.9");
        // A trusted proxy names its client.
        assert_eq!(client("10.0.0.1", &["203.0.113.1"]), "203.0.113.1");
        // Hops left of the first untrusted one were written by the client: ignored.
        assert_eq!(client("10.0.0.1", &["1.1.1.1, 203.0.113.1"]), "203.0.113.1");
        // Trusted hops are walked past, across lines.
        assert_eq!(
            client("10.0.0.1", &["198.51.100.7", "203.0.113.1, 10.0.0.2"]),
            "203.0.113.1"
        );
        assert_eq!(
            client("10.0.0.1", &["198.51.100.7, 10.0.0.3", "10.0.0.2"]),
            "198.51.100.7"
        );
        // Ports and brackets are allowed, IPv4-mapped addresses are IPv4.
        assert_eq!(client("10.0.0.1", &["[2001:db8::1]:4711"]), "2001:db8::1");
        assert_eq!(client("10.0.0.1", &["203.0.113.1:80"]), "203.0.113.1");
        assert_eq!(client("::ffff:10.0.0.1", &["203.0.113.1"]), "203.0.113.1");
        // Garbage stops the walk at the last address believed.
        assert_eq!(client("10.0.0.1", &["203.0.113.1, unknown"]), "10.0.0.1");
        assert_eq!(
            client("10.0.0.1", &["203.0.113.1, unknown, 10.0.0.2"]),
            "10.0.0.2"
        );
        // All trusted: the leftmost is the furthest known.
        assert_eq!(client("10.0.0.1", &["10.0.0.5, 10.0.0.2"]), "10.0.0.5");
        // No header: the peer.
        assert_eq!(client("10.0.0.1", &[]), "10.0.0.1");
    }
}

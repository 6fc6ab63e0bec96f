//! The client address walk over `X-Forwarded-For`. The first byte picks the peer
//! (trusted or not); the rest, split on newlines, are the header's lines.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use wharf::firewall::Trusted;
use wharf::firewall::client::client_ip;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let peer = match pick % 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, pick)),
        1 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, pick)),
        _ => "::ffff:10.0.0.1".parse().unwrap(),
    };
    let trusted = Trusted::new(&["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]);
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", value);
        }
    }
    let client = client_ip(peer, &headers, &trusted);
    if !trusted.contains(peer) {
        assert_eq!(client, peer, "an untrusted peer's header was believed");
    }
});

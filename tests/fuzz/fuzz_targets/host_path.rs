//! Host patterns, request paths and route prefixes. The input's first line is a host
//! pattern, its second a request's Host, the rest a request path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::http::path::{normalize, route_problem};
use wharf::http::{HostPattern, HostTable, route_matches};

fuzz_target!(|text: &str| {
    let mut lines = text.splitn(3, '\n');
    let (pattern, host, path) = (
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
        lines.next().unwrap_or(""),
    );

    if let Ok(parsed) = pattern.parse::<HostPattern>() {
        // What a pattern prints is how it is written in wharf.toml: it must read back.
        assert_eq!(parsed.to_string().parse::<HostPattern>().as_ref(), Ok(&parsed));
        let matched = parsed.matches(host);
        let mut table = HostTable::default();
        table.insert(parsed, ());
        assert_eq!(table.get(host).is_some(), matched, "table and pattern disagree");
    }

    if let Ok(normal) = normalize(path) {
        // The normal form is a fixed point, and a route written in it is accepted.
        assert_eq!(normalize(&normal).as_deref(), Ok(&*normal), "normalize is not idempotent");
        if route_problem(&normal).is_none() {
            assert!(route_matches(&normal, &normal), "a route must match its own path");
        }
    }
    let _ = route_problem(path);
    let _ = route_matches(host, path);
});

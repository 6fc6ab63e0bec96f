//! `NAME.toml`, the optional manifest that sits beside `NAME.wasm`.

use crate::db::ResultLimits;
use crate::http::{HostPattern, NotAHostPattern};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Wall-clock budget of one request when the manifest sets none.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Memory an instance may hold, over all its linear memories, when the manifest sets none.
pub const DEFAULT_MAX_MEMORY_MB: u64 = 128;
/// Largest memory a manifest may grant: a wasm32 memory cannot address more.
pub const MAX_MEMORY_MB: u64 = 4096;

/// What an app's manifest may say. Every field is optional; unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Path prefixes the app serves. Default: `/NAME` (or `/` for `index`).
    pub routes: Option<Vec<String>>,
    /// Per-request wall-clock limit in milliseconds, enforced inside wasm.
    pub timeout_ms: Option<u64>,
    /// Memory limit of one instance in MiB.
    pub max_memory_mb: Option<u64>,
    /// Rows one database call may return. Default: `DEFAULT_MAX_ROWS`.
    pub max_result_rows: Option<u64>,
    /// Bytes of values one database call may return, in MiB; also the largest single
    /// value the app may write. Default: the instance's memory limit, which a larger
    /// result could not fit in anyway.
    pub max_result_mb: Option<u64>,
    /// Hosts the app may call with outbound HTTP: `host`, `host:port`, `*.domain` (one
    /// label, by the host rule of [`crate::http`]) or `*` (any host), optionally with a
    /// scheme (`https://api.example.com`). Empty = no outbound HTTP. The address the
    /// host resolves to is checked too: a loopback, private, link-local, shared,
    /// unspecified, multicast or broadcast address, or the node's admin or database
    /// address, is reached only through a rule that names it: its IP literal
    /// (`http://10.0.0.7:8080`), or `localhost` for loopback other than the node's
    /// own addresses. See `runtime::outbound`.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<OutboundRule>,
    /// Serve requests from a pool of reused instances instead of a fresh one per request.
    /// Faster, but state leaks between requests; some toolchains' components cannot
    /// handle a second request, so this is opt-in.
    #[serde(default)]
    pub reuse_instances: bool,
    /// Grants the app the node's database (`wharf:platform/sql`): the MySQL cluster
    /// of `[database]` in wharf.toml, or else its own SQLite file.
    #[serde(default)]
    pub database: bool,
    /// Variables the app reads from its environment (`wharf_sdk::var`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

impl Manifest {
    /// Parses and validates a manifest's text; every error names the key.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let manifest: Manifest = crate::config::from_toml(text)?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (i, route) in self.routes.iter().flatten().enumerate() {
            if let Some(why) = crate::http::path::route_problem(route) {
                anyhow::bail!("routes[{i}]: {why}");
            }
        }
        if let Some(ms) = self.timeout_ms {
            anyhow::ensure!(ms > 0, "timeout_ms: must be at least 1");
        }
        if let Some(mb) = self.max_memory_mb {
            anyhow::ensure!(
                (1..=MAX_MEMORY_MB).contains(&mb),
                "max_memory_mb: {mb} is outside 1..={MAX_MEMORY_MB}"
            );
        }
        if let Some(rows) = self.max_result_rows {
            anyhow::ensure!(rows > 0, "max_result_rows: must be at least 1");
        }
        if let Some(mb) = self.max_result_mb {
            anyhow::ensure!(
                (1..=MAX_MEMORY_MB).contains(&mb),
                "max_result_mb: {mb} is outside 1..={MAX_MEMORY_MB}"
            );
        }
        for name in self.variables.keys() {
            anyhow::ensure!(
                !name.is_empty() && !name.contains(['=', '\0']),
                "variables: {name:?} is not a valid variable name"
            );
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
    }

    pub fn max_memory_bytes(&self) -> usize {
        (self.max_memory_mb.unwrap_or(DEFAULT_MAX_MEMORY_MB) << 20) as usize
    }

    /// What one database call may return.
    pub fn result_limits(&self) -> ResultLimits {
        let defaults = ResultLimits::for_memory(self.max_memory_bytes());
        ResultLimits {
            max_rows: self
                .max_result_rows
                .map_or(defaults.max_rows, |rows| rows as usize),
            max_bytes: self
                .max_result_mb
                .map_or(defaults.max_bytes, |mb| (mb << 20) as usize),
        }
    }

    pub fn outbound_rules(&self) -> Vec<OutboundRule> {
        self.allowed_outbound_hosts.clone()
    }
}

/// One entry of `allowed_outbound_hosts`, read from its string form.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct OutboundRule {
    scheme: Option<String>,
    host: OutboundHost,
    port: Option<u16>,
    /// The internal addresses the rule names explicitly, if any.
    names: Option<Named>,
}

#[derive(Debug, Clone, PartialEq)]
enum Named {
    /// An IP-literal rule: that address.
    Ip(IpAddr),
    /// `localhost`: loopback.
    Loopback,
}

#[derive(Debug, Clone, PartialEq)]
enum OutboundHost {
    /// `*`: any host at all.
    Any,
    Pattern(HostPattern),
}

impl TryFrom<String> for OutboundRule {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).map_err(|why| format!("{s:?}: {why}"))
    }
}

impl OutboundRule {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (Some(scheme.to_string()), rest),
            Some((other, _)) => return Err(format!("unsupported scheme {other:?}")),
            None => (None, s),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err("expected a host, not a URL with a path".into());
        }
        // `[::1]` ends in `]`; any other colon comes before a port.
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !rest.ends_with(']') => {
                let port = p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?;
                (h, Some(port))
            }
            _ => (rest, None),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let names = match bare.parse::<IpAddr>() {
            Ok(ip) => Some(Named::Ip(ip.to_canonical())),
            Err(_) if bare.eq_ignore_ascii_case("localhost") => Some(Named::Loopback),
            Err(_) => None,
        };
        let host = match host {
            "*" => OutboundHost::Any,
            host => {
                OutboundHost::Pattern(host.parse().map_err(|e: NotAHostPattern| e.to_string())?)
            }
        };
        Ok(Self {
            scheme,
            host,
            port,
            names,
        })
    }

    /// Whether the rule names `ip` explicitly, as a reserved address needs: its IP
    /// literal, or `localhost` when `loopback` (a loopback address that is not the
    /// node's own) is what it is.
    pub fn names(&self, ip: IpAddr, loopback: bool) -> bool {
        match self.names {
            Some(Named::Ip(named)) => named == ip.to_canonical(),
            Some(Named::Loopback) => loopback,
            None => false,
        }
    }

    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host_ok = match &self.host {
            OutboundHost::Any => true,
            OutboundHost::Pattern(pattern) => pattern.matches(host),
        };
        host_ok
            && self.scheme.as_deref().is_none_or(|s| s == scheme)
            && self.port.is_none_or(|p| p == port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = toml::from_str::<Manifest>("rutes = ['/x']").unwrap_err();
        assert!(err.to_string().contains("rutes"), "{err}");
    }

    #[test]
    fn result_limits_default_to_the_memory_cap_and_bad_values_name_their_key() {
        let limits = Manifest::parse("max_memory_mb = 64")
            .unwrap()
            .result_limits();
        assert_eq!(limits, ResultLimits::for_memory(64 << 20));
        let limits = Manifest::parse("max_result_rows = 10\nmax_result_mb = 2")
            .unwrap()
            .result_limits();
        assert_eq!(
            limits,
            ResultLimits {
                max_rows: 10,
                max_bytes: 2 << 20
            }
        );
        for (text, key) in [
            ("max_result_rows = 0", "max_result_rows"),
            ("max_result_mb = 0", "max_result_mb"),
            ("max_result_mb = 5000", "max_result_mb"),
        ] {
            let err = Manifest::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn a_route_not_in_the_form_requests_are_matched_in_is_refused_with_that_form() {
        let err = Manifest::parse("routes = ['/api', '/caf\u{e9}']")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"routes[1]: "/café" must be written "/caf%C3%A9", the form requests are matched in"#
        );
        assert!(Manifest::parse("routes = ['/caf%C3%A9', '/@x', '/api/']").is_ok());
    }

    #[test]
    fn a_bad_value_is_named_by_its_key_path() {
        let err = |text: &str| Manifest::parse(text).unwrap_err().to_string();
        assert_eq!(
            err("timeout_ms = '5s'"),
            "timeout_ms: invalid type: string \"5s\", expected u64 (line 1)"
        );
        assert_eq!(
            err("allowed_outbound_hosts = ['https://ok.example', 'ftp://x']"),
            "allowed_outbound_hosts[1]: \"ftp://x\": unsupported scheme \"ftp\" (line 1)"
        );
    }

    #[test]
    fn outbound_rules_match() {
        let r = OutboundRule::parse("*.example.com").unwrap();
        assert!(r.allows("https", "api.example.com", 443));
        assert!(!r.allows("https", "example.com", 443));
        assert!(!r.allows("https", "evil-example.com", 443));
        // One label, as everywhere a host pattern is matched.
        assert!(!r.allows("https", "a.b.example.com", 443));
        assert!(r.allows("https", "API.example.com.", 443));
        let r = OutboundRule::parse("*").unwrap();
        assert!(r.allows("http", "anything.at.all", 80));
        let r = OutboundRule::parse("http://[::1]:8080").unwrap();
        assert!(r.allows("http", "[::1]", 8080));
        assert!(OutboundRule::parse("[::1]").is_ok());
        let r = OutboundRule::parse("https://api.example.com:8443").unwrap();
        assert!(r.allows("https", "API.example.com", 8443));
        assert!(!r.allows("http", "api.example.com", 8443));
        assert!(!r.allows("https", "api.example.com", 443));
        assert!(OutboundRule::parse("ftp://x").is_err());
        assert!(OutboundRule::parse("http://x/path").is_err());
        assert!(OutboundRule::parse("x:99999").is_err());
        assert!(OutboundRule::parse("bad_host!").is_err());
        assert!(OutboundRule::parse("a.*.test").is_err());
    }

    #[test]
    fn only_an_ip_literal_or_localhost_names_an_internal_address() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let names = |rule: &str, ip: IpAddr, loopback| {
            OutboundRule::parse(rule).unwrap().names(ip, loopback)
        };
        assert!(names("http://127.0.0.1:8080", loopback, false));
        assert!(names("[::ffff:127.0.0.1]", loopback, false));
        assert!(!names("127.0.0.2", loopback, true));
        assert!(names("localhost:8080", loopback, true));
        assert!(names("LOCALHOST", "::1".parse().unwrap(), true));
        // The node's own loopback addresses need their literal.
        assert!(!names("localhost", loopback, false));
        for rule in ["*", "*.localhost", "internal.example.com"] {
            assert!(!names(rule, loopback, true), "{rule}");
        }
    }
}

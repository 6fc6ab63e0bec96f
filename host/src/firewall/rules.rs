//! `allow` and `deny` lists of networks, as one listener or one site applies them.

use crate::config::IpRules;
use ipnet::IpNet;
use std::net::IpAddr;

/// Networks let in and kept out. Deny wins; with no allow list, anyone not denied is
/// let in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Rules {
    pub fn new(rules: &IpRules) -> Self {
        Self {
            allow: rules.allow.clone(),
            deny: rules.deny.clone(),
        }
    }

    /// `inner`'s rules on top of `outer`'s (a listener's on `[firewall]`'s): denied by
    /// either is denied; with allow lists, allowed by either is allowed.
    pub fn layered(outer: &IpRules, inner: &IpRules) -> Self {
        let joined = |a: &[IpNet], b: &[IpNet]| a.iter().chain(b).copied().collect();
        Self {
            allow: joined(&outer.allow, &inner.allow),
            deny: joined(&outer.deny, &inner.deny),
        }
    }

    /// No rules: everyone is let in, and there is nothing to check.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    pub fn admits(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d; rules name it
        // as a.b.c.d.
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

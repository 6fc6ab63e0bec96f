//! The firewall: who may connect and how much they may ask. Connection rules and caps
//! are checked by the accept loops ([`crate::net`]) before any TLS work; the client
//! address, site rules and rate limits by the gateway once a request's head is read.
//!
//! Every step after the accept uses one client address: the socket's peer, or, from a
//! trusted proxy, the address its PROXY protocol header or `X-Forwarded-For` names
//! ([`client`]).

pub mod caps;
pub mod client;
pub mod limiter;
pub mod rules;

pub use caps::{Admitted, ConnectionCaps};
pub use client::Trusted;
pub use limiter::RateLimiter;
pub use rules::Rules;

use crate::config::FirewallConfig;
use std::sync::Arc;

/// What the gateway checks each request against, from `[firewall]`: the proxies it
/// believes, and the rate limit across all sites. A reload builds a new one.
#[derive(Debug)]
pub struct Firewall {
    pub trusted: Trusted,
    /// `[firewall] rate_limit`, per client address.
    pub rate: Option<Arc<RateLimiter>>,
}

impl Firewall {
    /// The firewall of `config`. A limiter whose limit did not change is taken over
    /// from `previous`, so a reload does not hand every client a fresh burst.
    pub fn build(config: &FirewallConfig, previous: Option<&Firewall>) -> Self {
        let previous = previous.and_then(|p| p.rate.as_ref());
        let rate = config
            .rate_limit
            .map(|limit| RateLimiter::reuse(previous, limit, config.max_tracked_clients));
        Self {
            trusted: Trusted::new(&config.trusted_proxies),
            rate,
        }
    }
}

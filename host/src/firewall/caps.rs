//! Open connections, across the public listeners and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// No cap.
const NONE: u32 = u32::MAX;

/// Counts open connections against `[firewall] max_connections` and
/// `max_connections_per_ip`. One lives as long as the node: a reload changes the caps,
/// and connections open then stay counted.
///
/// The per-address table holds only addresses with a connection open, so its size is
/// bounded by the open connections, however many addresses come and go.
#[derive(Debug)]
pub struct ConnectionCaps {
    global: AtomicU32,
    per_ip: AtomicU32,
    open: AtomicUsize,
    by_client: Mutex<HashMap<IpAddr, u32>>,
}

impl ConnectionCaps {
    pub fn new(global: Option<u32>, per_ip: Option<u32>) -> Arc<Self> {
        let caps = Arc::new(Self {
            global: AtomicU32::new(NONE),
            per_ip: AtomicU32::new(NONE),
            open: AtomicUsize::new(0),
            by_client: Mutex::default(),
        });
        caps.set_caps(global, per_ip);
        caps
    }

    /// New caps, for connections accepted from now on.
    pub fn set_caps(&self, global: Option<u32>, per_ip: Option<u32>) {
        self.global.store(global.unwrap_or(NONE), Ordering::Relaxed);
        self.per_ip.store(per_ip.unwrap_or(NONE), Ordering::Relaxed);
    }

    /// A new connection counted against the global cap, or `None` when it would pass
    /// it and must be closed at once. Taken as soon as the connection is accepted, before
    /// its client is known (a trusted proxy's PROXY header may still be on its way), and
    /// given to the client with [`Admitted::attribute`].
    pub fn enter(self: &Arc<Self>) -> Option<Admitted> {
        let global = self.global.load(Ordering::Relaxed) as usize;
        if self.open.fetch_add(1, Ordering::Relaxed) >= global {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted {
            caps: self.clone(),
            client: None,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Client addresses with a connection counted against the per-address cap.
    pub fn clients(&self) -> usize {
        self.by_client.lock().expect("caps lock").len()
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub struct Admitted {
    caps: Arc<ConnectionCaps>,
    /// Counted in the per-address table (a per-address cap was set when it came).
    client: Option<IpAddr>,
}

impl Admitted {
    /// Counts the connection against `client`'s cap too. `false` when that would pass
    /// the cap: the connection must be closed at once (dropping this frees its place).
    pub fn attribute(&mut self, client: IpAddr) -> bool {
        let per_ip = self.caps.per_ip.load(Ordering::Relaxed);
        if per_ip == NONE || self.client.is_some() {
            return true;
        }
        let client = client.to_canonical();
        let mut by_client = self.caps.by_client.lock().expect("caps lock");
        let open = by_client.entry(client).or_insert(0);
        if *open >= per_ip {
            if *open == 0 {
                by_client.remove(&client);
            }
            return false;
        }
        *open += 1;
        self.client = Some(client);
        true
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.caps.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(client) = self.client {
            let mut by_client = self.caps.by_client.lock().expect("caps lock");
            if let Some(open) = by_client.get_mut(&client) {
                *open -= 1;
                if *open == 0 {
                    by_client.remove(&client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn admit(caps: &Arc<ConnectionCaps>, client: IpAddr) -> Option<Admitted> {
        let mut admitted = caps.enter()?;
        admitted.attribute(client).then_some(admitted)
    }

    #[test]
    fn a_connection_holds_its_global_place_before_its_client_is_known() {
        let caps = ConnectionCaps::new(Some(2), Some(1));
        let waiting = caps.enter().unwrap();
        let _a = admit(&caps, A).unwrap();
        assert!(caps.enter().is_none(), "two open: the global cap is full");
        drop(waiting);
        assert!(admit(&caps, A).is_none(), "A is at its own cap");
        assert_eq!(caps.open(), 1, "a refused client gives its place back");
        let _b = admit(&caps, B).unwrap();
        assert_eq!((caps.open(), caps.clients()), (2, 2));
    }

    #[test]
    fn closing_frees_both_places_and_forgets_the_address() {
        let caps = ConnectionCaps::new(None, Some(1));
        let a = admit(&caps, A).unwrap();
        // An IPv4-mapped IPv6 address is the same client.
        assert!(admit(&caps, "::ffff:192.0.2.1".parse().unwrap()).is_none());
        drop(a);
        assert_eq!((caps.open(), caps.clients()), (0, 0));
        assert!(admit(&caps, A).is_some());
    }

    #[test]
    fn without_a_per_address_cap_no_address_is_kept() {
        let caps = ConnectionCaps::new(Some(10), None);
        let open: Vec<_> = (0..5).map(|_| admit(&caps, A).unwrap()).collect();
        assert_eq!((caps.open(), caps.clients()), (5, 0));
        drop(open);
        assert_eq!(caps.open(), 0);
    }
}

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

    /// The connection from `client` counted, or `None` when it would pass a cap and
    /// must be closed at once.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Admitted> {
        let global = self.global.load(Ordering::Relaxed) as usize;
        if self.open.fetch_add(1, Ordering::Relaxed) >= global {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let per_ip = self.per_ip.load(Ordering::Relaxed);
        let client = client.to_canonical();
        if per_ip != NONE {
            let mut by_client = self.by_client.lock().expect("caps lock");
            let open = by_client.entry(client).or_insert(0);
            if *open >= per_ip {
                if *open == 0 {
                    by_client.remove(&client);
                }
                drop(by_client);
                self.open.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            *open += 1;
        }
        Some(Admitted {
            caps: self.clone(),
            client,
            counted: per_ip != NONE,
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
    client: IpAddr,
    /// Counted in the per-address table (a per-address cap was set when it came).
    counted: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.caps.open.fetch_sub(1, Ordering::Relaxed);
        if self.counted {
            let mut by_client = self.caps.by_client.lock().expect("caps lock");
            if let Some(open) = by_client.get_mut(&self.client) {
                *open -= 1;
                if *open == 0 {
                    by_client.remove(&self.client);
                }
            }
        }
    }
}

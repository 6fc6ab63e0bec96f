//! The signal that asks a listener's connections to finish, and the count of those
//! still open. hyper-util's `GracefulShutdown` only watches hyper's own connection types
//! (its trait is sealed), while a connection here also shuts itself down for its own
//! reasons (idle, request cap, glitches), so it takes the signal itself.

use tokio::sync::watch;

pub struct Drain {
    /// `true` once the connections are asked to finish.
    tx: watch::Sender<bool>,
}

/// One connection's end of a [`Drain`]; while it lives the connection is counted.
pub struct Watcher {
    rx: watch::Receiver<bool>,
}

impl Drain {
    pub fn new() -> Self {
        Self {
            tx: watch::channel(false).0,
        }
    }

    pub fn watcher(&self) -> Watcher {
        Watcher {
            rx: self.tx.subscribe(),
        }
    }

    /// The connections still open.
    pub fn count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Asks every connection to finish. A watcher made after this sees it too.
    pub fn signal(&self) {
        self.tx.send_replace(true);
    }

    /// Completes once the last connection has ended.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Signals every connection, then waits for the last one to end.
    pub async fn shutdown(&self) {
        self.signal();
        self.closed().await
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Watcher {
    /// Resolves once the listener drains (or is gone).
    pub async fn draining(&mut self) {
        let _ = self.rx.wait_for(|asked| *asked).await;
    }
}

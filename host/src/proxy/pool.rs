//! Every pool of the node, and the one loop that forwards a request to a pool.
//! (Skeleton: the core helper fills it in; the signatures are the contract.)

use super::backend::Backend;
use crate::config::UpstreamConfig;
use crate::gateway::{Connection, GatewayError, RequestId};
use crate::http::Body;
use bytes::Bytes;
use http::{Request, Response};
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::Arc;

/// Every `[[upstream]]` of the node, by name.
#[derive(Default)]
pub struct Upstreams {
    pools: HashMap<Arc<str>, Arc<Pool>>,
}

/// An admin request about one backend (for deploys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// No new requests; those in flight finish.
    Drain,
    /// Back in rotation (through slow start).
    Enable,
}

impl Upstreams {
    /// The pools `configs` describe. A backend of `previous` whose address (and
    /// connection settings) a new pool names again is the same [`Backend`], with its
    /// health, latency, ejections and requests in flight. Active checks start here.
    /// `trusted` are the peers whose forwarding headers are passed on.
    pub fn build(
        configs: &[UpstreamConfig],
        trusted: &[IpNet],
        previous: Option<&Upstreams>,
    ) -> anyhow::Result<Self> {
        // Stand-in until pools are built: the empty set only.
        anyhow::ensure!(configs.is_empty(), "[[upstream]] pools are not built yet");
        let _ = (trusted, previous);
        Ok(Self::default())
    }

    /// After a swap, for the set that was replaced: its active checks stop; requests
    /// in flight (and open tunnels) to its backends finish.
    pub fn retire(&self) {}

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    /// `GET /upstreams` on the admin listener: each pool, each backend's state, in
    /// flight, latency and ejections.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({ "upstreams": [] })
    }

    /// `POST /upstreams/POOL/servers/SERVER/(drain|enable)`; `server` as written in
    /// wharf.toml or as shown by [`Upstreams::status`]. The error says what was not found.
    pub fn admin(&self, pool: &str, server: &str, action: AdminAction) -> Result<(), String> {
        let _ = (server, action);
        Err(format!("there is no upstream {pool:?}"))
    }
}

/// One `[[upstream]]`.
pub struct Pool {
    pub name: Arc<str>,
    backends: Vec<Arc<Backend>>,
}

impl Pool {
    /// Sends `req` to a backend and returns its answer: picks among the eligible
    /// backends, retries when safe and budgeted, records latency, failures and
    /// in-flight counts, and passes upgrades (WebSocket) through.
    pub async fn forward<B>(
        &self,
        req: Request<B>,
        conn: &Connection,
        id: RequestId,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        let _ = (req, conn, id, &self.backends);
        todo!()
    }
}

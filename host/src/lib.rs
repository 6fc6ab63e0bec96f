//! wharf: a self-hosted WebAssembly web platform in one binary.
//!
//! The request path runs top to bottom through these modules: [`net`] accepts
//! connections and speaks HTTP, [`gateway`] checks and routes each request and maps
//! errors to statuses, [`runtime`] runs the app's component, which reaches [`db`] for
//! SQL, or [`proxy`] forwards it to a backend of an upstream pool. [`node`] builds,
//! runs and reloads all of them. [`http`] holds what several of them share (body
//! type, route prefixes, host patterns), [`fswatch`] the one file watcher, [`health`]
//! whether a checked node is up, [`metrics`] the node's metric families and each owner's
//! handles. [`config`] is wharf.toml; [`monitor`] is logging and the admin listener.
//! [`project`] is the developer's side: `wharf new` and `wharf build`.

pub mod acme;
pub mod cert;
pub mod config;
pub mod db;
pub mod firewall;
pub mod fswatch;
pub mod gateway;
pub mod health;
pub mod http;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod node;
pub mod project;
pub mod proxy;
pub mod runtime;

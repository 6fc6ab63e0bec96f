//! A request's record: counted in flight from when its route is known, then, when its
//! answer's last byte is gone (or the client went away), counted by status class, timed,
//! and written as one access log line.
//!
//! The line goes through `tracing` (target `access`), so it is JSON or text as the rest
//! of the log is, and the log's bounded queue applies: a log output that cannot keep
//! up costs lines (counted), never requests.

use super::RequestId;
use super::limits::Watch;
use crate::config::LogConfig;
use crate::http::{Body, HeldToEnd};
use crate::metrics::{Class, InFlight, Kind};
use crate::proxy::ServedBy;
use http::{Method, Response, StatusCode};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// `[log]` as requests are logged by it; a reload swaps it.
#[derive(Debug, Clone)]
pub struct AccessLog {
    on: bool,
    sample: f64,
}

impl AccessLog {
    pub fn new(config: &LogConfig) -> Self {
        Self {
            on: config.access,
            sample: config.access_sample,
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Whether the request answered `status` gets a line: every error, and the sampled
    /// share of the rest.
    fn logs(&self, status: StatusCode) -> bool {
        self.on && (status.is_server_error() || self.sample >= 1.0 || fastrand::f64() < self.sample)
    }
}

/// What a request's way through the gateway leaves for its record.
pub struct Trail {
    /// The handles of what is serving it (the gateway's own, until a site and then a
    /// route are found), counting it in flight.
    pub route: InFlight,
    /// Its body, for the bytes the client sent.
    pub body: Option<Watch>,
}

/// What the access log line says besides the route and the answer.
pub struct Request {
    pub id: RequestId,
    pub client: IpAddr,
    pub method: Method,
    pub host: Option<String>,
    pub path: String,
}

/// The record of a request answered `response`, which it now carries to the end of its
/// body; `request` is what its log line names, if the log is on.
pub fn record(
    response: Response<Body>,
    trail: Trail,
    started: Instant,
    log: &AccessLog,
    request: Option<Request>,
) -> Response<Body> {
    let status = response.status();
    let line = request.filter(|_| log.logs(status)).map(|request| {
        Box::new(Line {
            request,
            backend: response.extensions().get::<ServedBy>().map(|b| b.0.clone()),
            body: trail.body,
        })
    });
    let record = Record {
        route: trail.route,
        started,
        status,
        bytes_out: 0,
        line,
    };
    response.map(|body| crate::http::held_until_end(body, record))
}

struct Record {
    route: InFlight,
    started: Instant,
    status: StatusCode,
    bytes_out: u64,
    line: Option<Box<Line>>,
}

struct Line {
    request: Request,
    backend: Option<Arc<str>>,
    body: Option<Watch>,
}

impl HeldToEnd for Record {
    fn data(&mut self, bytes: usize) {
        self.bytes_out += bytes as u64;
    }
}

/// The answer is as done as it gets: its body ended, broke, or was dropped unread (a
/// HEAD, a 304, a client that went away).
impl Drop for Record {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        if let Some(line) = &self.line {
            let route = self.route.route();
            let Request {
                id,
                client,
                method,
                host,
                path,
            } = &line.request;
            let target = match route.kind {
                Kind::None => None,
                _ => Some(&*route.target),
            };
            tracing::info!(
                target: "access",
                request_id = %id,
                client = %client,
                method = %method,
                host = host.as_deref().unwrap_or(""),
                path = %path,
                status = self.status.as_u16(),
                bytes_in = line.body.as_ref().map_or(0, Watch::bytes_read),
                bytes_out = self.bytes_out,
                duration_ms = elapsed.as_secs_f64() * 1e3,
                site = %route.site,
                kind = route.kind.as_str(),
                target = target.unwrap_or(""),
                backend = line.backend.as_deref().unwrap_or(""),
            );
        }
        self.route.finish(Class::of(self.status), elapsed);
    }
}

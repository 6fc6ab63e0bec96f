//! What a guest's `Store` holds for one request: WASI contexts, its resource table,
//! the outbound HTTP policy and the resource limiter.

use super::app::App;
use super::guest_log::GuestLog;
use super::limits::InstanceLimits;
use super::manifest::OutboundRule;
use super::outbound::{self, Refusal};
use crate::db::{Database, Session};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: OutboundPolicy,
    pub(super) limits: InstanceLimits,
    stdout: GuestLog,
    stderr: GuestLog,
    /// When the current request's time is up; read by the epoch callback.
    deadline: Instant,
    variables: Arc<[(String, String)]>,
    /// The app's database, if its manifest grants one, and what this request did with it.
    db: Option<Arc<dyn Database>>,
    session: Session,
}

impl HostState {
    /// A sandbox with nothing in it but the app's variables (in `wharf:platform/config`
    /// and, for components from any toolchain, the environment): no preopened directories,
    /// no sockets, no inherited environment, stdio going to wharf's log.
    pub fn new(app: &App, request_id: Arc<str>, deadline: Instant) -> Self {
        let stdout = GuestLog::new(app.name.clone(), request_id.clone(), "stdout");
        let stderr = GuestLog::new(app.name.clone(), request_id, "stderr");
        let wasi = WasiCtx::builder()
            .envs(&app.env[..])
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound: OutboundPolicy {
                app: app.name.clone(),
                rules: app.outbound.clone(),
                node: app.node_addresses.load_full(),
            },
            limits: InstanceLimits::new(app.max_memory),
            stdout,
            stderr,
            deadline,
            variables: app.env.clone(),
            db: app.db.clone(),
            session: Session::new(deadline, app.db_limits),
        }
    }

    /// Tags log output and sets the deadline for the next request on a reused instance
    /// (a fresh one gets both in `new`).
    pub fn begin_request(&mut self, request_id: Arc<str>, deadline: Instant) {
        self.stdout.set_request_id(request_id.clone());
        self.stderr.set_request_id(request_id);
        self.deadline = deadline;
        self.session = Session::new(deadline, self.session.limits);
        self.limits.forget_refusal();
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The app's variables, for `wharf:platform/config`.
    pub fn variables(&self) -> &[(String, String)] {
        &self.variables
    }

    /// The app's database and this request's session with it, if the app has one.
    pub fn database(&mut self) -> Option<(&Arc<dyn Database>, &mut Session)> {
        Some((self.db.as_ref()?, &mut self.session))
    }

    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Outbound HTTP is refused unless the target matches the app's `allowed_outbound_hosts`,
/// and then sent only to an address that passes [`super::outbound`]'s check.
struct OutboundPolicy {
    app: Arc<str>,
    rules: Arc<[OutboundRule]>,
    /// The node's admin and database addresses.
    node: Arc<Vec<SocketAddr>>,
}

impl OutboundPolicy {
    /// The rules that let `target` through by scheme, host and port.
    fn matching<'r>(rules: &'r [OutboundRule], target: &Target) -> Vec<&'r OutboundRule> {
        let Some(host) = target.host else {
            return Vec::new();
        };
        rules
            .iter()
            .filter(|r| r.allows(target.scheme, host, target.port))
            .collect()
    }
}

/// Where an outbound request goes: what the policy checks and the log may show. The
/// path and query stay out of it: they can carry tokens and personal data.
struct Target<'a> {
    scheme: &'a str,
    host: Option<&'a str>,
    port: u16,
}

impl<'a> Target<'a> {
    fn of(uri: &'a http::Uri) -> Self {
        let scheme = uri.scheme_str().unwrap_or("https");
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        Self {
            scheme,
            host: uri.host(),
            port,
        }
    }
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = self.host.unwrap_or("(no host)");
        write!(f, "{}://{host}:{}", self.scheme, self.port)
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let target = Target::of(request.uri());
        if Self::matching(&self.rules, &target).is_empty() {
            tracing::warn!(app = %self.app, %target, "outbound request refused: host not in allowed_outbound_hosts");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let (app, rules, node) = (self.app.clone(), self.rules.clone(), self.node.clone());
        let target = target.to_string();
        Box::new(async move {
            let matched = Self::matching(&rules, &Target::of(request.uri()));
            match outbound::send(request, options, &matched, &node).await {
                Ok((response, io)) => {
                    let io: Box<dyn Future<Output = _> + Send> = Box::new(io);
                    Ok((response.map(BodyExt::boxed_unsync), io))
                }
                Err(Refusal::Reserved(addresses)) => {
                    let addresses = addresses
                        .iter()
                        .map(|(ip, why)| format!("{ip} ({why})"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    tracing::warn!(app = %app, %target, %addresses, "outbound request refused: the host resolves only to internal addresses no rule names");
                    Err(HttpError::DestinationIpProhibited)
                }
                Err(Refusal::Failed(e)) => Err(e),
            }
        })
    }

    /// Lets a guest queue several body chunks before it waits for the client, instead
    /// of one, so a response of a few chunks does not ping-pong between guest and hyper.
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        OUTGOING_BODY_BUFFER_CHUNKS
    }
}

const OUTGOING_BODY_BUFFER_CHUNKS: usize = 8;

/// Response body type the guest produces.
pub type GuestBody = HyperOutgoingBody;

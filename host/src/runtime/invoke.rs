//! Running one request through an app: a fresh instance (or, when the app opts in, a
//! reused one), a deadline enforced inside wasm, and the response handed back as soon
//! as the guest sets it while the guest keeps streaming the body.

use super::app::App;
use super::state::GuestBody;
use super::state::HostState;
use crate::http::{Body, BoxError};
use crate::metrics::TrapKind;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

/// Times an instantiation that finds the engine's pool full drops an idle instance (of
/// any app) and tries again; requests racing for the freed slots can take them first.
const MAX_POOL_FULL_RETRIES: usize = 4;

/// Why an app did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the app did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the app failed: {0}")]
    Trap(String),
    /// A trap after the instance was refused memory past its `max_memory_mb`.
    #[error("the app ran out of memory: {0}")]
    OutOfMemory(String),
    #[error("the app returned without setting a response")]
    NoResponse,
    #[error("the app answered with an error: {0}")]
    ErrorCode(String),
    #[error("too many requests in progress")]
    Overloaded,
    #[error("{0}")]
    BadRequest(String),
}

/// A live instance with its store, ready for a request.
pub struct Instance {
    store: Store<HostState>,
    proxy: Proxy,
}

impl Instance {
    /// The engine whose pool holds the instance's slot.
    pub(super) fn engine(&self) -> &wasmtime::Engine {
        self.store.engine()
    }
}

impl App {
    /// Serves `req`, which came over `scheme` (the connection's: HTTPS when TLS ended
    /// at wharf), on this app. `request_id` tags the guest's log output.
    pub async fn invoke<B>(
        self: &Arc<Self>,
        req: http::Request<B>,
        scheme: http::uri::Scheme,
        request_id: Arc<str>,
    ) -> Result<http::Response<Body>, InvokeError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let deadline = Instant::now() + self.timeout;
        let (tx, mut rx) = oneshot::channel();
        let app = self.clone();
        let mut guest: GuestRun = Box::pin(async move {
            // Dropping this future (deadline passed) drops the store and aborts the guest
            // even while it waits on host I/O, where epoch interruption cannot reach it.
            let run = app.run(req, scheme, tx, request_id.clone(), deadline);
            let result = match tokio::time::timeout_at(deadline, run).await {
                Ok(result) => result,
                Err(_) => Err(InvokeError::Timeout(app.timeout)),
            };
            app.metrics.executions.inc();
            if let Err(e) = &result {
                if let Some(kind) = e.trap_kind() {
                    app.metrics.trapped(kind);
                }
                tracing::warn!(app = %app.name, %request_id, "{e}");
            }
            result
        });
        // The guest runs inside this request's task (no spawn, no cross-task wake-up)
        // until it sets the response; after that the response body drives it.
        let (response, guest) = tokio::select! {
            biased;
            response = &mut rx => (response, Some(guest)),
            result = &mut guest => match rx.try_recv() {
                Ok(response) => (Ok(response), None),
                Err(_) => return Err(result.err().unwrap_or(InvokeError::NoResponse)),
            },
        };
        match response {
            Ok(Ok(response)) => Ok(ResponseBody::attach(response, guest).await),
            Ok(Err(code)) => Err(InvokeError::ErrorCode(format!("{code:?}"))),
            // Dropped without being set: the guest's own result says why.
            Err(_) => match guest {
                Some(guest) => Err(guest.await.err().unwrap_or(InvokeError::NoResponse)),
                None => Err(InvokeError::NoResponse),
            },
        }
    }

    async fn run<B>(
        self: &Arc<Self>,
        req: http::Request<B>,
        scheme: http::uri::Scheme,
        tx: oneshot::Sender<Result<http::Response<GuestBody>, ErrorCode>>,
        request_id: Arc<str>,
        deadline: Instant,
    ) -> Result<(), InvokeError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let deadline = deadline.into_std();
        let mut instance = match self.take_idle() {
            Some(mut instance) => {
                instance
                    .store
                    .data_mut()
                    .begin_request(request_id, deadline);
                instance
            }
            None => self.instantiate(request_id, deadline).await?,
        };
        let mut http = instance.store.data_mut().http();
        let req = http
            .new_incoming_request(wasi_scheme(&scheme), req)
            .map_err(|e| InvokeError::BadRequest(e.to_string()))?;
        let out = http
            .new_response_outparam(tx)
            .map_err(|e| InvokeError::Trap(e.to_string()))?;
        instance
            .proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut instance.store, req, out)
            .await
            .map_err(|e| match classify(e, self.timeout) {
                InvokeError::Trap(trap) if instance.store.data().limits.refused_memory() => {
                    InvokeError::OutOfMemory(trap)
                }
                other => other,
            })?;
        if self.reuse_instances {
            self.put_idle(instance);
        }
        Ok(())
    }

    /// A fresh instance. When the engine's pool is full, idle instances (of other apps:
    /// this one had none to reuse) give up their slots first.
    async fn instantiate(
        &self,
        request_id: Arc<str>,
        deadline: std::time::Instant,
    ) -> Result<Instance, InvokeError> {
        for _ in 0..MAX_POOL_FULL_RETRIES {
            match self.try_instantiate(request_id.clone(), deadline).await {
                Err(e)
                    if e.is::<wasmtime::PoolConcurrencyLimitError>()
                        && self.idle.evict_one(self.pre.engine()) => {}
                result => return result.map_err(|e| classify(e, self.timeout)),
            }
        }
        self.try_instantiate(request_id, deadline)
            .await
            .map_err(|e| classify(e, self.timeout))
    }

    async fn try_instantiate(
        &self,
        request_id: Arc<str>,
        deadline: std::time::Instant,
    ) -> wasmtime::Result<Instance> {
        let state = HostState::new(self, request_id, deadline);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limits);
        // Check the deadline on every epoch tick, and yield to the executor in between so
        // a guest spinning in a loop shares its worker thread with other requests.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if std::time::Instant::now() >= ctx.data().deadline() {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let started = std::time::Instant::now();
        let proxy = self.pre.instantiate_async(&mut store).await?;
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.instantiation.observe(elapsed);
        Ok(Instance { store, proxy })
    }

    fn take_idle(&self) -> Option<Instance> {
        if !self.reuse_instances {
            return None;
        }
        self.idle.take()
    }

    fn put_idle(&self, mut instance: Instance) {
        // A reused instance starts its next request with an empty resource table: the
        // guest has dropped everything of the last request once `handle` returned.
        let table: &mut ResourceTable = instance.store.data_mut().table();
        if !table.is_empty() {
            return;
        }
        self.idle.put(instance);
    }
}

fn wasi_scheme(scheme: &http::uri::Scheme) -> Scheme {
    match scheme.as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    }
}

impl InvokeError {
    /// How the guest's run failed, if it was the guest that failed.
    fn trap_kind(&self) -> Option<TrapKind> {
        match self {
            InvokeError::Timeout(_) => Some(TrapKind::Deadline),
            InvokeError::OutOfMemory(_) => Some(TrapKind::Memory),
            InvokeError::Trap(_) => Some(TrapKind::Trap),
            _ => None,
        }
    }
}

fn classify(e: wasmtime::Error, timeout: Duration) -> InvokeError {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => InvokeError::Timeout(timeout),
            trap => InvokeError::Trap(trap.to_string()),
        };
    }
    if e.is::<wasmtime::PoolConcurrencyLimitError>() {
        return InvokeError::Overloaded;
    }
    InvokeError::Trap(format!("{e:#}"))
}

/// The guest's run of one request, driven by whoever holds it.
type GuestRun = Pin<Box<dyn Future<Output = Result<(), InvokeError>> + Send>>;

/// The response body handed to hyper. It carries the guest's run, which writes the
/// body, and polls it whenever hyper asks for data. Dropped early (client gone, HEAD),
/// it lets the run finish on its own task.
struct ResponseBody {
    first: Option<Result<Frame<Bytes>, BoxError>>,
    body: GuestBody,
    guest: Option<GuestRun>,
}

impl ResponseBody {
    /// When the guest declared a Content-Length, reads the body's first frame before
    /// handing the response to hyper, so head and body leave in one write instead of
    /// two (guests set the response before writing its body). A response without a
    /// length is a stream, passed on at once so its head is not held back.
    async fn attach(
        response: http::Response<GuestBody>,
        guest: Option<GuestRun>,
    ) -> http::Response<Body> {
        let (parts, body) = response.into_parts();
        let mut body = ResponseBody {
            first: None,
            body,
            guest,
        };
        if parts.headers.contains_key(http::header::CONTENT_LENGTH) {
            body.first = body.frame().await;
            // A small response is usually complete by now and the guest only has to
            // return: let it, so its instance is released before the response is
            // written rather than after.
            std::future::poll_fn(|cx| {
                body.poll_guest(cx);
                Poll::Ready(())
            })
            .await;
        }
        http::Response::from_parts(parts, body.boxed_unsync())
    }

    /// Lets the guest make progress; forgets it once its run is over.
    fn poll_guest(&mut self, cx: &mut Context<'_>) {
        if let Some(guest) = self.guest.as_mut()
            && guest.as_mut().poll(cx).is_ready()
        {
            self.guest = None;
        }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(first));
        }
        self.poll_guest(cx);
        Pin::new(&mut self.body)
            .poll_frame(cx)
            .map(|f| f.map(|f| f.map_err(BoxError::from)))
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(guest) = self.guest.take() {
            tokio::spawn(guest);
        }
    }
}

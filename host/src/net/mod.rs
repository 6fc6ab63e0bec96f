//! Listeners and connections: accept loops (plain and TLS), hyper's HTTP/1.1 + HTTP/2
//! server, and graceful shutdown.

pub mod tls;

use crate::gateway::{Connection, Gateway};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A bound socket, and for HTTPS what terminates TLS on it.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time a client has to send a complete request head (slowloris protection).
    pub header_read: Duration,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake: Duration,
}

pub type Builder = auto::Builder<TokioExecutor>;

/// hyper's HTTP/1.1 + HTTP/2 server as every listener uses it, the admin one included.
pub fn http_server(header_read: Duration) -> Builder {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's timeouts do nothing unless a timer is set, for each protocol.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// The next connection on `listener`. An accept error belongs to one connection (reset
/// before accept, out of descriptors) and must not end the server; a short back-off
/// keeps EMFILE from spinning.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves every listener until `shutdown` completes. Then it stops accepting, asks
/// each open connection to finish (HTTP/2 GOAWAY; HTTP/1.1 closes after the response
/// in flight) and waits for them up to `drain`.
pub async fn serve(
    listeners: Vec<Listener>,
    gateway: Arc<Gateway>,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let builder = Arc::new(http_server(timeouts.header_read));
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept_loop(
            listener,
            builder.clone(),
            gateway.clone(),
            graceful.clone(),
            timeouts.tls_handshake,
        ));
    }
    shutdown.await;
    // Dropping the accept loops closes the listening sockets, and leaves the only
    // handle on `graceful` here.
    accepting.shutdown().await;
    let graceful = Arc::into_inner(graceful).expect("accept loops are gone");
    tracing::info!(
        connections = graceful.count(),
        "shutting down: draining connections"
    );
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline of {drain:?} passed; closing what is left");
    }
}

async fn accept_loop(
    listener: Listener,
    builder: Arc<Builder>,
    gateway: Arc<Gateway>,
    graceful: Arc<GracefulShutdown>,
    handshake_timeout: Duration,
) {
    loop {
        let (stream, peer) = accept(&listener.tcp).await;
        let _ = stream.set_nodelay(true);
        let (builder, gateway, watcher) = (builder.clone(), gateway.clone(), graceful.watcher());
        let tls = listener.tls.clone();
        // The handshake runs in the connection's own task, never in the accept loop.
        tokio::spawn(async move {
            let Some(acceptor) = tls else {
                let conn = Connection::default();
                return serve_connection(stream, conn, &builder, gateway, watcher, peer).await;
            };
            match tls::handshake(&acceptor, stream, handshake_timeout).await {
                Ok(stream) => {
                    let conn = Connection {
                        tls: true,
                        sni: tls::server_name(&stream).map(Arc::from),
                    };
                    serve_connection(stream, conn, &builder, gateway, watcher, peer).await
                }
                Err(e) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    conn: Connection,
    builder: &Builder,
    gateway: Arc<Gateway>,
    watcher: Watcher,
    peer: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let service = service_fn(move |req| {
        let (gateway, conn) = (gateway.clone(), conn.clone());
        async move { Ok::<_, std::convert::Infallible>(gateway.handle(req, &conn).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

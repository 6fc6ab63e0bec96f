//! The benchmark baselines' server loop: hyper set up the way wharf sets it up
//! (hyper-util's auto builder, a timer, keep-alive, TCP_NODELAY), so the only
//! difference the benchmarks see is what answers the request.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;

pub type Response = hyper::Response<Full<Bytes>>;

/// Serves `handler` on `addr` with `workers` runtime threads, printing
/// `listening on http://ADDR` once bound. Runs until the process ends.
pub fn serve<F, Fut>(addr: &str, workers: usize, handler: F) -> anyhow::Result<()>
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!("listening on http://{}", listener.local_addr()?);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).keep_alive(true);
            let builder = Arc::new(builder);
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let (builder, handler) = (builder.clone(), handler.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let response = handler(req);
                        async move { Ok::<_, std::convert::Infallible>(response.await) }
                    });
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}

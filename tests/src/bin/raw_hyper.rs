//! The benchmark baseline: the smallest hyper server that answers every request with
//! the same "Hello from wharf!" body, on the same runtime setup wharf uses.
//! Usage: raw-hyper [ADDR] [WORKERS]; prints `listening on http://ADDR`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let workers: usize = args.next().map(|w| w.parse()).transpose()?.unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            println!("listening on http://{}", listener.local_addr()?);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).keep_alive(true);
            let builder = Arc::new(builder);
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let builder = builder.clone();
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        let mut res = hyper::Response::new(Full::new(Bytes::from_static(
                            b"Hello from wharf!\n",
                        )));
                        res.headers_mut()
                            .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(res)
                    });
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}

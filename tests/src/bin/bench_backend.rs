//! A backend for the balancer benchmark: the raw-hyper hello server, answering each
//! request after an optional delay (the slow backend of the latency scenario), and
//! counting what it served (`GET /served`, not counted), so the benchmark can say how
//! a balancer shared the load.
//! Usage: bench-backend [ADDR] [DELAY_MS]; prints `listening on http://ADDR`.

use bytes::Bytes;
use http_body_util::Full;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let delay = Duration::from_millis(args.next().map(|d| d.parse()).transpose()?.unwrap_or(0));
    let served = Arc::new(AtomicU64::new(0));
    // One worker, as each backend shares its CPU with the load generator.
    wharf_tests::baseline::serve(&addr, 1, move |req| {
        let served = served.clone();
        async move {
            let body = if req.uri().path() == "/served" {
                Bytes::from(format!("{}\n", served.load(Ordering::Relaxed)))
            } else {
                served.fetch_add(1, Ordering::Relaxed);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Bytes::from_static(b"Hello from wharf!\n")
            };
            let mut res = hyper::Response::new(Full::new(body));
            res.headers_mut()
                .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
            res
        }
    })
}

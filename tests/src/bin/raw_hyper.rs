//! The benchmark baseline: the smallest hyper server that answers every request with
//! the same "Hello from wharf!" body, on the same runtime setup wharf uses.
//! Usage: raw-hyper [ADDR] [WORKERS]; prints `listening on http://ADDR`.

use bytes::Bytes;
use http_body_util::Full;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let workers: usize = args.next().map(|w| w.parse()).transpose()?.unwrap_or(1);
    wharf_tests::baseline::serve(&addr, workers, |_req| async {
        let mut res = hyper::Response::new(Full::new(Bytes::from_static(b"Hello from wharf!\n")));
        res.headers_mut()
            .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
        res
    })
}

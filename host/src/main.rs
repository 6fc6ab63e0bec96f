//! The `wharf` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use wharf::config::Config;
use wharf::db::Provider;
use wharf::gateway::Gateway;
use wharf::runtime::{LoadEvent, Origin, Runtime};

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Self-hosted WebAssembly web platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every wasi:http component in APPS_DIR, reloading files as they change.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory of apps: NAME.wasm serves /NAME, index.wasm serves /.
    #[arg(default_value = "apps")]
    apps_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where compiled apps are cached [default: $XDG_CACHE_HOME/wharf or ~/.cache/wharf].
    #[arg(long, env = "WHARF_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every app on start, without reading or writing the cache.
    #[arg(long)]
    no_cache: bool,
    /// Runtime worker threads [default: one per CPU].
    #[arg(long)]
    workers: Option<usize>,
    /// Node configuration (wharf.toml): `[database]` and more. Optional.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where apps' SQLite databases live when no `[database]` is configured.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => {
            wharf::monitor::init_logging(args.log_json);
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.workers {
                rt.worker_threads(n.max(1));
            }
            rt.enable_all().build()?.block_on(serve(args))
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.or_else(wharf::runtime::default_cache_dir)
    };
    anyhow::ensure!(
        args.apps_dir.is_dir(),
        "apps directory {} does not exist: create it or name another one",
        args.apps_dir.display()
    );
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let databases = Provider::new(config.database.as_ref(), args.data_dir.clone()).await?;
    let database = databases.describe();
    let runtime = Runtime::new(&args.apps_dir, cache_dir, databases)?;
    // Watch before the first load so a file written meanwhile is not missed.
    let _watch = runtime
        .watch()
        .with_context(|| format!("watching {}", args.apps_dir.display()))?;
    let events = runtime.load_all().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    print_startup(addr, &events, &database);
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
    for event in events {
        if let LoadEvent::Failed(..) = event {
            wharf::runtime::report(event);
        }
    }
    wharf::net::serve(listener, Arc::new(Gateway::new(runtime))).await;
    Ok(())
}

/// The listening line (tests and scripts read the port from it) and a table of apps.
fn print_startup(addr: SocketAddr, events: &[LoadEvent], database: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}");
    let mut rows = vec![["APP".to_string(), "URL".into(), "STATUS".into()]];
    for event in events {
        match event {
            LoadEvent::Loaded(app) => {
                let status = match app.origin {
                    Origin::Cached => "ready (cached)",
                    Origin::Compiled => "ready (compiled)",
                };
                for route in &app.routes {
                    rows.push([
                        app.name.to_string(),
                        format!("http://{addr}{route}"),
                        status.into(),
                    ]);
                }
            }
            LoadEvent::Failed(name, _) => {
                rows.push([name.clone(), "-".into(), "not loaded (see log)".into()])
            }
            LoadEvent::Removed(_) | LoadEvent::Unchanged => {}
        }
    }
    if rows.len() == 1 {
        let _ = writeln!(
            out,
            "no apps yet: drop NAME.wasm files into the apps directory"
        );
    } else {
        let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
        for [a, b, c] in rows {
            let _ = writeln!(out, "  {a:w0$}  {b:w1$}  {c}");
        }
    }
    let _ = writeln!(out, "database: {database}");
    let _ = out.flush();
}

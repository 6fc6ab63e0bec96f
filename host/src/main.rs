//! The `wharf` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wharf::config::Config;
use wharf::db::Provider;
use wharf::gateway::{Gateway, Sites};
use wharf::monitor::admin::Health;
use wharf::net::tls::CertStore;
use wharf::project::Template;
use wharf::project::dev::BuildErrors;
use wharf::runtime::{LoadEvent, Origin, PoolOptions, Runtime};

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
    /// Check a configuration file without serving: prints every problem with its key.
    Check {
        #[arg(long, default_value = "wharf.toml")]
        config: PathBuf,
    },
    /// Certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Create a guest project (a Rust crate using wharf-sdk) from a template.
    New {
        /// The project's directory; its last component names the app.
        path: PathBuf,
        #[arg(long, value_enum, default_value = "hello")]
        template: Template,
        /// The wharf-sdk crate to depend on [default: the one this wharf was built with].
        #[arg(long, env = "WHARF_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Serve the apps directory and rebuild guest projects on every save: the new
    /// version is swapped in place; a build error leaves the last good one serving.
    Dev {
        /// Guest project directories to build and watch.
        #[arg(default_value = ".")]
        projects: Vec<PathBuf>,
        /// The apps directory to build into and serve (created if missing).
        #[arg(long, default_value = "apps")]
        apps: PathBuf,
        /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where apps' SQLite databases live.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Build a guest project in release for wasm32-wasip2, check the component, and put
    /// it (with its manifest, NAME.toml) into the apps directory.
    Build {
        /// The project's directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The apps directory to put it into.
        #[arg(long, default_value = "apps")]
        apps: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write a local development CA (once) and a certificate it signs for the hosts.
    Dev {
        /// A host name the certificate is for (repeat for more).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory of apps: NAME.wasm serves /NAME, index.wasm serves / [default: [apps]
    /// dir in the config, else apps].
    apps_dir: Option<PathBuf>,
    /// A plain HTTP address to listen on, besides the config's listeners; port 0 picks a
    /// free port (printed on start) [default without listeners: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
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
    /// Where apps' SQLite databases live when no `[database]` is configured
    /// [default: [apps] data_dir in the config, else data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Check { config } => Ok(check(&config)),
        Command::Cert(CertCommand::Dev { hosts, out }) => {
            let files = wharf::cert::dev(&hosts, &out)?;
            println!("certificate: {}", files.cert.display());
            println!("key:         {}", files.key.display());
            println!("signed by:   {}", files.ca_cert.display());
            if files.ca_created {
                println!("\n{}", wharf::cert::trust_instructions(&files.ca_cert));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::New {
            path,
            template,
            sdk,
        } => {
            let Some(sdk) = sdk.or_else(wharf::project::new::bundled_sdk) else {
                anyhow::bail!(
                    "wharf-sdk is not where this wharf was built from: pass --sdk PATH \
                     (the sdk/ directory of the wharf repository)"
                );
            };
            let name = wharf::project::new_project(&path, template, &sdk)?;
            println!(
                "created {} ({} template): the app {name}, served at /{name}",
                path.display(),
                template.name()
            );
            println!(
                "  build it into an apps directory:  wharf build {} --apps apps",
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { path, apps } => {
            let rt = tokio::runtime::Runtime::new()?;
            match rt.block_on(wharf::project::build(
                &path,
                &apps,
                wharf::project::Profile::Production,
            )) {
                Ok(built) => {
                    let imports = match built.platform_imports.as_slice() {
                        [] => "none".to_string(),
                        names => names.join(", "),
                    };
                    println!(
                        "built {} -> {} ({} KiB); wharf:platform imports: {imports}",
                        built.name,
                        built.wasm.display(),
                        built.bytes.div_ceil(1024)
                    );
                    if let Some(manifest) = &built.manifest {
                        println!("manifest -> {}", manifest.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Serve(args) => {
            let _log = wharf::monitor::init_logging(args.log_json);
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.workers {
                rt.worker_threads(n.max(1));
            }
            rt.enable_all().build()?.block_on(serve(args, None))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev {
            projects,
            apps,
            listen,
            data_dir,
        } => {
            let _log = wharf::monitor::init_logging(false);
            std::fs::create_dir_all(&apps)
                .with_context(|| format!("creating {}", apps.display()))?;
            let args = ServeArgs {
                apps_dir: Some(apps),
                listen,
                cache_dir: None,
                no_cache: false,
                workers: None,
                config: None,
                data_dir,
                log_json: false,
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(args, Some(projects)))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `wharf check`: every problem on its own line, prefixed with the file; exit 1 if any.
fn check(path: &Path) -> ExitCode {
    let checked = Config::load(path).and_then(|config| {
        // The file check sees that certificate files exist; loading them checks that
        // they parse and that each key matches its certificate.
        wharf::server::certificates(&config)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
        Ok(config)
    });
    match checked {
        Ok(config) => {
            let count =
                |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            println!(
                "{}: ok ({}, {})",
                path.display(),
                count(config.listeners.len(), "listener"),
                count(config.sites.len(), "site")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `wharf serve`, and under `wharf dev` (`dev` names the projects) the same server
/// with the projects built first and rebuilt on every change.
async fn serve(args: ServeArgs, dev: Option<Vec<PathBuf>>) -> anyhow::Result<()> {
    let started = Instant::now();
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.or_else(wharf::runtime::default_cache_dir)
    };
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let apps_dir = args
        .apps_dir
        .or_else(|| config.apps.dir.clone())
        .unwrap_or_else(|| "apps".into());
    anyhow::ensure!(
        apps_dir.is_dir(),
        "apps directory {} does not exist: create it or name another one",
        apps_dir.display()
    );
    let data_dir = args
        .data_dir
        .or_else(|| config.apps.data_dir.clone())
        .unwrap_or_else(|| "data".into());
    let databases = Provider::new(config.database.as_ref(), data_dir).await?;
    let database = databases.describe();
    let pool = PoolOptions {
        max_instances: config.apps.max_instances,
        max_idle: config.apps.max_idle_instances as usize,
        idle_ttl: config.apps.idle_instance_ttl,
    };
    let runtime = Runtime::with_pool(&apps_dir, cache_dir, databases, pool)?;
    // Watch before the first load so a file written meanwhile is not missed.
    let _watch = runtime
        .watch()
        .with_context(|| format!("watching {}", apps_dir.display()))?;
    // `wharf dev`: the projects are built before the first load, so their apps are there.
    let dev = match dev {
        Some(dirs) => {
            let projects = wharf::project::dev::projects(&dirs)?;
            let errors = Arc::new(BuildErrors::default());
            wharf::project::dev::build_all(&projects, &apps_dir, &errors).await;
            Some((projects, errors))
        }
        None => None,
    };
    let events = {
        // Compiling apps the cache does not hold takes a few seconds on a first run.
        let spinner = dev
            .as_ref()
            .map(|_| wharf::project::dev::spinner("compiling apps for wasmtime".into()));
        let events = runtime.load_all().await?;
        spinner.inspect(|s| s.finish_and_clear());
        events
    };
    let certs = wharf::server::certificates(&config)?
        .map(CertStore::new)
        .transpose()?;
    let listeners = wharf::server::bind(args.listen, &config, certs.as_ref()).await?;
    let addrs: Vec<(SocketAddr, bool)> = listeners
        .iter()
        .map(|l| Ok((l.tcp.local_addr()?, l.tls.is_some())))
        .collect::<std::io::Result<_>>()?;
    let health = Arc::new(Health::default());
    let admin = match &config.admin {
        Some(admin) => {
            let listener = wharf::monitor::admin::bind(admin).await?;
            let addr = listener.local_addr()?;
            let header_read = wharf::server::timeouts(&config).header_read;
            wharf::monitor::admin::spawn(
                listener,
                admin.allow.clone(),
                health.clone(),
                header_read,
            );
            Some(addr)
        }
        None => None,
    };
    print_startup(&addrs, admin, &events, &database);
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
    for event in events {
        if let LoadEvent::Failed(..) = event {
            wharf::runtime::report(event);
        }
    }
    let https_port = addrs.iter().find(|(_, tls)| *tls).map(|(a, _)| a.port());
    let mut gateway = Gateway::new(runtime.clone(), Sites::from_config(&config, https_port)?);
    let _dev_watch = match dev {
        Some((projects, errors)) => {
            gateway = gateway.with_build_errors(errors.clone());
            let watch = wharf::project::dev::watch(projects, apps_dir.clone(), runtime, errors)?;
            Some(watch)
        }
        None => None,
    };
    let gateway = Arc::new(gateway);
    let timeouts = wharf::server::timeouts(&config);
    let drain = config.limits.drain_timeout;
    // Only a node with an admin listener reports readiness, so only its listeners wait.
    let drain_delay = config
        .admin
        .as_ref()
        .map_or(Duration::ZERO, |a| a.drain_delay);
    wharf::server::reload_on_change(
        args.config.clone(),
        gateway.clone(),
        certs,
        config,
        https_port,
    );
    let shutdown = wharf::server::shutdown_after_drain_delay(health, drain_delay);
    wharf::net::serve(listeners, gateway, timeouts, shutdown, drain).await;
    tracing::info!("stopped");
    Ok(())
}

/// The listening line (tests and scripts read the port from it) and a table of apps.
fn print_startup(
    addrs: &[(SocketAddr, bool)],
    admin: Option<SocketAddr>,
    events: &[LoadEvent],
    database: &str,
) {
    let mut out = std::io::stdout().lock();
    for (addr, tls) in addrs {
        let scheme = if *tls { "https" } else { "http" };
        let _ = writeln!(out, "listening on {scheme}://{addr}");
    }
    if let Some(admin) = admin {
        let _ = writeln!(out, "admin on http://{admin} (/healthz, /readyz)");
    }
    let addr = addrs[0].0;
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

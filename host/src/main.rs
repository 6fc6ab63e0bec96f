//! The `wharf` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use wharf::config::Config;
use wharf::node::{Node, Options};
use wharf::project::Template;

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
    /// Drain a running node and wait for it to stop: its open connections finish, it
    /// gives up a shared address (`[admin] track_file`), then it exits. Asks through
    /// the admin listener of the configuration (`POST /drain`, with its token).
    Drain {
        #[arg(long, default_value = "wharf.toml")]
        config: PathBuf,
        /// The admin listener to ask, instead of the configuration's address (one on
        /// port 0, or seen from another host).
        #[arg(long)]
        admin: Option<SocketAddr>,
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
        /// The wharf-sdk crate to depend on [default: the one inside this wharf, written
        /// out under $XDG_DATA_HOME/wharf/sdk or ~/.local/share/wharf/sdk].
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
    /// How log lines look: JSON lines, readable text, or (auto) text on a terminal and
    /// JSON otherwise.
    #[arg(long, env = "WHARF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Auto,
    Json,
    Text,
}

impl LogFormat {
    fn json(self) -> bool {
        use std::io::IsTerminal;
        match self {
            LogFormat::Auto => !std::io::stderr().is_terminal(),
            LogFormat::Json => true,
            LogFormat::Text => false,
        }
    }
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Check { config } => Ok(check(&config)),
        Command::Drain {
            config: path,
            admin: address,
        } => {
            let config = Config::load(&path)?;
            let Some(mut admin) = config.admin.clone() else {
                anyhow::bail!("{}: no [admin] listener to ask", path.display());
            };
            admin.address = address.unwrap_or(admin.address);
            // Each step is bounded: the delay, the open connections, what is left.
            let patience =
                admin.drain_delay + 2 * config.limits.drain_timeout + Duration::from_secs(5);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let answer = runtime.block_on(wharf::monitor::admin::drain(&admin, patience))?;
            println!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
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
            let sdk = match sdk {
                Some(sdk) => sdk,
                None => wharf::project::sdk::write_out(&wharf::project::sdk::data_dir()?)?,
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
            let _log = wharf::monitor::init_logging(args.log_format.json());
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.workers {
                rt.worker_threads(n.max(1));
            }
            rt.enable_all().build()?.block_on(serve(args, Vec::new()))?;
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
                log_format: LogFormat::Text,
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(serve(args, projects))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `wharf check`: every problem on its own line, prefixed with the file; exit 1 if any.
fn check(path: &Path) -> ExitCode {
    let checked = Config::load(path).and_then(|config| {
        // The file check sees that certificate files exist; loading them checks that
        // they parse and that each key matches its certificate.
        wharf::node::certificates(&config)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
        // Likewise each upstream's `ca` opens; reading it checks it holds certificates.
        let problems: Vec<String> = (config.upstreams.iter().enumerate())
            .filter_map(|(i, upstream)| {
                let ca = upstream.ca.as_deref()?;
                let e = wharf::proxy::client::tls_config(Some(ca), upstream.http2).err()?;
                Some(format!("{}: upstream[{i}].ca: {e:#}", path.display()))
            })
            .collect();
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(config)
    });
    match checked {
        Ok(config) => {
            let count =
                |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
            let mut parts = vec![
                count(config.listeners.len(), "listener"),
                count(config.sites.len(), "site"),
            ];
            if !config.upstreams.is_empty() {
                let servers = config.upstreams.iter().map(|u| u.servers.len()).sum();
                parts.push(format!(
                    "{} of {}",
                    count(config.upstreams.len(), "upstream"),
                    count(servers, "server")
                ));
            }
            println!("{}: ok ({})", path.display(), parts.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `wharf serve`, and under `wharf dev` (`dev` names the projects) the same node with
/// the projects built first and rebuilt on every change.
async fn serve(args: ServeArgs, dev: Vec<PathBuf>) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let options = Options {
        apps_dir: args.apps_dir,
        listen: args.listen,
        cache_dir: match args.no_cache {
            true => None,
            false => args.cache_dir.or_else(wharf::runtime::default_cache_dir),
        },
        config_path: args.config,
        data_dir: args.data_dir,
        dev,
    };
    let node = Node::build(config, options).await?;
    node.run(wharf::node::shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

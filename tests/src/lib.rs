//! Test harness: builds the wharf binary and the guest components from source, starts
//! wharf on port 0 and reads the real address from its output, and offers small
//! HTTP/1.1 and HTTP/2 clients.

pub mod baseline;
pub mod mariadb;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// The wharf binary, built (once per test process) with the profile the tests run in.
///
/// It is built for the whole workspace with every target, as `cargo test --workspace`
/// does: building `-p wharf` alone resolves dependency features differently and
/// would compile wasmtime a second time.
pub fn wharf_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        run(Command::new(cargo()).current_dir(repo_root()).args([
            "build",
            "--quiet",
            "--workspace",
            "--all-targets",
        ]));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target"));
        target.join("debug").join("wharf")
    })
}

/// The guest components, built from source once per test process.
pub struct Guests {
    dirs: Vec<PathBuf>,
}

impl Guests {
    /// Path of the built `NAME.wasm`.
    pub fn wasm(&self, name: &str) -> PathBuf {
        self.dirs
            .iter()
            .map(|d| d.join(format!("{name}.wasm")))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no guest named {name}"))
    }
}

pub fn guests() -> &'static Guests {
    static GUESTS: OnceLock<Guests> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let mut dirs = Vec::new();
        for workspace in ["guest-apps", "tests/guests"] {
            let dir = repo_root().join(workspace);
            run(Command::new(cargo())
                .current_dir(&dir)
                .env_remove("CARGO_TARGET_DIR")
                .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"]));
            dirs.push(dir.join("target/wasm32-wasip2/release"));
        }
        Guests { dirs }
    })
}

/// A running wharf process, killed on drop.
pub struct Wharf {
    child: Child,
    pub addr: SocketAddr,
    /// What wharf printed on stdout up to and including the app table.
    pub banner: String,
    log: Arc<Mutex<Vec<String>>>,
    pub apps: PathBuf,
    /// Where apps' SQLite files go (`--data-dir`), unless the test names its own.
    pub data: tempfile::TempDir,
}

/// Compile cache shared by every wharf a test starts, so each component is compiled once
/// per suite run, not once per test.
pub fn shared_cache_dir() -> PathBuf {
    repo_root().join("target").join("wharf-test-cache")
}

impl Wharf {
    /// Starts `wharf serve APPS --listen 127.0.0.1:0` with the shared compile cache.
    pub fn start(apps: &Path) -> Self {
        Self::start_with(
            apps,
            &[("WHARF_CACHE_DIR", shared_cache_dir().as_os_str())],
            &[],
        )
    }

    /// Starts `wharf serve APPS --listen 127.0.0.1:0 ARGS...` with `envs`.
    pub fn start_with(apps: &Path, envs: &[(&str, &std::ffi::OsStr)], args: &[&str]) -> Self {
        let mut command = Command::new(wharf_bin());
        command
            .arg("serve")
            .arg(apps)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .envs(envs.iter().copied());
        Self::spawn(command, apps)
    }

    /// Runs `command`, a wharf command that serves `apps` on port 0 (`serve`, `dev`),
    /// and waits for its listening line and app table. Whatever it prints to stderr,
    /// and to stdout after the table, goes to the log.
    pub fn spawn(mut command: Command, apps: &Path) -> Self {
        let data = tempfile::tempdir().unwrap();
        if !command.get_args().any(|a| a == "--data-dir") {
            command.arg("--data-dir").arg(data.path());
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wharf");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[wharf] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // To the banner while it is being read, to the log once it is complete.
                if let Err(std::sync::mpsc::SendError(line)) = tx.send(line) {
                    eprintln!("[wharf] {line}");
                    sink.lock().unwrap().push(line);
                }
            }
        });
        // `wharf dev` prints its first builds before listening; the cold one compiles
        // the SDK's dependencies.
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut banner = String::new();
        let addr = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("wharf printed no listening line:\n{banner}"));
            banner.push_str(&line);
            banner.push('\n');
            if let Some(addr) = line.strip_prefix("listening on http://") {
                break addr
                    .parse()
                    .unwrap_or_else(|_| panic!("bad listening line: {line}"));
            }
        };
        // The app table follows at once; gather it until stdout goes quiet.
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            banner.push_str(&line);
            banner.push('\n');
        }
        Self {
            child,
            addr,
            banner,
            log,
            apps: apps.to_path_buf(),
            data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything wharf has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) for a log line containing every one of `needles`.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_log_since(0, needles, timeout)
    }

    /// How many lines wharf has logged so far; a mark for `wait_for_log_since`.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Like `wait_for_log`, looking only at lines logged after mark `since`.
    pub fn wait_for_log_since(
        &self,
        since: usize,
        needles: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .log()
                .into_iter()
                .skip(since)
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Ok(line);
            }
            if start.elapsed() > timeout {
                bail!("no log line with {needles:?} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `name` (`TERM`, `HUP`...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Stops the process and waits for it. Returns its data directory, for a test
    /// that restarts wharf on the same data.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh apps directory holding copies of the named guests.
pub fn apps_dir(guests: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in guests {
        std::fs::copy(
            self::guests().wasm(name),
            dir.path().join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    dir
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub version: http::Version,
}

/// An HTTP client over one protocol: HTTP/1.1 with keep-alive, or HTTP/2 with prior knowledge.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn http1() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn http2() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str) -> anyhow::Result<Reply> {
        self.send("GET", url, None, "").await
    }

    /// The status of a GET, panicking if the request itself fails.
    pub async fn status(&self, url: &str) -> u16 {
        self.get(url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:#}"))
            .status
    }

    pub async fn post_json(&self, url: &str, body: &str) -> anyhow::Result<Reply> {
        self.send("POST", url, Some("application/json"), body).await
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> anyhow::Result<Reply> {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .collect();
        self.request(method, url, &headers, body).await
    }

    /// A GET with extra headers (`host` among them replaces the URL's).
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        self.request("GET", url, headers, "").await
    }

    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<Reply> {
        let mut req = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string())))?;
        let response = self.client.request(req).await.context("request failed")?;
        let status = response.status().as_u16();
        let version = response.version();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            version,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Polls `url` until it answers `status` (bounded by `timeout`).
pub async fn wait_for_status(
    client: &HttpClient,
    url: &str,
    status: u16,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    let start = Instant::now();
    loop {
        let reply = client.get(url).await?;
        if reply.status == status {
            return Ok(reply);
        }
        if start.elapsed() > timeout {
            bail!(
                "{url} still answers {} after {timeout:?}: {}",
                reply.status,
                reply.body
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends raw bytes on a new TCP connection and returns what the server sent back
/// before closing (or the first response head).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// What an HTTPS request saw: the reply, the certificate the server presented and the
/// protocol ALPN chose.
pub struct TlsReply {
    pub reply: Reply,
    pub certificate: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
}

/// A GET over a new TLS connection to `addr`, sending `server_name` as SNI and `host`
/// (default: the server name) as the request's host, trusting only the CA in `ca_pem`,
/// offering h2 and http/1.1 (h2 is used if chosen).
pub async fn https_get(
    addr: SocketAddr,
    server_name: &str,
    host: Option<&str>,
    ca_pem: &Path,
    path: &str,
) -> anyhow::Result<TlsReply> {
    let host = host.unwrap_or(server_name);
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .context("TLS handshake timed out")??;
    let (_, session) = tls.get_ref();
    let certificate = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let alpn = session.alpn_protocol().map(|p| p.to_vec());
    let io = hyper_util::rt::TokioIo::new(tls);
    let uri = format!("https://{host}{path}");
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let req = http::Request::get(uri).body(Full::new(Bytes::new()))?;
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))?;
        sender.send_request(req).await?
    };
    let status = response.status().as_u16();
    let version = response.version();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(TlsReply {
        reply: Reply {
            status,
            headers,
            version,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
        certificate,
        alpn,
    })
}

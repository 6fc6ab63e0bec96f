//! Starting wharf nodes: each a real `wharf` process serving on port 0 of its own
//! loopback address, known to the test by the addresses it printed, which can be
//! killed and restarted on the same apps, config, data and (when they are free) the same
//! addresses.

use crate::poll::poll_until;
use crate::{shared_cache_dir, wharf_bin};
use anyhow::bail;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `wharf dev` prints its first builds before listening; the cold one compiles the
/// SDK's dependencies.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// The app table follows the listening lines at once: it is complete when stdout has
/// been quiet this long.
const BANNER_QUIET: Duration = Duration::from_millis(200);

/// A loopback address no other node of this test process has been given: 127.0.0.2,
/// 127.0.0.3, ... (all of 127.0.0.0/8 reaches this machine). After 127.0.0.254 it
/// wraps; by then the first nodes are long gone, and each binds port 0 anyway.
pub fn next_loopback_ip() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 253;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n as u8))
}

/// How to start a node: see [`Wharf::builder`].
pub struct Builder {
    apps: PathBuf,
    ip: IpAddr,
    config: Option<Config>,
    envs: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    read_stderr: bool,
    data_dir: bool,
}

enum Config {
    Text(String),
    File(PathBuf),
}

impl Builder {
    /// Listens on port 0 of `ip` instead of a fresh loopback address of its own.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = ip;
        self
    }

    /// The node's wharf.toml, written to a file the node owns ([`Wharf::config`]).
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(Config::Text(toml.to_owned()));
        self
    }

    /// The node's wharf.toml, the test's own file.
    pub fn config_file(mut self, path: &Path) -> Self {
        self.config = Some(Config::File(path.to_owned()));
        self
    }

    /// An environment variable; one set later wins (`WHARF_CACHE_DIR` replaces the
    /// shared compile cache).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// One more argument of `wharf serve`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Leaves out the harness's `--data-dir`, so that the node's wharf.toml says where
    /// SQLite files go (`[apps] data_dir`) and a reload can move them: the command line
    /// would win over the file.
    pub fn data_dir_from_config(mut self) -> Self {
        self.data_dir = false;
        self
    }

    /// Leaves stderr to a pipe nobody reads, for a test of what happens once it is
    /// full; the log then holds only stdout.
    pub fn unread_stderr(mut self) -> Self {
        self.read_stderr = false;
        self
    }

    /// Starts `wharf serve APPS --listen IP:0 [--config FILE] ARGS...` and waits for
    /// its listening lines and app table.
    pub fn start(self) -> Wharf {
        let config_dir = tempfile::tempdir().unwrap();
        let config = self.config.map(|config| match config {
            Config::File(path) => path,
            Config::Text(text) => {
                let path = config_dir.path().join("wharf.toml");
                std::fs::write(&path, text).unwrap();
                path
            }
        });
        let mut args: Vec<OsString> = vec!["serve".into(), self.apps.clone().into()];
        let listen = SocketAddr::new(self.ip, 0);
        args.extend(["--listen".into(), listen.to_string().into()]);
        if let Some(config) = &config {
            args.extend(["--config".into(), config.clone().into()]);
        }
        args.extend(self.args);
        let mut envs = vec![("WHARF_CACHE_DIR".into(), Some(shared_cache_dir().into()))];
        envs.extend(self.envs.into_iter().map(|(k, v)| (k, Some(v))));
        let launch = Launch {
            program: wharf_bin().into(),
            dir: None,
            args,
            envs,
            read_stderr: self.read_stderr,
            data_dir: self.data_dir,
            listen: Some(listen),
        };
        Wharf::launch(launch, &self.apps, config, config_dir)
    }
}

/// What starts the process, kept to start it again.
struct Launch {
    program: PathBuf,
    dir: Option<PathBuf>,
    args: Vec<OsString>,
    /// Variables to set, or (`None`) to remove.
    envs: Vec<(OsString, Option<OsString>)>,
    read_stderr: bool,
    /// Whether the harness gives the node a `--data-dir` (when the test names none).
    data_dir: bool,
    /// The `--listen` address, when the harness chose it (a restart asks for the port
    /// it got before).
    listen: Option<SocketAddr>,
}

impl Launch {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        // Readable lines for the tests' needles; a test of the JSON log asks for it.
        command.env("WHARF_LOG_FORMAT", "text");
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
    }

    /// Asks for `addr` where it asked for `listen` before.
    fn rebinding(&mut self, addr: SocketAddr) {
        let Some(listen) = self.listen.replace(addr) else {
            return;
        };
        let listen = OsString::from(listen.to_string());
        if let Some(arg) = self.args.iter_mut().find(|a| **a == listen) {
            *arg = addr.to_string().into();
        }
    }
}

/// A process's resident set size, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: now.
    pub resident: u64,
    /// `VmHWM`: the most it has been since the process started.
    pub peak: u64,
}

/// A running wharf process, killed on drop.
pub struct Wharf {
    child: Child,
    launch: Launch,
    /// The first plain HTTP address it printed (the `--listen` one, unless the config's
    /// listeners come first).
    pub addr: SocketAddr,
    /// Every plain HTTP address it printed, in order.
    pub http: Vec<SocketAddr>,
    /// Every HTTPS address it printed, in order.
    pub https: Vec<SocketAddr>,
    /// The admin listener's address, if it has one.
    pub admin: Option<SocketAddr>,
    /// What wharf printed on stdout up to and including the app table.
    pub banner: String,
    log: Arc<Mutex<Vec<String>>>,
    /// Held while [`Builder::unread_stderr`] wants the pipe open and unread.
    _stderr: Option<ChildStderr>,
    pub apps: PathBuf,
    /// The node's wharf.toml, if it has one.
    pub config: Option<PathBuf>,
    _config_dir: tempfile::TempDir,
    /// Where apps' SQLite files go (`--data-dir`), unless the test names its own.
    pub data: tempfile::TempDir,
}

impl Wharf {
    /// A node serving `apps`, to be configured and started: by default on port 0 of a
    /// loopback address no other node of the test process has, with the shared compile
    /// cache, a data dir of its own and no wharf.toml.
    pub fn builder(apps: &Path) -> Builder {
        Builder {
            apps: apps.to_owned(),
            ip: next_loopback_ip(),
            config: None,
            envs: Vec::new(),
            args: Vec::new(),
            read_stderr: true,
            data_dir: true,
        }
    }

    /// Starts `wharf serve APPS --listen 127.0.0.1:0` with the shared compile cache.
    pub fn start(apps: &Path) -> Self {
        Self::builder(apps).ip(Ipv4Addr::LOCALHOST.into()).start()
    }

    /// Starts `wharf serve APPS --listen 127.0.0.1:0 ARGS...` with `envs`.
    pub fn start_with(apps: &Path, envs: &[(&str, &OsStr)], args: &[&str]) -> Self {
        let mut builder = Self::builder(apps).ip(Ipv4Addr::LOCALHOST.into());
        for (key, value) in envs {
            builder = builder.env(key, value);
        }
        for arg in args {
            builder = builder.arg(arg);
        }
        builder.start()
    }

    /// Runs `command`, a wharf command that serves `apps` on port 0 (`serve`, `dev`),
    /// and waits for its listening line and app table.
    pub fn spawn(command: Command, apps: &Path) -> Self {
        let launch = Launch {
            program: command.get_program().into(),
            dir: command.get_current_dir().map(Path::to_owned),
            args: command.get_args().map(OsStr::to_owned).collect(),
            envs: command
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(OsStr::to_owned)))
                .collect(),
            read_stderr: true,
            data_dir: true,
            listen: None,
        };
        Self::launch(launch, apps, None, tempfile::tempdir().unwrap())
    }

    fn launch(
        mut launch: Launch,
        apps: &Path,
        config: Option<PathBuf>,
        config_dir: tempfile::TempDir,
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        if launch.data_dir && !launch.args.iter().any(|a| a == "--data-dir") {
            launch
                .args
                .extend(["--data-dir".into(), data.path().into()]);
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let (child, stderr, banner) =
            run(&launch, &log).unwrap_or_else(|e| panic!("starting wharf: {e:#}"));
        let mut wharf = Self {
            child,
            launch,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            http: Vec::new(),
            https: Vec::new(),
            admin: None,
            banner: String::new(),
            log,
            _stderr: stderr,
            apps: apps.to_path_buf(),
            config,
            _config_dir: config_dir,
            data,
        };
        wharf.learn_addresses(banner);
        wharf
    }

    /// Takes the addresses from `banner`, which becomes the banner.
    fn learn_addresses(&mut self, banner: String) {
        let after = |prefix: &str| {
            banner
                .lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .map(|rest| {
                    let addr = rest.split_whitespace().next().unwrap_or(rest);
                    addr.parse::<SocketAddr>()
                        .unwrap_or_else(|_| panic!("bad address in {prefix}{rest}"))
                })
                .collect::<Vec<_>>()
        };
        self.http = after("listening on http://");
        self.https = after("listening on https://");
        self.admin = after("admin on http://").first().copied();
        self.addr = *self
            .http
            .first()
            .unwrap_or_else(|| panic!("wharf printed no plain HTTP address:\n{banner}"));
        self.banner = banner;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything wharf has logged so far, over all its restarts.
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
        let what = format!("wharf logs a line with {needles:?}");
        poll_until(timeout, &what, || {
            let log = self.log.lock().unwrap();
            let new = log.get(since..).unwrap_or_default();
            match new.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
                Some(line) => Ok(line.clone()),
                None => Err(new.last().cloned()),
            }
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident memory now and at its peak, from `/proc/PID/status`.
    pub fn memory(&self) -> Memory {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {key} in {path}:\n{status}"))
        };
        Memory {
            resident: kib("VmRSS:") * 1024,
            peak: kib("VmHWM:") * 1024,
        }
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
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, "wharf exits", || match self.child.try_wait() {
            Ok(Some(status)) => Ok(status),
            other => Err(other),
        })
        .ok()
    }

    /// Kills the process (SIGKILL) and waits for it; [`Wharf::restart`] starts it again.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the node again (killing it first if it runs) with the same apps, config,
    /// arguments and data dir. A node from the builder listens where it listened before
    /// if that address is still free (else on port 0 of the same IP), so that configs
    /// naming it stay valid; listeners of its wharf.toml bind what the file says.
    pub fn restart(&mut self) {
        self.kill();
        if let Some(listen) = self.launch.listen
            && let Some(before) = self.http.iter().find(|a| a.ip() == listen.ip())
        {
            self.launch.rebinding(*before);
        }
        let started = run(&self.launch, &self.log).or_else(|e| match self.launch.listen {
            Some(listen) if listen.port() != 0 => {
                eprintln!("[wharf] {listen} not free again ({e:#}); restarting on port 0");
                self.launch.rebinding(SocketAddr::new(listen.ip(), 0));
                run(&self.launch, &self.log)
            }
            _ => Err(e),
        });
        let (child, stderr, banner) = started.unwrap_or_else(|e| panic!("restarting wharf: {e:#}"));
        self.child = child;
        self._stderr = stderr;
        self.learn_addresses(banner);
    }

    /// Stops the process and waits for it. Returns its data directory, for a test
    /// that restarts wharf on the same data.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns the process and reads its banner: every line up to the first listening line,
/// and the app table after it. What it prints to stderr, and to stdout after the
/// banner, goes to `log`.
fn run(
    launch: &Launch,
    log: &Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<(Child, Option<ChildStderr>, String)> {
    let mut command = launch.command();
    // A test may ask for more (`RUST_LOG=info,access=debug`: a line per request).
    if !launch.envs.iter().any(|(key, _)| key == "RUST_LOG") {
        command.env("RUST_LOG", "info");
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().unwrap();
    let stderr = match launch.read_stderr {
        true => {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[wharf] {line}");
                    sink.lock().unwrap().push(line);
                }
            });
            None
        }
        false => Some(stderr),
    };
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
    match read_banner(&rx) {
        Ok(banner) => {
            // What follows the table's last line, within the banner's quiet time, is
            // log already (`NAME: optimised build serving ...`).
            let mut lines = banner.lines();
            if lines.any(|line| line.starts_with("database: ")) {
                let mut log = log.lock().unwrap();
                log.extend(lines.map(str::to_string));
            }
            Ok((child, stderr, banner))
        }
        Err(e) => {
            let _ = child.kill();
            let status = child.wait()?;
            // What it said on stderr is in the test's output already, as [wharf] lines.
            bail!("{e} ({status})")
        }
    }
}

/// The lines up to the first listening line, and the app table that follows at once.
fn read_banner(rx: &Receiver<String>) -> anyhow::Result<String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut banner = String::new();
    while !banner.lines().any(|l| l.starts_with("listening on ")) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                banner.push_str(&line);
                banner.push('\n');
            }
            Err(RecvTimeoutError::Timeout) => {
                bail!("wharf printed no listening line within {STARTUP_TIMEOUT:?}:\n{banner}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!("wharf exited before listening:\n{banner}")
            }
        }
    }
    while let Ok(line) = rx.recv_timeout(BANNER_QUIET) {
        banner.push_str(&line);
        banner.push('\n');
    }
    Ok(banner)
}

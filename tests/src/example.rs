//! The designs in `examples/`, run as a user runs them: `up.sh` builds network
//! namespaces on a virtual switch (with the test's own prefix, so a copy a user runs is
//! not in the way), the test reaches the nodes with commands run in their namespaces
//! (curl from the client, which resolves names through the example's DNS server), kills
//! and restarts nodes, and `down.sh` must leave nothing behind.

use crate::{poll_until, repo_root};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// up.sh creates the databases and waits for every node (the guests and wharf are built
/// before it starts); on a machine busy with other builds that has taken two minutes.
const UP_TIMEOUT: Duration = Duration::from_secs(300);
/// down.sh gives each process a minute before it kills it.
const DOWN_TIMEOUT: Duration = Duration::from_secs(150);
/// A killed process is gone this soon.
const EXIT: Duration = Duration::from_secs(10);

/// An example, up; dropping it runs down.sh, should the test fail half-way.
pub struct Example {
    /// Its folder in `examples/`.
    name: &'static str,
    /// The prefix of its namespaces.
    prefix: &'static str,
    run: tempfile::TempDir,
    /// up.sh's and down.sh's output, quoted when they fail.
    output: tempfile::TempDir,
    down: bool,
    /// Nodes the test started again itself: reaped once down.sh has stopped them.
    restarted: RefCell<Vec<Child>>,
    /// One example at a time: each is a dozen processes, and VRRP's 0.1 s timers want
    /// the CPU on time.
    _alone: MutexGuard<'static, ()>,
}

/// An HTTP answer as curl saw it.
#[derive(Debug)]
pub struct CurlReply {
    /// 0 when there was none (curl's exit code is in `body` then).
    pub status: u16,
    /// The header block, names in lower case.
    pub head: String,
    pub body: String,
}

impl Example {
    /// Runs `examples/NAME/up.sh` with namespaces named `PREFIX...`, the harness's wharf
    /// and guests.
    pub fn up(name: &'static str, prefix: &'static str) -> Self {
        static ONE: Mutex<()> = Mutex::new(());
        let alone = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let guests = crate::guests().wasm("hello");
        let example = Example {
            name,
            prefix,
            run: tempfile::tempdir().unwrap(),
            output: tempfile::tempdir().unwrap(),
            down: false,
            restarted: Default::default(),
            _alone: alone,
        };
        let status = example.script("up.sh", UP_TIMEOUT, guests.parent().unwrap());
        assert!(
            status.success(),
            "up.sh failed ({status}):\n{}",
            example.log("up.sh")
        );
        example
    }

    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// A file in the run directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.run.path().join(file)
    }

    fn script(&self, name: &str, timeout: Duration, guests: &Path) -> ExitStatus {
        let out = std::fs::File::create(self.output.path().join(name)).unwrap();
        let mut child = Command::new(repo_root().join("examples").join(self.name).join(name))
            .env("WHARF", crate::wharf_bin())
            .env("WHARF_EXAMPLE_PREFIX", self.prefix)
            .env("WHARF_EXAMPLE_RUN", self.run.path())
            .env("WHARF_EXAMPLE_GUESTS", guests)
            .env("WHARF_CACHE_DIR", crate::shared_cache_dir())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let waited = poll_until(timeout, &format!("{name} finishes"), || {
            match child.try_wait().unwrap() {
                Some(status) => Ok(status),
                None => Err("running"),
            }
        });
        waited.unwrap_or_else(|e| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{e:#}:\n{}", self.log(name))
        })
    }

    /// What up.sh or down.sh printed.
    pub fn log(&self, script: &str) -> String {
        std::fs::read_to_string(self.output.path().join(script)).unwrap_or_default()
    }

    /// Runs `command` in the namespace of node `node`.
    pub fn on<S: AsRef<OsStr>>(&self, node: &str, command: &[S]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &format!("{}{node}", self.prefix)])
            .args(command)
            .output()
            .unwrap()
    }

    /// `curl -s` in the client namespace: (exit code, stdout).
    pub fn curl(&self, args: &[&str]) -> (i32, String) {
        let out = self.on("client", &[&["curl", "-s", "-m", "5"], args].concat());
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// One request with curl from the client namespace (`args` before the URL, e.g.
    /// `-d BODY`), its answer's status, head and body.
    pub fn http(&self, args: &[&str], url: &str) -> CurlReply {
        let (code, out) = self.curl(&[args, &["-i", url]].concat());
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        CurlReply {
            status,
            head: head.to_ascii_lowercase(),
            body: match status {
                0 => format!("curl exit {code}"),
                _ => body.to_owned(),
            },
        }
    }

    /// The pid in `NAME.pid`.
    pub fn pid(&self, name: &str) -> u32 {
        let file = self.path(&format!("{name}.pid"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    }

    /// Kills the process of a pid file of the run directory, with SIGKILL.
    pub fn kill(&self, pid_file: &str) {
        let pid = std::fs::read_to_string(self.path(pid_file)).unwrap();
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 {pid} ({pid_file})");
    }

    /// Kills node `name` (SIGKILL), waits until it has gone, and returns its command
    /// line, to start it again with [`Example::restart`].
    pub fn kill_node(&self, name: &str) -> Vec<String> {
        let pid = self.pid(name);
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let command = raw
            .split(|b| *b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        self.kill(&format!("{name}.pid"));
        poll_until(EXIT, &format!("{name} has exited"), || match alive(pid) {
            false => Ok(()),
            true => Err("alive"),
        })
        .unwrap();
        command
    }

    /// Starts node `name` again in its namespace with `command`, as up.sh did: its
    /// output appended to its log, its pid in its pid file for down.sh.
    pub fn restart<S: AsRef<OsStr>>(&self, name: &str, command: &[S]) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(&format!("{name}.log")))
            .unwrap();
        let child = Command::new("setsid")
            .args(["ip", "netns", "exec", &format!("{}{name}", self.prefix)])
            .args(command)
            .env("WHARF_CACHE_DIR", crate::shared_cache_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(self.path(&format!("{name}.pid")), child.id().to_string()).unwrap();
        self.restarted.borrow_mut().push(child);
    }

    /// Runs down.sh; no namespace of the example, and no process of its run, is left,
    /// and the nodes' logs are.
    pub fn down_leaves_nothing(mut self) {
        self.down = true;
        let status = self.script("down.sh", DOWN_TIMEOUT, Path::new(""));
        self.reap();
        assert!(
            status.success(),
            "down.sh failed ({status}):\n{}",
            self.log("down.sh")
        );
        let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let left = String::from_utf8_lossy(&namespaces.stdout);
        assert!(!left.contains(self.prefix), "namespaces left: {left}");
        // A zombie waiting for init to reap it has stopped: only live processes count.
        let processes = Command::new("pgrep")
            .args(["-f", "-r", "R,S,D,T", self.run.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            processes.stdout.is_empty(),
            "processes left: {}",
            String::from_utf8_lossy(&processes.stdout)
        );
        let logs = std::fs::read_dir(self.run.path())
            .unwrap()
            .filter(|entry| {
                let path = entry.as_ref().unwrap().path();
                path.extension().is_some_and(|e| e == "log")
            })
            .count();
        assert!(
            logs > 0,
            "down.sh left no log in {}",
            self.run.path().display()
        );
    }

    fn reap(&self) {
        for mut child in self.restarted.borrow_mut().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if !self.down {
            let status = self.script("down.sh", DOWN_TIMEOUT, Path::new(""));
            self.reap();
            eprintln!("down.sh after a failure: {status}\n{}", self.log("down.sh"));
        }
    }
}

/// The process runs (a zombie, whose parent has not reaped it yet, has stopped).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        !state.starts_with('Z') && !state.starts_with('X')
    })
}

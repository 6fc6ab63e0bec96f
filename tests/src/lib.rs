//! Test harness: builds the wharf binary and the guest components from source, starts
//! wharf nodes on port 0 of their own loopback addresses and reads the real addresses
//! from their output, waits for conditions under a deadline, and offers small HTTP/1.1,
//! HTTP/2 and HTTPS clients, a test backend to put behind a balancer, and a runner for
//! the examples in `examples/`.

mod backend;
pub mod baseline;
pub mod browser;
mod client;
pub mod example;
pub mod h2;
pub mod mariadb;
mod node;
pub mod pebble;
mod poll;

pub use backend::{Backend, Mode};
pub use client::{
    HttpClient, Reply, TlsReply, https_get, https_get_over, raw_exchange, tls_client_config,
    wait_for_status,
};
pub use node::{Builder, Memory, Wharf, next_loopback_ip};
pub use poll::{poll_until, poll_until_async};

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
        warm_shared_cache(&dirs);
        Guests { dirs }
    })
}

/// Puts both compiler tiers' builds of every guest in [`shared_cache_dir`], so that a
/// wharf a test starts serves them optimised from its first request. The move from the
/// baseline build to the optimised one is tested on its own (tests/tiered.rs); in other
/// tests it would come at a moment of its own choosing, in the middle of a test that
/// counts instances, say.
fn warm_shared_cache(dirs: &[PathBuf]) {
    let apps = tempfile::tempdir().unwrap();
    for dir in dirs {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wasm") {
                std::fs::copy(&path, apps.path().join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let wharf = Wharf::start(apps.path());
    for row in wharf
        .banner
        .lines()
        .filter(|row| row.ends_with("baseline)"))
    {
        let app = row.split_whitespace().next().unwrap();
        let optimised = format!("{app}: optimised build serving");
        wharf
            .wait_for_log(&[&optimised], std::time::Duration::from_secs(120))
            .unwrap();
    }
}

/// Compile cache shared by every wharf a test starts, so each component is compiled once
/// per suite run, not once per test.
pub fn shared_cache_dir() -> PathBuf {
    repo_root().join("target").join("wharf-test-cache")
}

/// Replaces `path` with `contents` in one rename, as deploy tools and editors' safe
/// saves do: a wharf watching the file (its wharf.toml) never reads it half written.
pub fn replace_file(path: &Path, contents: impl AsRef<[u8]>) {
    let name = path.file_name().unwrap().to_string_lossy();
    let staged = path.with_file_name(format!(".{name}.part"));
    std::fs::write(&staged, contents).unwrap();
    std::fs::rename(&staged, path).unwrap();
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

/// `n` distinct ports that were free a moment ago. All listeners are held until every
/// port is picked, so the kernel cannot hand out the same port twice.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("binding 127.0.0.1:0: {e}"))?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Fails with what to install when `command` is missing (tests/run.sh installs it).
pub fn needs(command: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{command} is missing: run tests/run.sh, which installs it"
    );
}

//! The scaled-up example (`examples/scale-up`), run as a user runs it: `up.sh` builds
//! network namespaces holding two wharf balancers sharing a virtual IP through
//! keepalived, two app nodes, a MariaDB primary and replica, and dnsmasq holding the
//! site's zone. A client in its own namespace loops on `http://www.foobar.com/`,
//! resolving through that DNS server, while:
//! - the active balancer drains (`wharf drain`): no request fails;
//! - the active balancer dies (kill -9 of its wharf and keepalived): the gap until
//!   requests succeed again, and the failures, are printed;
//! - an app node dies: no GET fails.
//!
//! Then `down.sh` must leave no process, namespace or address behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wharf_tests::{poll_until, repo_root};

/// A prefix of this test's own, so a running copy of the example is not in the way.
const PREFIX: &str = "wt-su-";
const VIP: &str = "198.18.0.10";
const LB_ADMIN: [&str; 2] = ["198.18.0.11:9180", "198.18.0.12:9180"];
const UP_TIMEOUT: Duration = Duration::from_secs(300);
const DOWN_TIMEOUT: Duration = Duration::from_secs(150);
/// Every wait for the stack to settle (a balancer ready, an address taken).
const SETTLE: Duration = Duration::from_secs(30);

/// The example, up; dropping it runs down.sh, should the test fail half-way.
struct Example {
    run: tempfile::TempDir,
    output: tempfile::TempDir,
    down: bool,
    /// Nodes the test started again itself: reaped once down.sh has stopped them.
    restarted: std::cell::RefCell<Vec<Child>>,
}

impl Example {
    fn up() -> Self {
        let guests = wharf_tests::guests().wasm("hello");
        let example = Example {
            run: tempfile::tempdir().unwrap(),
            output: tempfile::tempdir().unwrap(),
            down: false,
            restarted: Default::default(),
        };
        let status = example.script("up.sh", UP_TIMEOUT, guests.parent().unwrap());
        assert!(
            status.success(),
            "up.sh failed ({status}):\n{}",
            example.log("up.sh")
        );
        example
    }

    fn down(&mut self) {
        self.down = true;
        let status = self.script("down.sh", DOWN_TIMEOUT, Path::new(""));
        self.reap();
        assert!(
            status.success(),
            "down.sh failed ({status}):\n{}",
            self.log("down.sh")
        );
    }

    fn script(&self, name: &str, timeout: Duration, guests: &Path) -> ExitStatus {
        let out = std::fs::File::create(self.output.path().join(name)).unwrap();
        let mut child: Child = Command::new(repo_root().join("examples/scale-up").join(name))
            .env("WHARF", wharf_tests::wharf_bin())
            .env("WHARF_EXAMPLE_PREFIX", PREFIX)
            .env("WHARF_EXAMPLE_RUN", self.run.path())
            .env("WHARF_EXAMPLE_GUESTS", guests)
            .env("WHARF_CACHE_DIR", wharf_tests::shared_cache_dir())
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
            panic!("{e}:\n{}", self.log(name))
        })
    }

    fn reap(&self) {
        for mut child in self.restarted.borrow_mut().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.output.path().join(name)).unwrap_or_default()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.run.path().join(file)
    }

    /// Whether balancer `i` has the site's address on its interface.
    fn holds(&self, i: usize) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                &format!("{PREFIX}lb{}", i + 1),
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {VIP}/"))
    }

    /// The balancer holding the site's address, if exactly one does.
    fn holder(&self) -> Option<usize> {
        match (self.holds(0), self.holds(1)) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            _ => None,
        }
    }

    /// Kills a process of the example by its pid file, with SIGKILL.
    fn kill(&self, pid_file: &str) {
        let pid = std::fs::read_to_string(self.path(pid_file)).unwrap();
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 {pid} ({pid_file})");
    }

    /// Starts balancer `i`'s wharf again, as up.sh does, recording its pid for down.sh.
    fn restart_balancer(&self, i: usize) {
        let name = format!("lb{}", i + 1);
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(&format!("{name}.log")))
            .unwrap();
        let config = self.path(&format!("{name}/wharf.toml"));
        let child = Command::new("setsid")
            .args(["ip", "netns", "exec", &format!("{PREFIX}{name}")])
            .arg(wharf_tests::wharf_bin())
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("WHARF_CACHE_DIR", wharf_tests::shared_cache_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(self.path(&format!("{name}.pid")), child.id().to_string()).unwrap();
        self.restarted.borrow_mut().push(child);
        let ready = self.path(&format!("{name}/ready"));
        poll_until(
            SETTLE,
            &format!("{name} writes 0 to its track file"),
            || match std::fs::read_to_string(&ready).unwrap_or_default() {
                held if held == "0\n" => Ok(()),
                other => Err(other),
            },
        )
        .unwrap();
        // keepalived reads the file as it changes and leaves FAULT for BACKUP.
        let keepalived = self.path(&format!("{name}-keepalived.log"));
        poll_until(SETTLE, &format!("{name}'s keepalived is back"), || {
            let log = std::fs::read_to_string(&keepalived).unwrap_or_default();
            let last = log.lines().rev().find(|l| l.contains("Entering"));
            match last {
                Some(line) if line.contains("BACKUP") => Ok(()),
                other => Err(other.map(String::from)),
            }
        })
        .unwrap();
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if !self.down {
            let _ = self.script("down.sh", DOWN_TIMEOUT, Path::new(""));
            self.reap();
        }
    }
}

/// Runs `command` in the namespace of node `node`.
fn on(node: &str, command: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &format!("{PREFIX}{node}")])
        .args(command)
        .output()
        .unwrap()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A client in its own namespace: curl after curl to `url` (a new connection each,
/// the name resolved each time through the example's DNS server) until stopped, at
/// most 3 000 requests or a minute. Each line of its output is `ok|fail END_TIME`.
struct ClientLoop {
    child: Child,
    stop: PathBuf,
    out: PathBuf,
}

impl ClientLoop {
    fn start(dir: &Path, name: &str, url: &str, connect_timeout: f64) -> Self {
        let (stop, out) = (
            dir.join(format!("{name}.stop")),
            dir.join(format!("{name}.out")),
        );
        // With a short connect timeout, a SYN sent while the address moves is a failure
        // and the next request tries again at once: that measures the gap. With a long
        // one, TCP sends the SYN again itself, as any client's does.
        let script = format!(
            "n=0; end=$((SECONDS + 60)); \
             while [ $n -lt 3000 ] && [ $SECONDS -lt $end ] && [ ! -e '{stop}' ]; do \
               curl -sf -o /dev/null --connect-timeout {connect_timeout} -m 5 '{url}'; code=$?; \
               if [ $code = 0 ]; then echo \"ok $EPOCHREALTIME\"; \
               else echo \"fail $EPOCHREALTIME curl-exit-$code\"; fi; \
               n=$((n + 1)); \
             done",
            stop = stop.display()
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{PREFIX}client"),
                "bash",
                "-c",
                &script,
            ])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = Self { child, stop, out };
        poll_until(
            SETTLE,
            &format!("{name}: a first answer"),
            || match client.lines().first() {
                Some((true, _)) => Ok(()),
                other => Err(other.cloned()),
            },
        )
        .unwrap();
        client
    }

    fn lines(&self) -> Vec<(bool, f64)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut words = l.split(' ');
                let (what, at) = (words.next()?, words.next()?);
                Some((what == "ok", at.replace(',', ".").parse().ok()?))
            })
            .collect()
    }

    /// Waits until `count` requests ended well after `since`.
    fn serves_after(&self, since: f64, count: usize) {
        poll_until(SETTLE, &format!("{count} answers after the event"), || {
            let lines = self.lines();
            match lines.iter().filter(|(ok, at)| *ok && *at > since).count() {
                n if n >= count => Ok(()),
                n => Err(n),
            }
        })
        .unwrap();
    }

    /// Stops the loop; returns its (successes, failures, the longest time without a
    /// success from `since` on).
    fn stop(mut self, since: f64) -> (usize, usize, f64) {
        std::fs::write(&self.stop, "").unwrap();
        poll_until(SETTLE, "the client loop ends", || {
            match self.child.try_wait().unwrap() {
                Some(_) => Ok(()),
                None => Err(()),
            }
        })
        .unwrap();
        let lines = self.lines();
        let failures: Vec<String> = std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("fail"))
            .map(String::from)
            .collect();
        if !failures.is_empty() {
            println!("failed requests (end time, curl's exit code): {failures:?}");
        }
        let ok = lines.iter().filter(|(ok, _)| *ok).count();
        let mut last_ok = since;
        let mut gap: f64 = 0.0;
        for (is_ok, at) in &lines {
            if *is_ok && *at > since {
                gap = gap.max(at - last_ok);
                last_ok = *at;
            }
        }
        (ok, lines.len() - ok, gap)
    }
}

#[test]
fn the_lb_pair_fails_over_and_drains_without_losing_requests() {
    let mut example = Example::up();
    let work = tempfile::tempdir().unwrap();

    // End to end through the front door, by name.
    let hello = on(
        "client",
        &["curl", "-sf", "-m", "5", "http://www.foobar.com/hello"],
    );
    assert_eq!(
        String::from_utf8_lossy(&hello.stdout).trim(),
        "Hello from wharf!"
    );
    let dig = on(
        "client",
        &["dig", "+short", "@198.18.0.53", "www.foobar.com", "A"],
    );
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), VIP);
    let first = example.holder().expect("one balancer holds the address");

    // Planned: the active balancer drains; its peer takes the address.
    let client = ClientLoop::start(work.path(), "drain", "http://www.foobar.com/hello", 3.0);
    let started = now();
    // From the balancer's own namespace: the host's has no route to the example.
    let config = example.path(&format!("lb{}/wharf.toml", first + 1));
    let drained = on(
        &format!("lb{}", first + 1),
        &[
            wharf_tests::wharf_bin().to_str().unwrap(),
            "drain",
            "--config",
            config.to_str().unwrap(),
            "--admin",
            LB_ADMIN[first],
        ],
    );
    assert!(
        drained.status.success(),
        "wharf drain: {}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let drain_took = now() - started;
    poll_until(SETTLE, "the peer holds the address", || {
        match example.holder() {
            Some(i) if i != first => Ok(()),
            other => Err(other),
        }
    })
    .unwrap();
    client.serves_after(started, 20);
    let (ok, failed, gap) = client.stop(started);
    println!(
        "planned drain of lb{} ({drain_took:.2} s): {ok} requests served, {failed} failed, \
         longest gap {gap:.3} s",
        first + 1
    );
    // wharf finishes every connection open at the drain before the address moves. A
    // connection opened in the milliseconds the move itself takes can still break
    // (no balancer's TCP state moves with the address): at most one here.
    assert!(
        failed <= 1,
        "{failed} requests failed during the planned drain"
    );

    // The drained balancer comes back, as a backup (no preemption).
    example.restart_balancer(first);
    assert_eq!(example.holder(), Some(1 - first), "the address moved back");

    // Unplanned: the active balancer's machine dies. Its switch port goes down (the
    // address on a dead machine answers nobody), then its wharf and keepalived get
    // kill -9.
    let second = 1 - first;
    let client = ClientLoop::start(work.path(), "kill", "http://www.foobar.com/hello", 0.2);
    let killed = now();
    let port = Command::new("ip")
        .args(["-n", &format!("{PREFIX}switch"), "link", "set", "dev"])
        .arg(format!("lb{}", second + 1))
        .arg("down")
        .status()
        .unwrap();
    assert!(port.success(), "taking lb{}'s switch port down", second + 1);
    example.kill(&format!("lb{}-keepalived.pid", second + 1));
    example.kill(&format!("lb{}/keepalived_vrrp.pid", second + 1));
    example.kill(&format!("lb{}.pid", second + 1));
    poll_until(SETTLE, "the backup takes the address", || {
        match example.holds(first) {
            true => Ok(()),
            false => Err(()),
        }
    })
    .unwrap();
    client.serves_after(killed, 20);
    let (ok, failed, gap) = client.stop(killed);
    println!(
        "kill -9 of the active balancer lb{}: back after {gap:.3} s (target 0.5 s), \
         {failed} requests failed, {ok} served",
        second + 1
    );
    assert!(ok > 0, "nothing served after the active balancer died");

    // An app node dies: the balancer's retries and checks hide it.
    let client = ClientLoop::start(work.path(), "app", "http://www.foobar.com/hello", 3.0);
    let app_killed = now();
    example.kill("app1.pid");
    // Past the balancers' checks noticing (2 × 500 ms).
    client.serves_after(app_killed + 1.5, 20);
    let (ok, failed, gap) = client.stop(app_killed);
    println!("kill -9 of app1: {ok} GETs served, {failed} failed, longest gap {gap:.3} s");
    assert_eq!(failed, 0, "GETs failed when an app node died");

    example.down();
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!left.contains(PREFIX), "namespaces left: {left}");
    let processes = Command::new("pgrep")
        .args(["-f", example.run.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        processes.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&processes.stdout)
    );
}

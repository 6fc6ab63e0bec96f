//! The classic stack's designs in `examples/`, each run as a user runs it (`up.sh`
//! builds network namespaces on a virtual switch, with dnsmasq holding the site's zone;
//! the client resolves `www.foobar.com` through it), checked through its front door,
//! then `down.sh` must leave no process and no namespace behind:
//! - `simple-stack`: one node doing everything;
//! - `secured-monitored`: HTTPS only, firewalls letting each node be reached only by
//!   its client, Prometheus scraping every node;
//! - `scale-up`: two balancers sharing a virtual IP through keepalived. While a client
//!   loops on the site, the active balancer drains (`wharf drain`: no request fails),
//!   the active balancer's machine dies (the gap until requests succeed again and the
//!   failures are printed), and an app node dies (no GET fails).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wharf_tests::{poll_until, repo_root};

/// A prefix of this test's own, so a running copy of the example is not in the way.
const VIP: &str = "198.18.0.10";
const LB_ADMIN: [&str; 2] = ["198.18.0.11:9180", "198.18.0.12:9180"];
const UP_TIMEOUT: Duration = Duration::from_secs(300);
const DOWN_TIMEOUT: Duration = Duration::from_secs(150);
/// Every wait for the stack to settle (a balancer ready, an address taken).
const SETTLE: Duration = Duration::from_secs(30);

/// The example, up; dropping it runs down.sh, should the test fail half-way.
struct Example {
    /// Its folder in `examples/`.
    name: &'static str,
    /// The prefix of its namespaces: the test's own, so that a copy a user runs is not
    /// in the way.
    prefix: &'static str,
    run: tempfile::TempDir,
    output: tempfile::TempDir,
    down: bool,
    /// Nodes the test started again itself: reaped once down.sh has stopped them.
    restarted: std::cell::RefCell<Vec<Child>>,
}

impl Example {
    fn up(name: &'static str, prefix: &'static str) -> Self {
        let guests = wharf_tests::guests().wasm("hello");
        let example = Example {
            name,
            prefix,
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
        let mut child: Child =
            Command::new(repo_root().join("examples").join(self.name).join(name))
                .env("WHARF", wharf_tests::wharf_bin())
                .env("WHARF_EXAMPLE_PREFIX", self.prefix)
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
                &format!("{}lb{}", self.prefix, i + 1),
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
            .args(["ip", "netns", "exec", &format!("{}{name}", self.prefix)])
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

/// One example at a time: each is a dozen processes, and VRRP's 0.1 s timers want the
/// CPU on time.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Example {
    /// Runs `command` in the namespace of node `node`.
    fn on(&self, node: &str, command: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &format!("{}{node}", self.prefix)])
            .args(command)
            .output()
            .unwrap()
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
    fn start(prefix: &str, dir: &Path, name: &str, url: &str, connect_timeout: f64) -> Self {
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
                &format!("{prefix}client"),
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
    let _alone = alone();
    let example = Example::up("scale-up", "wt-su-");
    let work = tempfile::tempdir().unwrap();

    // End to end through the front door, by name.
    let hello = example.on(
        "client",
        &["curl", "-sf", "-m", "5", "http://www.foobar.com/hello"],
    );
    assert_eq!(
        String::from_utf8_lossy(&hello.stdout).trim(),
        "Hello from wharf!"
    );
    let dig = example.on(
        "client",
        &["dig", "+short", "@198.18.0.53", "www.foobar.com", "A"],
    );
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), VIP);
    let first = example.holder().expect("one balancer holds the address");

    // Planned: the active balancer drains; its peer takes the address.
    let client = ClientLoop::start(
        example.prefix,
        work.path(),
        "drain",
        "http://www.foobar.com/hello",
        3.0,
    );
    let started = now();
    // From the balancer's own namespace: the host's has no route to the example.
    let config = example.path(&format!("lb{}/wharf.toml", first + 1));
    let drained = example.on(
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
    let client = ClientLoop::start(
        example.prefix,
        work.path(),
        "kill",
        "http://www.foobar.com/hello",
        0.2,
    );
    let killed = now();
    let port = Command::new("ip")
        .args([
            "-n",
            &format!("{}switch", example.prefix),
            "link",
            "set",
            "dev",
        ])
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
    let client = ClientLoop::start(
        example.prefix,
        work.path(),
        "app",
        "http://www.foobar.com/hello",
        3.0,
    );
    let app_killed = now();
    example.kill("app1.pid");
    // Past the balancers' checks noticing (2 × 500 ms).
    client.serves_after(app_killed + 1.5, 20);
    let (ok, failed, gap) = client.stop(app_killed);
    println!("kill -9 of app1: {ok} GETs served, {failed} failed, longest gap {gap:.3} s");
    assert_eq!(failed, 0, "GETs failed when an app node died");

    down_leaves_nothing(example);
}

/// Runs down.sh; no namespace of the example, and no process of its run, is left.
fn down_leaves_nothing(mut example: Example) {
    example.down();
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!left.contains(example.prefix), "namespaces left: {left}");
    // A zombie waiting for init to reap it has stopped: only live processes count.
    let processes = Command::new("pgrep")
        .args(["-f", "-r", "R,S,D,T", example.run.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        processes.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&processes.stdout)
    );
}

/// `curl -s` in the example's client namespace: (exit code, stdout).
fn curl(example: &Example, args: &[&str]) -> (i32, String) {
    let out = example.on("client", &[&["curl", "-s", "-m", "5"], args].concat());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Polls a GET of `url` (with `args` before it) until its body contains `needle`.
fn until_body_has(example: &Example, args: &[&str], url: &str, needle: &str) {
    poll_until(SETTLE, &format!("{url} shows {needle:?}"), || {
        match curl(example, &[args, &[url]].concat()) {
            (0, body) if body.contains(needle) => Ok(()),
            other => Err(other),
        }
    })
    .unwrap();
}

#[test]
fn the_simple_stack_serves_its_site_by_name_and_leaves_nothing_behind() {
    let _alone = alone();
    let example = Example::up("simple-stack", "wt-ss-");
    let dig = example.on(
        "client",
        &["dig", "+short", "@198.18.1.53", "www.foobar.com", "A"],
    );
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "198.18.1.10");
    let (code, body) = curl(&example, &["-f", "http://www.foobar.com/hello"]);
    assert_eq!((code, body.trim()), (0, "Hello from wharf!"));
    let redirect = ["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"];
    let (_, apex) = curl(
        &example,
        &[&redirect[..], &["http://foobar.com/hello"]].concat(),
    );
    assert_eq!(apex, "308 http://www.foobar.com/hello");
    let (code, page) = curl(&example, &["-f", "http://www.foobar.com/"]);
    assert!(code == 0 && page.contains("<html"), "{code}: {page}");
    let (code, created) = curl(
        &example,
        &[
            "-f",
            "-d",
            r#"{"title": "simple"}"#,
            "http://www.foobar.com/todo",
        ],
    );
    assert!(code == 0 && created.contains("simple"), "{code}: {created}");
    until_body_has(&example, &[], "http://www.foobar.com/todo", "simple");
    down_leaves_nothing(example);
}

#[test]
fn the_secured_stack_serves_https_only_and_lets_each_node_be_reached_only_by_its_client() {
    let _alone = alone();
    let example = Example::up("secured-monitored", "wt-sm-");
    let ca = example.path("certs/wharf-dev-ca.pem");
    let tls = ["--cacert", ca.to_str().unwrap()];
    let (code, body) = curl(
        &example,
        &[&tls[..], &["-f", "https://www.foobar.com/hello"]].concat(),
    );
    assert_eq!((code, body.trim()), (0, "Hello from wharf!"));
    let redirect = ["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"];
    let (_, plain) = curl(
        &example,
        &[&redirect[..], &["http://www.foobar.com/"]].concat(),
    );
    assert_eq!(plain, "308 https://www.foobar.com/");
    let (_, head) = curl(
        &example,
        &[&tls[..], &["-I", "https://www.foobar.com/hello"]].concat(),
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    // Only the balancer reaches the app nodes: wharf closes the client's connection
    // before a byte (curl: empty reply, or reset).
    for app in ["198.18.2.21", "198.18.2.22"] {
        let (code, body) = curl(&example, &[&format!("http://{app}:8080/hello")]);
        assert!(matches!(code, 52 | 56), "{app}: curl exit {code}: {body}");
    }
    // Only the monitoring node reaches the admin listeners.
    let status = ["-o", "/dev/null", "-w", "%{http_code}"];
    let (_, admin) = curl(
        &example,
        &[&status[..], &["http://198.18.2.10:9180/metrics"]].concat(),
    );
    assert_eq!(admin, "403");
    // Only the app nodes reach the databases.
    let password = std::fs::read_to_string(example.path("db-password")).unwrap();
    let login = example.on(
        "client",
        &[
            "mariadb",
            "--no-defaults",
            "-h",
            "198.18.2.31",
            "-u",
            "wharf",
            &format!("-p{}", password.trim()),
            "-e",
            "SELECT 1",
        ],
    );
    let said = String::from_utf8_lossy(&login.stderr);
    assert!(
        !login.status.success() && said.contains("is not allowed to connect"),
        "{said}"
    );
    // Prometheus has every wharf node up.
    let up = example.on(
        "mon",
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "http://198.18.2.90:9090/api/v1/query?query=up",
        ],
    );
    let up: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    let series = up["data"]["result"].as_array().cloned().unwrap_or_default();
    assert_eq!(series.len(), 3, "{up}");
    assert!(series.iter().all(|s| s["value"][1] == "1"), "{up}");
    // A write through the front door reads back.
    let (code, created) = curl(
        &example,
        &[
            &tls[..],
            &[
                "-f",
                "-d",
                r#"{"title": "secured"}"#,
                "https://www.foobar.com/todo",
            ],
        ]
        .concat(),
    );
    assert!(
        code == 0 && created.contains("secured"),
        "{code}: {created}"
    );
    until_body_has(&example, &tls, "https://www.foobar.com/todo", "secured");
    down_leaves_nothing(example);
}

//! The classic stack's designs in `examples/`, each run as a user runs it (`up.sh`
//! builds network namespaces on a virtual switch, with dnsmasq holding the site's zone;
//! the client resolves `www.foobar.com` through it), checked through its front door,
//! then `down.sh` must leave no process and no namespace behind:
//! - `simple-stack`: one node doing everything;
//! - `secured-monitored`: HTTPS only, firewalls letting each node be reached only by
//!   its client, Prometheus scraping every node;
//! - `scale-up`: two balancers sharing a virtual IP through keepalived. While a client
//!   loops on the site, the active balancer drains (`wharf drain`: no request fails),
//!   the active balancer's wharf dies, then the active balancer's whole machine (for
//!   each, the gap until requests succeed again and the failures are printed), and an
//!   app node dies (no GET fails).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wharf_tests::example::Example;
use wharf_tests::poll_until;

/// The scale-up example's site address, and its balancers' admin listeners.
const VIP: &str = "198.18.0.10";
const LB_ADMIN: [&str; 2] = ["198.18.0.11:9180", "198.18.0.12:9180"];
/// Every wait for the stack to settle (a balancer ready, an address taken).
const SETTLE: Duration = Duration::from_secs(30);

/// Balancer `i`'s wharf, started again as up.sh does, back as the backup.
fn restart_balancer(example: &Example, i: usize) {
    let name = format!("lb{}", i + 1);
    let config = example.path(&format!("{name}/wharf.toml"));
    let wharf = wharf_tests::wharf_bin();
    example.restart(
        &name,
        &[
            wharf.as_os_str(),
            "serve".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );
    let ready = example.path(&format!("{name}/ready"));
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
    let keepalived = example.path(&format!("{name}-keepalived.log"));
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

/// Whether balancer `i` has the site's address on its interface.
fn holds(example: &Example, i: usize) -> bool {
    let out = Command::new("ip")
        .args(["-n", &format!("{}lb{}", example.prefix(), i + 1)])
        .args(["-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {VIP}/"))
}

/// The balancer holding the site's address, if exactly one does.
fn holder(example: &Example) -> Option<usize> {
    match (holds(example, 0), holds(example, 1)) {
        (true, false) => Some(0),
        (false, true) => Some(1),
        _ => None,
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

/// While a client loops on the site, `kill` ends active balancer `active`; waits until
/// the other holds the address and serves. Says how long the client got no answer and
/// how many requests failed (each new connection gives up after 0.2 s, so the gap is
/// measured to within that).
fn unplanned(
    example: &Example,
    dir: &Path,
    name: &str,
    active: usize,
    kill: impl FnOnce(),
) -> String {
    assert_eq!(
        holder(example),
        Some(active),
        "lb{} holds the address",
        active + 1
    );
    let client = ClientLoop::start(
        example.prefix(),
        dir,
        name,
        "http://www.foobar.com/hello",
        0.2,
    );
    let killed = now();
    kill();
    poll_until(SETTLE, "the backup takes the address", || {
        match holds(example, 1 - active) {
            true => Ok(()),
            false => Err(()),
        }
    })
    .unwrap();
    client.serves_after(killed, 20);
    let (ok, failed, gap) = client.stop(killed);
    assert!(ok > 0, "nothing served after lb{} died", active + 1);
    format!("back after {gap:.3} s (target 0.5 s), {failed} requests failed, {ok} served")
}

#[test]
fn the_lb_pair_fails_over_and_drains_without_losing_requests() {
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
    let first = holder(&example).expect("one balancer holds the address");

    // Planned: the active balancer drains; its peer takes the address.
    let client = ClientLoop::start(
        example.prefix(),
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
        match holder(&example) {
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
    restart_balancer(&example, first);
    assert_eq!(holder(&example), Some(1 - first), "the address moved back");

    // Unplanned: the active balancer's wharf dies (its keepalived lives on, and learns
    // of it from /healthz); then, with that wharf back as the backup, the other
    // balancer's whole machine dies.
    let second = 1 - first;
    let gap = unplanned(&example, work.path(), "wharf", second, || {
        example.kill(&format!("lb{}.pid", second + 1));
    });
    println!(
        "kill -9 of the active balancer's wharf (lb{}): {gap}",
        second + 1
    );
    restart_balancer(&example, second);
    let gap = unplanned(&example, work.path(), "machine", first, || {
        // Its switch port goes down (the address on a dead machine answers nobody),
        // then its wharf and keepalived get kill -9.
        let port = Command::new("ip")
            .args(["-n", &format!("{}switch", example.prefix())])
            .args(["link", "set", "dev", &format!("lb{}", first + 1), "down"])
            .status()
            .unwrap();
        assert!(port.success(), "taking lb{}'s switch port down", first + 1);
        example.kill(&format!("lb{}-keepalived.pid", first + 1));
        example.kill(&format!("lb{}/keepalived_vrrp.pid", first + 1));
        example.kill(&format!("lb{}.pid", first + 1));
    });
    println!(
        "kill -9 of the active balancer's machine (lb{}): {gap}",
        first + 1
    );

    // An app node dies: the balancer's retries and checks hide it.
    let client = ClientLoop::start(
        example.prefix(),
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

    example.down_leaves_nothing();
}

/// Polls a GET of `url` (with `args` before it) until its body contains `needle`.
fn until_body_has(example: &Example, args: &[&str], url: &str, needle: &str) {
    poll_until(SETTLE, &format!("{url} shows {needle:?}"), || match example
        .curl(&[args, &[url]].concat())
    {
        (0, body) if body.contains(needle) => Ok(()),
        other => Err(other),
    })
    .unwrap();
}

#[test]
fn the_simple_stack_serves_its_site_by_name_and_leaves_nothing_behind() {
    let example = Example::up("simple-stack", "wt-ss-");
    let dig = example.on(
        "client",
        &["dig", "+short", "@198.18.1.53", "www.foobar.com", "A"],
    );
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "198.18.1.10");
    let (code, body) = example.curl(&["-f", "http://www.foobar.com/hello"]);
    assert_eq!((code, body.trim()), (0, "Hello from wharf!"));
    let redirect = ["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"];
    let (_, apex) = example.curl(&[&redirect[..], &["http://foobar.com/hello"]].concat());
    assert_eq!(apex, "308 http://www.foobar.com/hello");
    let (code, page) = example.curl(&["-f", "http://www.foobar.com/"]);
    assert!(code == 0 && page.contains("<html"), "{code}: {page}");
    let (code, created) = example.curl(&[
        "-f",
        "-d",
        r#"{"title": "simple"}"#,
        "http://www.foobar.com/todo",
    ]);
    assert!(code == 0 && created.contains("simple"), "{code}: {created}");
    until_body_has(&example, &[], "http://www.foobar.com/todo", "simple");
    example.down_leaves_nothing();
}

#[test]
fn the_secured_stack_serves_https_only_and_lets_each_node_be_reached_only_by_its_client() {
    let example = Example::up("secured-monitored", "wt-sm-");
    let ca = example.path("certs/wharf-dev-ca.pem");
    let tls = ["--cacert", ca.to_str().unwrap()];
    let (code, body) = example.curl(&[&tls[..], &["-f", "https://www.foobar.com/hello"]].concat());
    assert_eq!((code, body.trim()), (0, "Hello from wharf!"));
    let redirect = ["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"];
    let (_, plain) = example.curl(&[&redirect[..], &["http://www.foobar.com/"]].concat());
    assert_eq!(plain, "308 https://www.foobar.com/");
    let (_, head) = example.curl(&[&tls[..], &["-I", "https://www.foobar.com/hello"]].concat());
    assert!(
        head.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    // Only the balancer reaches the app nodes: wharf closes the client's connection
    // before a byte (curl: empty reply, or reset).
    for app in ["198.18.2.21", "198.18.2.22"] {
        let (code, body) = example.curl(&[&format!("http://{app}:8080/hello")]);
        assert!(matches!(code, 52 | 56), "{app}: curl exit {code}: {body}");
    }
    // Only the monitoring node reaches the admin listeners.
    let status = ["-o", "/dev/null", "-w", "%{http_code}"];
    let (_, admin) = example.curl(&[&status[..], &["http://198.18.2.10:9180/metrics"]].concat());
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
    let (code, created) = example.curl(
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
    example.down_leaves_nothing();
}

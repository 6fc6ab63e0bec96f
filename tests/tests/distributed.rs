//! The distributed example (`examples/distributed`), run as a user runs it: `up.sh`
//! starts a load balancer, two app nodes and a MariaDB primary with a replica; requests
//! through the balancer reach both app nodes and the database, keep succeeding when an
//! app node dies, and `down.sh` leaves nothing running.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use wharf_tests::{HttpClient, poll_until, poll_until_async, repo_root};

/// The example's nodes' addresses here: beside its default (127.0.10.x) and the
/// harness's (127.0.0.x), so neither a running example nor other tests are in the way.
const NET: &str = "127.0.11";
const LB: &str = "127.0.11.1";
const APPS: [&str; 2] = ["127.0.11.11", "127.0.11.12"];
const DATABASES: [&str; 2] = ["127.0.11.21", "127.0.11.22"];
const NODES: [&str; 5] = ["lb", "app-1", "app-2", "db-primary", "db-replica"];

/// up.sh creates the databases and waits for every node (the guests and wharf are built
/// before it starts); on a machine busy with other builds that has taken two minutes.
const UP_TIMEOUT: Duration = Duration::from_secs(300);
/// down.sh gives each node a minute before it kills it.
const DOWN_TIMEOUT: Duration = Duration::from_secs(150);
/// Replication to the replica, and the nodes' log writer threads, are that quick.
const CATCH_UP: Duration = Duration::from_secs(10);

/// The example, up; dropping it runs down.sh, should the test fail half-way.
struct Example {
    run: tempfile::TempDir,
    /// up.sh's and down.sh's output, quoted when they fail.
    output: tempfile::TempDir,
    down: bool,
    /// One example at a time: they take the same addresses.
    _alone: std::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Example {
    fn up() -> Self {
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        wharf_tests::guests();
        let example = Example {
            run: tempfile::tempdir().unwrap(),
            output: tempfile::tempdir().unwrap(),
            down: false,
            _alone: alone,
        };
        let status = example.script("up.sh", UP_TIMEOUT);
        assert!(
            status.success(),
            "up.sh failed ({status}):\n{}",
            example.log("up.sh")
        );
        example
    }

    fn down(&mut self) {
        self.down = true;
        let status = self.script("down.sh", DOWN_TIMEOUT);
        assert!(
            status.success(),
            "down.sh failed ({status}):\n{}",
            self.log("down.sh")
        );
    }

    /// Runs the example's `name` to its end, within `timeout`.
    fn script(&self, name: &str, timeout: Duration) -> ExitStatus {
        let out = std::fs::File::create(self.output.path().join(name)).unwrap();
        let mut child: Child = Command::new(repo_root().join("examples/distributed").join(name))
            .env("WHARF", wharf_tests::wharf_bin())
            .env("WHARF_EXAMPLE_NET", NET)
            .env("WHARF_EXAMPLE_RUN", self.run.path())
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
            let _ = child.wait();
            panic!("{e:#}:\n{}", self.log(name))
        })
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.output.path().join(name)).unwrap_or_default()
    }

    fn path(&self, file: &str) -> PathBuf {
        self.run.path().join(file)
    }

    fn pid(&self, node: &str) -> u32 {
        let file = self.path(&format!("{node}.pid"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        text.trim().parse().unwrap()
    }

    /// How many requests for `path` the node's access log shows.
    fn served(&self, node: &str, path: &str) -> usize {
        let log = std::fs::read_to_string(self.path(&format!("{node}.log"))).unwrap_or_default();
        let needle = format!(r#""path":"{path}""#);
        log.lines()
            .filter(|line| line.contains(r#""target":"access""#) && line.contains(&needle))
            .count()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if !self.down {
            self.down = true;
            let status = self.script("down.sh", DOWN_TIMEOUT);
            eprintln!("down.sh after a failure: {status}\n{}", self.log("down.sh"));
        }
    }
}

/// The process runs (a zombie, whose parent has not reaped it yet, has stopped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        !state.starts_with('Z') && !state.starts_with('X')
    })
}

fn kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid}: {status}");
}

fn id_of(body: &str) -> u64 {
    let todo: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    todo["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_spreads_requests_over_both_app_nodes_keeps_serving_without_one_and_down_stops_every_node()
 {
    let mut example = Example::up();
    let pids: Vec<(&str, u32)> = NODES.iter().map(|n| (*n, example.pid(n))).collect();
    let client = HttpClient::http1();
    let lb = |path: &str| format!("http://{LB}:8080{path}");

    // A write through the balancer goes to the primary; reads of it are answered by
    // whichever app node gets them, from the replica once it has the row.
    let created = client
        .post_json(&lb("/todo"), r#"{"title": "through the balancer"}"#)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{created:?}");
    let id = id_of(&created.body);
    let url = lb(&format!("/todo/{id}"));
    let read = poll_until_async(CATCH_UP, "the todo reads back", async || {
        match client.get(&url).await {
            Ok(reply) if reply.status == 200 => Ok(reply),
            other => Err(other.map(|r| (r.status, r.body))),
        }
    })
    .await
    .unwrap();
    assert!(read.body.contains("through the balancer"), "{read:?}");

    for _ in 0..10 {
        let reply = client.get(&lb("/todo")).await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(reply.body.contains("through the balancer"), "{reply:?}");
    }
    let shares = poll_until(CATCH_UP, "both app nodes log GET /todo", || {
        let shares = [
            example.served("app-1", "/todo"),
            example.served("app-2", "/todo"),
        ];
        match shares.iter().all(|&n| n > 0) {
            true => Ok(shares),
            false => Err(shares),
        }
    })
    .unwrap();
    eprintln!("GET and POST /todo per app node: {shares:?}");

    // App node 1 dies without a word: the balancer sends its share to node 2, reads and
    // writes alike, and no client sees a failure.
    let app1 = example.pid("app-1");
    kill(app1);
    poll_until(CATCH_UP, "app-1 has exited", || match alive(app1) {
        false => Ok(()),
        true => Err("alive"),
    })
    .unwrap();
    let before = example.served("app-2", "/todo");
    for i in 0..20 {
        let reply = client.get(&lb("/todo")).await.unwrap();
        assert_eq!(reply.status, 200, "GET {i} after app-1 died: {reply:?}");
    }
    let created = client
        .post_json(&lb("/todo"), r#"{"title": "with one app node"}"#)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{created:?}");
    // Its failing checks of /readyz take it out of rotation (interval 0.5 s × fall 2).
    let app1_address = format!("http://{}:8080", APPS[0]);
    let state = poll_until_async(CATCH_UP, "the balancer shows app-1 out", async || {
        let status = client.get(&format!("http://{LB}:9180/upstreams")).await;
        let state = status.ok().and_then(|reply| {
            let status: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
            let servers = status["upstreams"][0]["servers"].as_array()?.clone();
            let app1 = servers
                .iter()
                .find(|s| s["address"] == app1_address.as_str())?;
            Some(app1["state"].as_str()?.to_owned())
        });
        match state.as_deref() {
            Some("down" | "ejected") => Ok(state),
            _ => Err(state),
        }
    })
    .await
    .unwrap();
    eprintln!("app-1 in the balancer's status: {state:?}");
    poll_until(CATCH_UP, "app-2 logs every request", || {
        match example.served("app-2", "/todo") - before {
            21.. => Ok(()),
            n => Err(n),
        }
    })
    .unwrap();

    example.down();
    for (node, pid) in pids {
        assert!(!alive(pid), "{node} (pid {pid}) still runs after down.sh");
    }
    let ports = [(LB, 8080), (LB, 9180)]
        .into_iter()
        .chain(APPS.iter().flat_map(|ip| [(*ip, 8080), (*ip, 9180)]))
        .chain(DATABASES.iter().map(|ip| (*ip, 3306)));
    for (ip, port) in ports {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        assert!(
            refused.is_err(),
            "{addr} still accepts connections after down.sh"
        );
    }
    assert!(
        Path::new(&example.path("app-2.log")).exists(),
        "down.sh keeps the logs"
    );
}

/// `node`'s command line, to start it again as up.sh did.
fn command_line(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    raw.split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

impl Example {
    /// Kills `node` (SIGKILL) and waits until it has gone; returns its command line.
    fn kill_node(&self, node: &str) -> Vec<String> {
        let pid = self.pid(node);
        let command = command_line(pid);
        kill(pid);
        poll_until(CATCH_UP, &format!("{node} has exited"), || {
            match alive(pid) {
                false => Ok(()),
                true => Err("alive"),
            }
        })
        .unwrap();
        command
    }

    /// Starts `node` again with `command`, as up.sh did, for down.sh to stop.
    fn restart(&self, node: &str, command: &[String]) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(&format!("{node}.log")))
            .unwrap();
        let child = Command::new("setsid")
            .args(command)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(self.path(&format!("{node}.pid")), child.id().to_string()).unwrap();
        // Reaped by whoever is left when it ends; down.sh stops it by its pid file.
        std::mem::forget(child);
    }
}

/// GETs `url` `count` times; returns the answers that were not 200.
async fn failed_reads(client: &HttpClient, url: &str, count: usize) -> Vec<String> {
    let mut failed = Vec::new();
    for _ in 0..count {
        match client.get(url).await {
            Ok(reply) if reply.status == 200 => {}
            Ok(reply) => failed.push(format!("{} {}", reply.status, reply.body)),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_without_the_replica_or_the_primary_and_no_acknowledged_write_is_lost() {
    let mut example = Example::up();
    let client = HttpClient::http1();
    let lb = |path: &str| format!("http://{LB}:8080{path}");
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let created = client
            .post_json(&lb("/todo"), &format!(r#"{{"title": "before {i}"}}"#))
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{created:?}");
        acknowledged.push(id_of(&created.body));
    }

    // The replica dies: its reads go to the primary.
    let replica = example.kill_node("db-replica");
    let failed = failed_reads(&client, &lb("/todo"), 50).await;
    println!("replica killed: {} of 50 reads failed", failed.len());
    assert!(
        failed.is_empty(),
        "reads failed without the replica: {failed:?}"
    );
    example.restart("db-replica", &replica);

    // The primary dies: reads go on from the replica once it is back, writes get 503.
    let last = lb(&format!("/todo/{}", acknowledged[4]));
    poll_until_async(CATCH_UP, "the replica is back", async || {
        match client.get(&last).await {
            Ok(reply) if reply.status == 200 => Ok(()),
            other => Err(other.map(|r| r.status)),
        }
    })
    .await
    .unwrap();
    // Each app node has the replica back in rotation.
    for app in APPS {
        let url = format!("http://{app}:9180/status.json");
        poll_until_async(
            CATCH_UP * 3,
            &format!("{app} reads from the replica again"),
            async || {
                let status = client.get(&url).await.map_err(|e| e.to_string())?;
                let status: serde_json::Value =
                    serde_json::from_str(&status.body).map_err(|e| e.to_string())?;
                let replica = status["databases"]
                    .as_array()
                    .and_then(|nodes| nodes.iter().find(|n| n["role"] == "replica"))
                    .cloned();
                match replica {
                    Some(node) if node["in_rotation"] == true => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
        .unwrap();
    }
    let primary = example.kill_node("db-primary");
    let killed = std::time::Instant::now();
    let refused = poll_until_async(CATCH_UP, "a write gets 503", async || {
        match client
            .post_json(&lb("/todo"), r#"{"title": "while down"}"#)
            .await
        {
            Ok(reply) if reply.status == 503 => Ok(reply),
            Ok(reply) if reply.status == 201 => {
                acknowledged.push(id_of(&reply.body));
                Err(201)
            }
            other => Err(other.map_or(0, |r| r.status)),
        }
    })
    .await
    .unwrap();
    println!(
        "primary killed: writes answered 503 after {:.2} s (target 2 s)",
        killed.elapsed().as_secs_f64()
    );
    assert!(refused.headers.contains_key("retry-after"), "{refused:?}");
    let failed = failed_reads(&client, &last, 50).await;
    println!("primary down: {} of 50 reads failed", failed.len());
    if !failed.is_empty() {
        for node in ["app-1", "app-2"] {
            let log = std::fs::read_to_string(example.path(&format!("{node}.log"))).unwrap();
            let said: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(r#""target":"access""#))
                .collect();
            eprintln!(
                "{node}:\n{}",
                said[said.len().saturating_sub(15)..].join("\n")
            );
        }
    }
    assert!(
        failed.is_empty(),
        "reads failed without the primary: {failed:?}"
    );

    // The primary is back: writes go on, and every write acknowledged is there.
    example.restart("db-primary", &primary);
    poll_until_async(
        CATCH_UP * 3,
        "a write succeeds again",
        async || match client
            .post_json(&lb("/todo"), r#"{"title": "after"}"#)
            .await
        {
            Ok(reply) if reply.status == 201 => Ok(()),
            other => Err(other.map_or(0, |r| r.status)),
        },
    )
    .await
    .unwrap();
    for id in &acknowledged {
        let url = lb(&format!("/todo/{id}"));
        poll_until_async(
            CATCH_UP,
            &format!("todo {id} reads back"),
            async || match client.get(&url).await {
                Ok(reply) if reply.status == 200 => Ok(()),
                other => Err(other.map(|r| r.status)),
            },
        )
        .await
        .unwrap();
    }
    example.down();
}

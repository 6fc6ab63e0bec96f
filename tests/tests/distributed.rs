//! The distributed example (`examples/distributed`), run as a user runs it: `up.sh`
//! starts a load balancer, two app nodes and a MariaDB primary with a replica, each in
//! a network namespace, with dnsmasq holding the site's zone. Requests from the client
//! namespace, by name, reach both app nodes and the database through the balancer, keep
//! succeeding when an app node, the replica or the primary dies (writes get 503 while
//! the primary is down, and no acknowledged write is lost), and `down.sh` leaves
//! nothing behind.

use std::time::{Duration, Instant};
use wharf_tests::example::{CurlReply, Example, alive};
use wharf_tests::poll_until;

/// This test's prefix, so a copy of the example a user runs is not in the way.
const PREFIX: &str = "wt-di-";
const SITE: &str = "http://www.foobar.com";
const APPS: [&str; 2] = ["198.18.3.21", "198.18.3.22"];
/// Replication to the replica, and the nodes' log writer threads, are that quick.
const CATCH_UP: Duration = Duration::from_secs(10);

fn get(example: &Example, path: &str) -> CurlReply {
    example.http(&[], &format!("{SITE}{path}"))
}

fn post(example: &Example, path: &str, json: &str) -> CurlReply {
    let args = ["-H", "content-type: application/json", "-d", json];
    example.http(&args, &format!("{SITE}{path}"))
}

fn id_of(reply: &CurlReply) -> u64 {
    let todo: serde_json::Value =
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {reply:?}"));
    todo["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {reply:?}"))
}

/// A JSON document from an admin listener, fetched from the client namespace.
fn admin_json(example: &Example, url: &str) -> Option<serde_json::Value> {
    let (code, body) = example.curl(&[url]);
    (code == 0).then(|| serde_json::from_str(&body).ok())?
}

/// How many requests for `path` the node's access log shows.
fn served(example: &Example, node: &str, path: &str) -> usize {
    let log = std::fs::read_to_string(example.path(&format!("{node}.log"))).unwrap_or_default();
    let needle = format!(r#""path":"{path}""#);
    log.lines()
        .filter(|line| line.contains(r#""target":"access""#) && line.contains(&needle))
        .count()
}

/// The balancer's checks of the app nodes take a node out after this long (interval
/// 0.5 s × fall 2), three times over.
const CHECKS_ACT: Duration = Duration::from_secs(3);

/// GETs `path` at least `count` times, and until `CHECKS_ACT` has passed since `since`
/// (so the answers span the time the balancer's checks take to act on what happened);
/// returns the answers that were not 200.
fn failed_reads(example: &Example, path: &str, count: usize, since: Instant) -> Vec<String> {
    let mut failed = Vec::new();
    let mut done = 0;
    while done < count || since.elapsed() < CHECKS_ACT {
        let reply = get(example, path);
        if reply.status != 200 {
            failed.push(format!("{} {}", reply.status, reply.body));
        }
        done += 1;
    }
    failed
}

#[test]
fn the_balancer_spreads_requests_over_both_app_nodes_keeps_serving_without_one_and_down_stops_every_node()
 {
    let example = Example::up("distributed", PREFIX);
    let dig = example.on(
        "client",
        &["dig", "+short", "@198.18.3.53", "www.foobar.com", "A"],
    );
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "198.18.3.10");
    let apex = example.http(&[], "http://foobar.com/hello");
    assert_eq!(apex.status, 308, "{apex:?}");
    assert!(
        apex.head.contains("location: http://www.foobar.com/hello"),
        "{apex:?}"
    );

    // A write through the balancer goes to the primary; reads of it are answered by
    // whichever app node gets them, from the replica once it has the row.
    let created = post(&example, "/todo", r#"{"title": "through the balancer"}"#);
    assert_eq!(created.status, 201, "{created:?}");
    let path = format!("/todo/{}", id_of(&created));
    let read = poll_until(CATCH_UP, "the todo reads back", || {
        match get(&example, &path) {
            reply if reply.status == 200 => Ok(reply),
            other => Err(other),
        }
    })
    .unwrap();
    assert!(read.body.contains("through the balancer"), "{read:?}");

    for _ in 0..10 {
        let reply = get(&example, "/todo");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(reply.body.contains("through the balancer"), "{reply:?}");
    }
    let shares = poll_until(CATCH_UP, "both app nodes log GET /todo", || {
        let shares = [
            served(&example, "app1", "/todo"),
            served(&example, "app2", "/todo"),
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
    example.kill_node("app1");
    let before = served(&example, "app2", "/todo");
    for i in 0..20 {
        let reply = get(&example, "/todo");
        assert_eq!(reply.status, 200, "GET {i} after app1 died: {reply:?}");
    }
    let created = post(&example, "/todo", r#"{"title": "with one app node"}"#);
    assert_eq!(created.status, 201, "{created:?}");
    // Its failing checks of /readyz take it out of rotation (interval 0.5 s × fall 2).
    let app1 = format!("http://{}:8080", APPS[0]);
    let state = poll_until(CATCH_UP, "the balancer shows app1 out", || {
        let status = admin_json(&example, "http://198.18.3.10:9180/upstreams");
        let state = status.and_then(|status| {
            let servers = status["upstreams"][0]["servers"].as_array()?.clone();
            let node = servers.iter().find(|s| s["address"] == app1.as_str())?;
            Some(node["state"].as_str()?.to_owned())
        });
        match state.as_deref() {
            Some("down" | "ejected") => Ok(state),
            _ => Err(state),
        }
    })
    .unwrap();
    eprintln!("app1 in the balancer's status: {state:?}");
    poll_until(CATCH_UP, "app2 logs every request", || {
        match served(&example, "app2", "/todo") - before {
            21.. => Ok(()),
            n => Err(n),
        }
    })
    .unwrap();

    let pids: Vec<u32> = ["lb", "app2", "db1", "db2", "dns"]
        .iter()
        .map(|node| example.pid(node))
        .collect();
    example.down_leaves_nothing();
    assert!(pids.iter().all(|pid| !alive(*pid)), "{pids:?}");
}

#[test]
fn reads_go_on_without_the_replica_or_the_primary_and_no_acknowledged_write_is_lost() {
    let example = Example::up("distributed", PREFIX);
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let created = post(&example, "/todo", &format!(r#"{{"title": "before {i}"}}"#));
        assert_eq!(created.status, 201, "{created:?}");
        acknowledged.push(id_of(&created));
    }

    // The replica dies: its reads go to the primary.
    let replica = example.kill_node("db2");
    let failed = failed_reads(&example, "/todo", 50, Instant::now());
    println!("replica killed: {} reads failed", failed.len());
    assert!(
        failed.is_empty(),
        "reads failed without the replica: {failed:?}"
    );
    example.restart("db2", &replica);

    // The primary dies: reads go on from the replica once it is back, writes get 503.
    let last = format!("/todo/{}", acknowledged[4]);
    poll_until(CATCH_UP, "the replica is back", || {
        match get(&example, &last) {
            reply if reply.status == 200 => Ok(()),
            other => Err(other),
        }
    })
    .unwrap();
    // Each app node has the replica back in rotation.
    for app in APPS {
        let url = format!("http://{app}:9180/status.json");
        poll_until(
            CATCH_UP * 3,
            &format!("{app} reads from the replica again"),
            || {
                let replica = admin_json(&example, &url).and_then(|status| {
                    let nodes = status["databases"].as_array()?.clone();
                    nodes.into_iter().find(|n| n["role"] == "replica")
                });
                match replica {
                    Some(node) if node["in_rotation"] == true => Ok(()),
                    other => Err(other),
                }
            },
        )
        .unwrap();
    }
    let primary = example.kill_node("db1");
    let killed = Instant::now();
    let refused = poll_until(CATCH_UP, "a write gets 503", || {
        match post(&example, "/todo", r#"{"title": "while down"}"#) {
            reply if reply.status == 503 => Ok(reply),
            reply if reply.status == 201 => {
                acknowledged.push(id_of(&reply));
                Err(reply)
            }
            other => Err(other),
        }
    })
    .unwrap();
    println!(
        "primary killed: writes answered 503 after {:.2} s (target 2 s)",
        killed.elapsed().as_secs_f64()
    );
    assert!(refused.head.contains("\r\nretry-after:"), "{refused:?}");
    let failed = failed_reads(&example, &last, 50, killed);
    println!("primary down: {} reads failed", failed.len());
    if !failed.is_empty() {
        for node in ["app1", "app2"] {
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
    example.restart("db1", &primary);
    poll_until(CATCH_UP * 3, "a write succeeds again", || {
        match post(&example, "/todo", r#"{"title": "after"}"#) {
            reply if reply.status == 201 => Ok(()),
            other => Err(other),
        }
    })
    .unwrap();
    for id in &acknowledged {
        let path = format!("/todo/{id}");
        poll_until(CATCH_UP, &format!("todo {id} reads back"), || {
            match get(&example, &path) {
                reply if reply.status == 200 => Ok(()),
                other => Err(other),
            }
        })
        .unwrap();
    }
    example.down_leaves_nothing();
}

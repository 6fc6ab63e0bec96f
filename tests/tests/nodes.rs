//! The harness's many-node side: nodes on their own loopback addresses, every address a
//! node printed, and a node killed and restarted where it was.

use std::collections::HashSet;
use std::time::Duration;
use wharf_tests::{HttpClient, Wharf, apps_dir, next_loopback_ip, wait_for_status};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_refuses_connections_while_the_others_serve_and_serves_again_where_it_was() {
    let apps = apps_dir(&["hello"]);
    let mut nodes: Vec<Wharf> = (0..3)
        .map(|_| Wharf::builder(apps.path()).start())
        .collect();
    let ips: HashSet<_> = nodes.iter().map(|n| n.addr.ip()).collect();
    assert_eq!(ips.len(), 3, "nodes share an address: {ips:?}");
    let client = HttpClient::http1();
    for node in &nodes {
        assert_eq!(client.status(&node.url("/hello")).await, 200);
    }

    let before = nodes[1].addr;
    nodes[1].kill();
    let refused = tokio::net::TcpStream::connect(before).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    for node in [&nodes[0], &nodes[2]] {
        assert_eq!(client.status(&node.url("/hello")).await, 200);
    }

    nodes[1].restart();
    assert_eq!(
        nodes[1].addr, before,
        "a balancer's config would name the old address"
    );
    // A fresh client: the pooled connection to the killed process is dead.
    let reply = wait_for_status(
        &HttpClient::http1(),
        &nodes[1].url("/hello"),
        200,
        5 * SECOND,
    )
    .await
    .unwrap();
    assert_eq!(reply.body, "Hello from wharf!\n");
    for node in &nodes {
        assert_eq!(client.status(&node.url("/hello")).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reports_every_address_it_listens_on_in_order() {
    let apps = apps_dir(&["hello"]);
    let (second, admin) = (next_loopback_ip(), next_loopback_ip());
    let config =
        format!("[[listener]]\naddress = \"{second}:0\"\n\n[admin]\naddress = \"{admin}:0\"\n");
    let node = Wharf::builder(apps.path()).config(&config).start();
    assert_eq!(node.http.len(), 2, "{}", node.banner);
    assert!(node.https.is_empty(), "{}", node.banner);
    assert_eq!(node.addr, node.http[0]);
    let client = HttpClient::http1();
    for addr in &node.http {
        let url = format!("http://{addr}/hello");
        assert_eq!(client.status(&url).await, 200, "{url}");
    }
    let admin_addr = node
        .admin
        .unwrap_or_else(|| panic!("no admin in {}", node.banner));
    assert_eq!(admin_addr.ip(), admin);
    let healthz = client
        .get(&format!("http://{admin_addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(healthz.status, 200);
    assert!(node.config.as_ref().is_some_and(|c| c.exists()));
}

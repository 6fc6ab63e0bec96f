//! Serving apps from a directory: routing, the JSON API, both HTTP versions, the
//! startup banner, and a guest built without the SDK.

use std::time::Duration;
use wharf_tests::{HttpClient, Wharf, apps_dir, guests, raw_exchange};

#[tokio::test]
async fn routes_by_longest_prefix_and_404s_the_rest() {
    let dir = apps_dir(&["hello", "api"]);
    // index.wasm serves "/"; the raw guest answers any path with what it saw.
    std::fs::copy(guests().wasm("raw"), dir.path().join("index.wasm")).unwrap();
    let wharf = Wharf::start(dir.path());
    let client = HttpClient::http1();

    let hello = client.get(&wharf.url("/hello")).await.unwrap();
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "Hello from wharf!\n")
    );
    assert!(hello.headers.contains_key("x-request-id"));
    let below = client
        .get(&wharf.url("/hello/deeper/path?x=1"))
        .await
        .unwrap();
    assert_eq!(below.body, "Hello from wharf!\n");

    // Not /hello's: falls through to index, which sees the full path.
    let other = client.get(&wharf.url("/helloworld")).await.unwrap();
    assert_eq!(other.body, "raw guest saw GET /helloworld");
    let root = client.get(&wharf.url("/")).await.unwrap();
    assert_eq!(root.body, "raw guest saw GET /");
}

#[tokio::test]
async fn no_matching_app_is_404() {
    let dir = apps_dir(&["hello"]);
    let wharf = Wharf::start(dir.path());
    let reply = HttpClient::http1()
        .get(&wharf.url("/nothing-here"))
        .await
        .unwrap();
    assert_eq!(reply.status, 404);
    assert!(
        reply.body.contains("nothing on this site serves this path"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn banner_has_real_port_and_app_table() {
    let dir = apps_dir(&["hello", "api"]);
    let wharf = Wharf::start(dir.path());
    assert!(
        wharf.banner.starts_with("listening on http://"),
        "{}",
        wharf.banner
    );
    assert_ne!(wharf.addr.port(), 0);
    let url = wharf.url("/hello");
    assert!(wharf.banner.contains(&url), "{}", wharf.banner);
    assert!(
        wharf.banner.contains(&wharf.url("/api")),
        "{}",
        wharf.banner
    );
}

#[tokio::test]
async fn json_api_routes_params_and_echo() {
    let dir = apps_dir(&["api"]);
    std::fs::write(
        dir.path().join("api.toml"),
        "[variables]\ngreeting = \"Ahoy\"\n",
    )
    .unwrap();
    let wharf = Wharf::start(dir.path());
    let client = HttpClient::http1();

    let list = client.get(&wharf.url("/api/books")).await.unwrap();
    assert_eq!(list.status, 200);
    assert_eq!(list.headers["content-type"], "application/json");
    let books: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    assert_eq!(books.as_array().unwrap().len(), 3);

    let one: serde_json::Value =
        serde_json::from_str(&client.get(&wharf.url("/api/books/2")).await.unwrap().body).unwrap();
    assert_eq!(one["title"], "Dune");
    assert_eq!(
        client
            .get(&wharf.url("/api/books/99"))
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        client.get(&wharf.url("/api/nope")).await.unwrap().status,
        404
    );
    let wrong_method = client
        .send("DELETE", &wharf.url("/api/books"), None, "")
        .await
        .unwrap();
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers["allow"], "GET");

    let doc = r#"{"nested":{"list":[1,2,3],"text":"ünïcödé"},"n":null}"#;
    let echo = client
        .post_json(&wharf.url("/api/echo"), doc)
        .await
        .unwrap();
    assert_eq!(echo.status, 200);
    let sent: serde_json::Value = serde_json::from_str(doc).unwrap();
    let got: serde_json::Value = serde_json::from_str(&echo.body).unwrap();
    assert_eq!(sent, got);

    let bad = client
        .post_json(&wharf.url("/api/echo"), "{not json")
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("invalid JSON"), "{}", bad.body);

    let greet = client
        .post_json(&wharf.url("/api/greet"), r#"{"name":"Ada"}"#)
        .await
        .unwrap();
    assert_eq!(greet.status, 201);
    let greet: serde_json::Value = serde_json::from_str(&greet.body).unwrap();
    assert_eq!(greet["message"], "Ahoy, Ada!");
}

#[tokio::test]
async fn http2_prior_knowledge_and_http1_keep_alive() {
    let dir = apps_dir(&["hello", "api"]);
    let wharf = Wharf::start(dir.path());

    let h2 = HttpClient::http2();
    let reply = h2.get(&wharf.url("/hello")).await.unwrap();
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.body, "Hello from wharf!\n");
    let echo = h2
        .post_json(&wharf.url("/api/echo"), r#"{"a":1}"#)
        .await
        .unwrap();
    assert_eq!(echo.body, r#"{"a":1}"#);

    // Several requests down one HTTP/1.1 connection.
    let raw = raw_exchange(
        wharf.addr,
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let h1 = HttpClient::http1();
    for _ in 0..20 {
        assert_eq!(h1.get(&wharf.url("/hello")).await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn host_header_must_be_present_once() {
    let dir = apps_dir(&["hello"]);
    let wharf = Wharf::start(dir.path());
    let none = raw_exchange(wharf.addr, b"GET /hello HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    let two = raw_exchange(
        wharf.addr,
        b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
}

#[tokio::test]
async fn guest_without_sdk_runs_unmodified_in_the_sandbox() {
    let dir = apps_dir(&["raw"]);
    let wharf = Wharf::start(dir.path());
    let client = HttpClient::http1();
    let reply = client.get(&wharf.url("/raw")).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "raw guest saw GET /raw")
    );

    // It imports wasi:filesystem and wasi:sockets through std, but gets neither.
    let fs = client.get(&wharf.url("/raw/fs")).await.unwrap();
    assert!(fs.body.starts_with("fs: denied"), "{}", fs.body);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let net = client
        .get(&wharf.url(&format!("/raw/net?addr={}", listener.local_addr().unwrap())))
        .await
        .unwrap();
    assert!(net.body.starts_with("net: denied"), "{}", net.body);
    let env = client.get(&wharf.url("/raw/env")).await.unwrap();
    assert_eq!(env.body, "env: 0");

    // Its println! lands in wharf's log, tagged.
    let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
    wharf
        .wait_for_log(
            &["raw guest handled /raw", "app=raw", &id],
            Duration::from_secs(5),
        )
        .unwrap();
}

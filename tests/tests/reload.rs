//! Hot reload under load, and the on-disk compile cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wharf_tests::{HttpClient, Wharf, apps_dir, guests, poll_until_async, wait_for_status};

const RELOAD: Duration = Duration::from_secs(10);

/// Writes `bytes` to `path` the way `cp` does: in place, not by rename.
fn write_in_place(path: &std::path::Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_replace_remove_and_bad_files_under_load_with_zero_failures() {
    let dir = apps_dir(&["hello"]);
    let wharf = Wharf::start(dir.path());
    let client = HttpClient::http1();
    let hello_url = wharf.url("/hello");

    // Two clients hammer /hello for the whole test; every answer must be a 200 from
    // one version or the other.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (client, url, stop, ok) = (client.clone(), hello_url.clone(), stop.clone(), ok.clone());
        loops.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut failures = Vec::new();
            for _ in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                match client.get(&url).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("{} {}", r.status, r.body)),
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            failures
        }));
    }

    // Add: a new file is served without a restart.
    std::fs::copy(guests().wasm("api"), dir.path().join("api.wasm")).unwrap();
    let added = Instant::now();
    wait_for_status(&client, &wharf.url("/api/books/1"), 200, RELOAD)
        .await
        .unwrap();
    eprintln!("added app served after {:?}", added.elapsed());

    // Replace: hello.wasm becomes another component; requests switch over.
    let hello_path = dir.path().join("hello.wasm");
    write_in_place(&hello_path, &std::fs::read(guests().wasm("raw")).unwrap());
    poll_until_async(RELOAD, "/hello is served by the replacement", async || {
        let body = client.get(&hello_url).await.unwrap().body;
        (body == "raw guest saw GET /hello")
            .then_some(())
            .ok_or(body)
    })
    .await
    .unwrap();

    // Garbage and a truncated component: reported, and the last good version stays.
    write_in_place(&hello_path, b"this is not a wasm file");
    wharf
        .wait_for_log(&["hello.wasm", "not a WebAssembly file"], RELOAD)
        .unwrap();
    let whole = std::fs::read(guests().wasm("hello")).unwrap();
    write_in_place(&hello_path, &whole[..whole.len() / 2]);
    wharf
        .wait_for_log(&["hello.wasm", "not a valid component"], RELOAD)
        .unwrap();
    assert_eq!(
        client.get(&hello_url).await.unwrap().body,
        "raw guest saw GET /hello"
    );

    // A core module (not a component) is named as such.
    write_in_place(&dir.path().join("core.wasm"), b"\0asm\x01\0\0\0");
    wharf
        .wait_for_log(&["core.wasm", "core wasm module"], RELOAD)
        .unwrap();

    // The full file again, then swapped in by rename as deploy tools do.
    let staged = dir.path().join(".hello.wasm.partial");
    std::fs::write(&staged, &whole).unwrap();
    std::fs::rename(&staged, &hello_path).unwrap();
    poll_until_async(RELOAD, "/hello is served by the renamed file", async || {
        let body = client.get(&hello_url).await.unwrap().body;
        (body == "Hello from wharf!\n").then_some(()).ok_or(body)
    })
    .await
    .unwrap();

    // Remove: the app stops being served.
    std::fs::remove_file(dir.path().join("api.wasm")).unwrap();
    wait_for_status(&client, &wharf.url("/api/books/1"), 404, RELOAD)
        .await
        .unwrap();

    stop.store(true, Ordering::Relaxed);
    for handle in loops {
        let failures = handle.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during reload: {failures:?}"
        );
    }
    let served = ok.load(Ordering::Relaxed);
    assert!(served > 50, "the load loop barely ran ({served} requests)");
    eprintln!("{served} requests served during reloads, none failed");
}

#[tokio::test]
async fn manifest_change_reloads_the_app_and_bad_manifest_keeps_the_old_one() {
    let dir = apps_dir(&["api"]);
    let wharf = Wharf::start(dir.path());
    let client = HttpClient::http1();
    let greet = wharf.url("/api/greet");
    let greeting = |r: wharf_tests::Reply| -> String {
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["message"].to_string()
    };
    assert_eq!(
        greeting(client.post_json(&greet, r#"{"name":"x"}"#).await.unwrap()),
        "\"Hello, x!\""
    );

    std::fs::write(
        dir.path().join("api.toml"),
        "[variables]\ngreeting = \"Hej\"\n",
    )
    .unwrap();
    poll_until_async(RELOAD, "the new manifest's greeting is used", async || {
        let said = greeting(client.post_json(&greet, r#"{"name":"x"}"#).await.unwrap());
        (said == "\"Hej, x!\"").then_some(()).ok_or(said)
    })
    .await
    .unwrap();

    std::fs::write(dir.path().join("api.toml"), "rutes = [\"/x\"]\n").unwrap();
    let line = wharf.wait_for_log(&["api.toml", "rutes"], RELOAD).unwrap();
    assert!(line.contains("line 1"), "{line}");
    assert_eq!(
        greeting(client.post_json(&greet, r#"{"name":"x"}"#).await.unwrap()),
        "\"Hej, x!\""
    );
}

#[tokio::test]
async fn restart_with_unchanged_apps_uses_the_compile_cache() {
    let cache = tempfile::tempdir().unwrap();
    let dir = apps_dir(&["hello", "api"]);
    let envs = [("WHARF_CACHE_DIR", cache.path().as_os_str())];
    let first = Wharf::start_with(dir.path(), &envs, &[]);
    assert_eq!(
        first.banner.matches("ready (compiled, baseline)").count(),
        2,
        "{}",
        first.banner
    );
    for app in ["hello", "api"] {
        let line = format!("{app}: optimised build serving");
        first.wait_for_log(&[&line], 3 * RELOAD).unwrap();
    }
    first.stop();
    // The optimised artifacts are cached: the baseline is skipped.
    let second = Wharf::start_with(dir.path(), &envs, &[]);
    assert_eq!(
        second.banner.matches("ready (cached, optimised)").count(),
        2,
        "{}",
        second.banner
    );
    let reply = HttpClient::http1()
        .get(&second.url("/hello"))
        .await
        .unwrap();
    assert_eq!(reply.body, "Hello from wharf!\n");

    // A corrupt cache entry is ignored and rebuilt, not fatal.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"corrupt").unwrap();
    }
    second.stop();
    let third = Wharf::start_with(dir.path(), &envs, &[]);
    assert_eq!(
        third.banner.matches("ready (compiled, baseline)").count(),
        2,
        "{}",
        third.banner
    );
}

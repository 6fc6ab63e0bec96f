//! Tiered compilation: a new or changed app serves from the baseline compiler's code at
//! once and the optimised build takes over in place; what Winch cannot compile goes
//! to Cranelift; `[apps] tiered = false` never serves the baseline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wharf_tests::{HttpClient, Wharf, apps_dir, guests};

/// Time for an optimised build of a small app on a loaded CI machine.
const OPTIMISED: Duration = Duration::from_secs(60);
/// Requests each load loop sends at most while waiting for the optimised build.
const MAX_REQUESTS: usize = 20_000;
const CLIENTS: usize = 4;

/// A wharf with a compile cache of its own (so nothing is cached) and `config`.
fn start(apps: &std::path::Path, cache: &std::path::Path, config: &str) -> Wharf {
    Wharf::builder(apps)
        .env("WHARF_CACHE_DIR", cache)
        .config(config)
        .start()
}

/// Asserts the startup table shows an app with `status`, e.g. `ready (compiled, baseline)`.
fn assert_status(wharf: &Wharf, status: &str) {
    assert!(wharf.banner.contains(status), "{}", wharf.banner);
}

/// Moves a copy of guest `name` into `apps` in one rename, as a deploy does.
fn deploy(apps: &std::path::Path, name: &str) {
    let staged = apps.join(format!(".{name}.wasm.part"));
    std::fs::copy(guests().wasm(name), &staged).unwrap();
    std::fs::rename(&staged, apps.join(format!("{name}.wasm"))).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_app_serves_from_the_baseline_until_the_optimised_build_takes_over_in_place() {
    let apps = apps_dir(&[]);
    let cache = tempfile::tempdir().unwrap();
    let wharf = start(apps.path(), cache.path(), "");
    let mark = wharf.log_len();
    deploy(apps.path(), "hello");
    let loaded = wharf
        .wait_for_log_since(mark, &["app loaded", "hello"], Duration::from_secs(30))
        .unwrap();
    assert!(loaded.contains("baseline"), "{loaded}");

    // Clients keep asking while the optimised build is compiled and swapped in.
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url, stop) = (HttpClient::http1(), wharf.url("/hello"), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) && statuses.len() < MAX_REQUESTS {
                    statuses.push(client.status(&url).await);
                }
                statuses
            })
        })
        .collect();
    let waited = Instant::now();
    let optimised = tokio::task::block_in_place(|| {
        wharf.wait_for_log_since(mark, &["app optimised", "hello"], OPTIMISED)
    });
    stop.store(true, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for load in loads {
        statuses.extend(load.await.unwrap());
    }
    let optimised = optimised.unwrap();
    let failed = statuses.iter().filter(|&&s| s != 200).count();
    eprintln!(
        "{optimised}\n{} requests during the swap ({:?}), {failed} not 200",
        statuses.len(),
        waited.elapsed()
    );
    assert!(!statuses.is_empty());
    assert_eq!(
        failed, 0,
        "requests failed while the optimised build came in"
    );
    let reply = HttpClient::http1().get(&wharf.url("/hello")).await.unwrap();
    assert_eq!(reply.body, "Hello from wharf!\n");

    // Both builds are cached: a restart serves the optimised one at once.
    let mut wharf = wharf;
    wharf.restart();
    assert_status(&wharf, "ready (cached, optimised)");
}

#[tokio::test]
async fn a_start_prints_when_the_optimised_build_took_over() {
    let apps = apps_dir(&["hello"]);
    let cache = tempfile::tempdir().unwrap();
    let wharf = start(apps.path(), cache.path(), "");
    assert_status(&wharf, "ready (compiled, baseline)");
    let line = wharf
        .wait_for_log(
            &["hello: optimised build serving", "ms after start"],
            OPTIMISED,
        )
        .unwrap();
    eprintln!("{line}");
}

#[tokio::test]
async fn a_component_winch_cannot_compile_serves_from_cranelift_with_one_log_line() {
    let apps = apps_dir(&["simd"]);
    let cache = tempfile::tempdir().unwrap();
    let wharf = start(apps.path(), cache.path(), "");
    assert_status(&wharf, "ready (compiled, optimised)");
    let reply = HttpClient::http1()
        .get(&wharf.url("/simd?x=2"))
        .await
        .unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "7"));
    let said: Vec<String> = wharf
        .log()
        .into_iter()
        .filter(|line| line.contains("baseline compiler cannot compile"))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("simd.wasm"), "names no file: {}", said[0]);
}

#[tokio::test]
async fn tiered_false_compiles_with_cranelift_only() {
    let apps = apps_dir(&["hello"]);
    let cache = tempfile::tempdir().unwrap();
    let wharf = start(apps.path(), cache.path(), "[apps]\ntiered = false\n");
    assert_status(&wharf, "ready (compiled, optimised)");
    let mark = wharf.log_len();
    deploy(apps.path(), "raw");
    let loaded = wharf
        .wait_for_log_since(mark, &["app loaded", "raw"], Duration::from_secs(30))
        .unwrap();
    assert!(loaded.contains("optimised"), "{loaded}");
    assert!(
        !wharf
            .log()
            .iter()
            .any(|line| line.contains("app optimised")),
        "an app went through the baseline tier"
    );
}

#[test]
fn a_wrong_tiered_value_is_refused_naming_the_key() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[apps]\ntiered = \"fast\"\n").unwrap();
    let output = std::process::Command::new(wharf_tests::wharf_bin())
        .args(["check", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("tiered"), "{stderr}");
    assert!(stderr.contains(r#"true, false or "baseline""#), "{stderr}");
}

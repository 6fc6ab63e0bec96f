//! The compile cache: it loads native code, so it trusts only a directory and files
//! no other user can write, and it removes the artifacts no app uses any more.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use wharf_tests::{HttpClient, Wharf, apps_dir};

/// Starts wharf on `apps` with its own cache directory `cache`, compiling with
/// Cranelift only so that an app has one artifact (tests/tiered.rs has both tiers').
fn start(apps: &Path, cache: &Path) -> Wharf {
    Wharf::builder(apps)
        .ip(std::net::Ipv4Addr::LOCALHOST.into())
        .env("WHARF_CACHE_DIR", cache)
        .config("[apps]\ntiered = false\n")
        .start()
}

/// The hello app's status in the startup table: `ready (cached, optimised)` or
/// `ready (compiled, optimised)`.
fn hello_origin(wharf: &Wharf) -> &str {
    let row = wharf
        .banner
        .lines()
        .find(|l| l.trim_start().starts_with("hello "))
        .unwrap_or_else(|| panic!("no hello row in:\n{}", wharf.banner));
    if row.contains("ready (cached, optimised)") {
        "cached"
    } else if row.contains("ready (compiled, optimised)") {
        "compiled"
    } else {
        panic!("hello is not ready: {row}")
    }
}

/// A cache directory holding hello's artifact, made by a first run; returns the artifact.
fn warm_cache(apps: &Path, cache: &Path) -> PathBuf {
    let wharf = start(apps, cache);
    assert_eq!(hello_origin(&wharf), "compiled");
    drop(wharf);
    artifacts(cache).pop().expect("no artifact written")
}

fn artifacts(cache: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_cache_directory_other_users_can_write_is_not_loaded_from() {
    let apps = apps_dir(&["hello"]);
    let cache = tempfile::tempdir().unwrap();
    warm_cache(apps.path(), cache.path());
    assert_eq!(hello_origin(&start(apps.path(), cache.path())), "cached");

    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let wharf = start(apps.path(), cache.path());
    assert_eq!(hello_origin(&wharf), "compiled");
    let line = wharf
        .wait_for_log(&["compile cache"], Duration::from_secs(5))
        .unwrap();
    assert!(
        line.contains(&cache.path().display().to_string()),
        "the warning names no directory: {line}"
    );
    assert!(line.contains("writable by other users"), "{line}");
}

#[tokio::test]
async fn a_cached_artifact_other_users_can_write_or_own_is_compiled_afresh() {
    let apps = apps_dir(&["hello"]);
    let cache = tempfile::tempdir().unwrap();
    let artifact = warm_cache(apps.path(), cache.path());

    std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
    let wharf = start(apps.path(), cache.path());
    assert_eq!(
        hello_origin(&wharf),
        "compiled",
        "loaded a world-writable file"
    );
    wharf
        .wait_for_log(
            &["ignoring cached artifact", &artifact.display().to_string()],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(HttpClient::http1().status(&wharf.url("/hello")).await, 200);
    drop(wharf);

    // The untrusted file was replaced by a fresh one of wharf's own.
    assert_eq!(hello_origin(&start(apps.path(), cache.path())), "cached");
    std::os::unix::fs::chown(&artifact, Some(65534), Some(65534)).unwrap();
    let wharf = start(apps.path(), cache.path());
    assert_eq!(
        hello_origin(&wharf),
        "compiled",
        "loaded another user's file"
    );
}

#[test]
fn artifacts_no_app_has_used_for_a_long_time_are_removed_at_start() {
    let apps = apps_dir(&["hello"]);
    let cache = tempfile::tempdir().unwrap();
    let hello = warm_cache(apps.path(), cache.path());
    // Artifacts of apps that are gone: one unused for a month, one used a minute ago
    // (by another wharf sharing the directory, for all this one knows).
    let name = hello.file_name().unwrap().to_str().unwrap();
    let (_, engine_tag) = name.split_once('-').unwrap();
    let stale = cache
        .path()
        .join(format!("{}-{engine_tag}", "a".repeat(64)));
    let recent = cache
        .path()
        .join(format!("{}-{engine_tag}", "b".repeat(64)));
    let month_ago = SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    for path in [&stale, &recent] {
        std::fs::write(path, b"an artifact of an app that is gone").unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(month_ago)
        .unwrap();
    // hello's own artifact is old too, but in use.
    std::fs::File::options()
        .write(true)
        .open(&hello)
        .unwrap()
        .set_modified(month_ago)
        .unwrap();

    let wharf = start(apps.path(), cache.path());
    assert_eq!(hello_origin(&wharf), "cached");
    let mut kept = vec![recent, hello.clone()];
    kept.sort();
    assert_eq!(artifacts(cache.path()), kept);
    let used = std::fs::metadata(&hello).unwrap().modified().unwrap();
    assert!(used > month_ago, "loading an artifact marks it used");
}

//! The developer workflow with the real toolchain: `wharf new` for every template (from
//! a binary installed outside this repository, with the SDK it carries),
//! `wharf build` into an apps directory, wharf serving what was built; and build
//! errors, a missing project and a component without the HTTP handler reported as such.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use wharf_tests::{HttpClient, Wharf, repo_root, shared_cache_dir, wharf_bin};

/// The builds of these tests share one target directory, so the SDK and its
/// dependencies compile once per suite run rather than once per project.
fn build_target_dir() -> PathBuf {
    repo_root().join("target").join("wharf-project-tests")
}

/// `XDG_DATA_HOME` of every `wharf` run here: where `wharf new` writes out its SDK.
fn data_home() -> PathBuf {
    repo_root().join("target").join("wharf-project-data")
}

fn wharf(args: &[&str], cwd: &Path) -> Output {
    wharf_from(wharf_bin(), args, cwd)
}

fn wharf_from(bin: &Path, args: &[&str], cwd: &Path) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env("CARGO_TARGET_DIR", build_target_dir())
        .env("WHARF_CACHE_DIR", shared_cache_dir())
        .env("XDG_DATA_HOME", data_home())
        .output()
        .unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn succeeds(args: &[&str], cwd: &Path) -> String {
    succeeds_from(wharf_bin(), args, cwd)
}

fn succeeds_from(bin: &Path, args: &[&str], cwd: &Path) -> String {
    let output = wharf_from(bin, args, cwd);
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "wharf {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

fn fails(args: &[&str], cwd: &Path) -> String {
    let output = wharf(args, cwd);
    let (stdout, stderr) = text(&output);
    assert!(
        !output.status.success(),
        "wharf {args:?} succeeded:\n{stdout}\n{stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_builds_and_serves() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    // wharf as installed (`cargo install` puts the binary alone in a bin directory):
    // outside this repository, nothing beside it.
    let installed = tempfile::tempdir().unwrap();
    let bin = installed.path().join("bin/wharf");
    std::fs::create_dir(bin.parent().unwrap()).unwrap();
    std::fs::hard_link(wharf_bin(), &bin)
        .or_else(|_| std::fs::copy(wharf_bin(), &bin).map(drop))
        .unwrap();
    let mut built = Vec::new();
    for (name, template) in [("greeter", "hello"), ("books", "api"), ("tasks", "todo")] {
        let created = succeeds_from(&bin, &["new", name, "--template", template], dir);
        assert!(created.contains(&format!("the app {name}")), "{created}");
        // The SDK inside the binary, written out: no path into this repository.
        let manifest = std::fs::read_to_string(dir.join(name).join("Cargo.toml")).unwrap();
        let sdk = data_home().join("wharf/sdk");
        assert!(
            manifest.contains(&format!("path = \"{}/wharf-sdk-", sdk.display())),
            "{manifest}"
        );
        built.push(succeeds_from(&bin, &["build", name, "--apps", "apps"], dir));
        assert!(
            built
                .last()
                .unwrap()
                .contains(&format!("built {name} -> apps/{name}.wasm")),
            "{built:?}"
        );
    }
    assert!(
        built[0].contains("wharf:platform imports: none"),
        "{}",
        built[0]
    );
    assert!(built[2].contains("wharf:platform/sql"), "{}", built[2]);
    assert!(
        dir.join("apps/tasks.toml").is_file(),
        "the manifest goes beside the app"
    );

    let apps = dir.join("apps");
    let server = Wharf::start(&apps);
    let client = HttpClient::http1();
    let hello = client.get(&server.url("/greeter")).await.unwrap();
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "Hello from wharf!\n")
    );
    let book = client.get(&server.url("/books/books/1")).await.unwrap();
    assert_eq!(book.status, 200);
    assert!(book.body.contains("Le Guin"), "{}", book.body);
    let created = client
        .request(
            "POST",
            &server.url("/tasks"),
            &[("content-type", "application/json")],
            r#"{"title":"write the tutorial"}"#,
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    let list = client.get(&server.url("/tasks")).await.unwrap();
    assert!(list.body.contains("write the tutorial"), "{}", list.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_errors_say_what_to_fix() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    std::fs::create_dir(dir.join("empty")).unwrap();
    let stderr = fails(&["build", "empty", "--apps", "apps"], dir);
    assert!(
        stderr.contains("no Cargo.toml") && stderr.contains("wharf new"),
        "{stderr}"
    );

    succeeds(&["new", "broken"], dir);
    std::fs::write(dir.join("broken/src/lib.rs"), "fn oops( {\n").unwrap();
    let stderr = fails(&["build", "broken", "--apps", "apps"], dir);
    assert!(
        stderr.contains("src/lib.rs"),
        "the compiler's message is shown: {stderr}"
    );
    assert!(stderr.contains("fix the errors above"), "{stderr}");
    assert!(!dir.join("apps/broken.wasm").exists());

    succeeds(&["new", "handlerless"], dir);
    std::fs::write(dir.join("handlerless/src/lib.rs"), "pub fn nothing() {}\n").unwrap();
    let stderr = fails(&["build", "handlerless", "--apps", "apps"], dir);
    assert!(
        stderr.contains("does not export wasi:http/incoming-handler"),
        "{stderr}"
    );
    assert!(!dir.join("apps/handlerless.wasm").exists());

    let stderr = fails(&["new", "Bad Name"], dir);
    assert!(stderr.contains("cannot name an app"), "{stderr}");
}

/// `wharf dev` on a project: served at once, an edit served within the bound after the
/// save (from the baseline tier, then the optimised one), a syntax error shown to
/// browsers while the last good version serves the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_rebuilds_on_save_and_keeps_the_last_good_version() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    succeeds(&["new", "live"], dir);
    // A cache of its own: the edited app is compiled, never found cached.
    let cache = tempfile::tempdir().unwrap();
    let mut command = Command::new(wharf_bin());
    command
        .args(["dev", "live", "--apps", "apps", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", build_target_dir())
        .env("WHARF_CACHE_DIR", cache.path())
        .env("XDG_DATA_HOME", data_home());
    let dev = Wharf::spawn(command, &dir.join("apps"));
    let build = Duration::from_secs(180);
    let url = dev.url("/live");
    let client = HttpClient::http1();
    let reply = client.get(&url).await.unwrap();
    assert_eq!(reply.body, "Hello from wharf!\n");

    let source = dir.join("live/src/lib.rs");
    let original = std::fs::read_to_string(&source).unwrap();
    let mark = dev.log_len();
    std::fs::write(
        &source,
        original.replace("Hello from wharf!", "Hello, edited!"),
    )
    .unwrap();
    let served = dev
        .wait_for_log_since(mark, &["new version serving"], build)
        .unwrap();
    println!("save to new response: {served}");
    assert!(served.contains("ms after the save (baseline)"), "{served}");
    assert_eq!(client.get(&url).await.unwrap().body, "Hello, edited!\n");
    let optimised = dev
        .wait_for_log_since(
            mark,
            &["live: optimised build serving", "after the save"],
            build,
        )
        .unwrap();
    println!("save to optimised response: {optimised}");
    assert_eq!(client.get(&url).await.unwrap().body, "Hello, edited!\n");

    let mark = dev.log_len();
    std::fs::write(&source, "fn oops( {\n").unwrap();
    dev.wait_for_log_since(mark, &["build failed"], build)
        .unwrap();
    let page = client
        .get_with(&url, &[("accept", "text/html")])
        .await
        .unwrap();
    assert_eq!(page.status, 500);
    assert!(page.body.contains("unclosed delimiter"), "{}", page.body);
    let api = client.get(&url).await.unwrap();
    assert_eq!((api.status, api.body.as_str()), (200, "Hello, edited!\n"));

    // Fixed again: the error page gives way to the app.
    let mark = dev.log_len();
    std::fs::write(&source, &original).unwrap();
    dev.wait_for_log_since(mark, &["new version serving"], build)
        .unwrap();
    let page = client
        .get_with(&url, &[("accept", "text/html")])
        .await
        .unwrap();
    assert_eq!(
        (page.status, page.body.as_str()),
        (200, "Hello from wharf!\n")
    );
}

/// `wharf dev` finds an app's error page where requests for the app go: by the routes
/// of its manifest, not by its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_shows_a_build_error_at_the_route_the_manifest_gives() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    succeeds(&["new", "routed"], dir);
    std::fs::write(dir.join("routed/routed.toml"), "routes = [\"/api\"]\n").unwrap();
    let mut command = Command::new(wharf_bin());
    command
        .args(["dev", "routed", "--apps", "apps", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", build_target_dir())
        .env("WHARF_CACHE_DIR", shared_cache_dir())
        .env("XDG_DATA_HOME", data_home());
    let dev = Wharf::spawn(command, &dir.join("apps"));
    let client = HttpClient::http1();
    let url = dev.url("/api");
    assert_eq!(client.get(&url).await.unwrap().body, "Hello from wharf!\n");

    let mark = dev.log_len();
    std::fs::write(dir.join("routed/src/lib.rs"), "fn oops( {\n").unwrap();
    dev.wait_for_log_since(mark, &["build failed"], Duration::from_secs(180))
        .unwrap();
    let browser = [("accept", "text/html")];
    let page = client.get_with(&url, &browser).await.unwrap();
    assert_eq!(page.status, 500);
    assert!(page.body.contains("unclosed delimiter"), "{}", page.body);
    assert!(page.body.contains("routed does not build"), "{}", page.body);
    // The last good version keeps serving programs, and the app's name is no route.
    let api = client.get(&url).await.unwrap();
    assert_eq!(
        (api.status, api.body.as_str()),
        (200, "Hello from wharf!\n")
    );
    let by_name = client
        .get_with(&dev.url("/routed"), &browser)
        .await
        .unwrap();
    assert_eq!(by_name.status, 404, "{}", by_name.body);
}

//! `wharf check --config FILE` against golden files: every `tests/config/valid/*.toml`
//! passes and every `tests/config/invalid/*.toml` fails, each printing exactly its
//! `.expected` file (the config's directory written as `$DIR`). `WHARF_BLESS=1`
//! rewrites the expected files from the current output, for review in the diff.
//! Beside them, how a node binds what the file names.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use wharf_tests::{HttpClient, Wharf, apps_dir, repo_root, shared_cache_dir, wharf_bin};

fn check_all(kind: &str, should_pass: bool) {
    let dir = repo_root().join("tests/config").join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    for file in files {
        let output = Command::new(wharf_bin())
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        let text = text.replace(&dir.display().to_string(), "$DIR");
        let expected_path = file.with_extension("expected");
        if std::env::var_os("WHARF_BLESS").is_some() {
            std::fs::write(&expected_path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        assert_eq!(text, expected, "output of wharf check for {}", name(&file));
        assert_eq!(
            output.status.success(),
            should_pass,
            "exit status of wharf check for {}: {text}",
            name(&file)
        );
    }
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn valid_configs_pass() {
    check_all("valid", true);
}

#[test]
fn invalid_configs_name_every_key_and_reason() {
    check_all("invalid", false);
}

/// Port 0 is any free port, so `--listen 127.0.0.1:0`, two config listeners and the
/// admin listener all on 127.0.0.1:0 are four listeners, each on a port of its own.
#[tokio::test]
async fn listeners_on_port_zero_of_one_address_each_get_a_port_and_serve() {
    let apps = apps_dir(&["hello"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n[[listener]]\naddress = \"127.0.0.1:0\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let wharf = Wharf::start_with(
        apps.path(),
        &[("WHARF_CACHE_DIR", shared_cache_dir().as_os_str())],
        &["--config", config.to_str().unwrap()],
    );
    let printed = |prefix: &str| -> Vec<SocketAddr> {
        let banner = &wharf.banner;
        banner
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    let listeners = printed("listening on http://");
    let admin = printed("admin on http://");
    let ports: BTreeSet<u16> = listeners.iter().chain(&admin).map(|a| a.port()).collect();
    assert_eq!((listeners.len(), admin.len()), (3, 1), "{}", wharf.banner);
    assert_eq!(ports.len(), 4, "{}", wharf.banner);
    let client = HttpClient::http1();
    for addr in listeners {
        assert_eq!(
            client.status(&format!("http://{addr}/hello")).await,
            200,
            "{addr}"
        );
    }
    assert_eq!(
        client.status(&format!("http://{}/healthz", admin[0])).await,
        200
    );
}

//! `wharf check --config FILE` against golden files: every `tests/config/valid/*.toml`
//! passes and every `tests/config/invalid/*.toml` fails, each printing exactly its
//! `.expected` file (the config's directory written as `$DIR`). `WHARF_BLESS=1`
//! rewrites the expected files from the current output, for review in the diff.

use std::path::Path;
use std::process::Command;
use wharf_tests::{repo_root, wharf_bin};

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

//! The deployment files in `examples/`: the systemd unit passes `systemd-analyze
//! verify` without a complaint and keeps its sandbox.

use std::process::Command;
use wharf_tests::{repo_root, wharf_bin};

/// The unit, pointed at the wharf built here (verify checks that the binary exists).
fn unit(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("examples/systemd/wharf.service"))
        .unwrap()
        .replace("/usr/local/bin/wharf", wharf_bin().to_str().unwrap());
    let path = dir.join("wharf.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit(dir.path());
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let said = String::from_utf8_lossy(&verify.stderr);
    // An unknown key is only a warning, with exit status 0: none may show.
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");

    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
    // systemd's own rating of the sandbox: 0 (locked down) to 10 (exposed).
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for wharf.service: ").nth(1))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    println!("systemd-analyze security: exposure {level} of 10");
    assert!(level <= 4.0, "exposure {level}:\n{report}");
}

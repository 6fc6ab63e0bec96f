//! The wharf-sdk crate, carried inside the binary. `wharf new` writes it out where a
//! new project can depend on it, so an installed wharf (`cargo install --path host`)
//! needs no checkout of the repository.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Every file of `sdk/` but its manifest, by its path inside the crate. A unit test
/// checks that none is missing.
const FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/db.rs", include_str!("../../../sdk/src/db.rs")),
    ("src/db/de.rs", include_str!("../../../sdk/src/db/de.rs")),
    (
        "src/headers.rs",
        include_str!("../../../sdk/src/headers.rs"),
    ),
    (
        "src/request.rs",
        include_str!("../../../sdk/src/request.rs"),
    ),
    (
        "src/response.rs",
        include_str!("../../../sdk/src/response.rs"),
    ),
    ("src/router.rs", include_str!("../../../sdk/src/router.rs")),
    ("src/serve.rs", include_str!("../../../sdk/src/serve.rs")),
    (
        "wit/platform.wit",
        include_str!("../../../sdk/wit/platform.wit"),
    ),
    ("wit/sql.wit", include_str!("../../../sdk/wit/sql.wit")),
];

const MANIFEST: &str = include_str!("../../../sdk/Cargo.toml");
const WORKSPACE: &str = include_str!("../../../Cargo.toml");

/// The SDK's manifest on its own: each key it inherits from the workspace
/// (`x.workspace = true`, `dep = { workspace = true }`) replaced by the workspace's
/// value, so the crate builds outside the repository.
fn standalone_manifest() -> anyhow::Result<String> {
    let workspace: toml::Table = WORKSPACE.parse()?;
    let inherited = |section: &str| {
        workspace["workspace"]
            .get(section)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default()
    };
    let (package_values, dependency_values) = (inherited("package"), inherited("dependencies"));
    let mut manifest: toml::Table = MANIFEST.parse()?;
    let is_inherited = |value: &toml::Value| {
        value
            .as_table()
            .and_then(|t| t.get("workspace"))
            .and_then(|w| w.as_bool())
            == Some(true)
    };
    for (section, values) in [
        ("package", &package_values),
        ("dependencies", &dependency_values),
    ] {
        let Some(table) = manifest.get_mut(section).and_then(|s| s.as_table_mut()) else {
            continue;
        };
        for (key, value) in table.iter_mut() {
            if is_inherited(value) {
                *value = values
                    .get(key)
                    .with_context(|| format!("the workspace has no {section}.{key}"))?
                    .clone();
            }
        }
    }
    Ok(toml::to_string(&manifest)?)
}

/// Writes the SDK out (once per version of it) under `data_dir` and returns its
/// directory. Each version has a directory of its own, named by a hash of its files,
/// written beside it and renamed into place, so a directory that exists is whole.
pub fn write_out(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = standalone_manifest()?;
    let mut hash = Sha256::new();
    for (path, text) in FILES.iter().chain([&("Cargo.toml", manifest.as_str())]) {
        hash.update(path.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
        hash.update([0]);
    }
    let hash: String = hash.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = data_dir.join("sdk");
    let dir = root.join(format!("wharf-sdk-{}-{hash}", env!("CARGO_PKG_VERSION")));
    if dir.join("Cargo.toml").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let partial = tempfile::tempdir_in(&root)
        .with_context(|| format!("writing the SDK into {}", root.display()))?;
    for (path, text) in FILES.iter().chain([&("Cargo.toml", manifest.as_str())]) {
        let file = partial.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap())?;
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    match std::fs::rename(partial.path(), &dir) {
        Ok(()) => {}
        // Another `wharf new` put the same version there first.
        Err(_) if dir.join("Cargo.toml").is_file() => {}
        Err(e) => return Err(e).with_context(|| format!("moving the SDK to {}", dir.display())),
    }
    Ok(dir)
}

/// Where wharf keeps files of its own: `$XDG_DATA_HOME/wharf`, else
/// `~/.local/share/wharf`.
pub fn data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("wharf"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither XDG_DATA_HOME nor HOME is set: pass --sdk PATH")?;
    Ok(PathBuf::from(home).join(".local/share/wharf"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_sdk_is_carried() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        let mut on_disk = Vec::new();
        let mut dirs = vec![sdk.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    on_disk.push(path.strip_prefix(&sdk).unwrap().display().to_string());
                }
            }
        }
        on_disk.retain(|p| p != "Cargo.toml");
        on_disk.sort();
        let mut carried: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        carried.sort();
        assert_eq!(on_disk, carried, "add new SDK files to FILES");
    }

    #[test]
    fn the_written_out_sdk_stands_alone_and_is_written_once() {
        let data = tempfile::tempdir().unwrap();
        let dir = write_out(data.path()).unwrap();
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some("wharf-sdk"));
        assert_eq!(
            manifest["package"]["version"].as_str(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(manifest["package"]["edition"].is_str(), "{manifest}");
        assert!(
            !toml::to_string(&manifest).unwrap().contains("workspace"),
            "{manifest}"
        );
        assert!(
            manifest["dependencies"]["serde"]["version"].is_str(),
            "{manifest}"
        );
        assert!(dir.join("wit/platform.wit").is_file());
        assert_eq!(write_out(data.path()).unwrap(), dir);
        assert_eq!(
            std::fs::read_dir(data.path().join("sdk")).unwrap().count(),
            1
        );
    }
}

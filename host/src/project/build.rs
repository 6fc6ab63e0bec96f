//! `wharf build [PATH]`: `cargo build --release` for wasm32-wasip2, the component
//! checked exactly as `wharf serve` will load it, then put into the apps directory.

use crate::db::{Provider, SqliteDir};
use crate::runtime::{LoadEvent, Runtime};
use anyhow::{Context, bail, ensure};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

/// An app built and put into the apps directory.
#[derive(Debug)]
pub struct Built {
    pub name: String,
    /// Where it went: `APPS/NAME.wasm`.
    pub wasm: PathBuf,
    pub bytes: u64,
    /// The manifest put beside it, if the project has one (`NAME.toml`).
    pub manifest: Option<PathBuf>,
    /// The `wharf:platform` interfaces it imports (config, sql...).
    pub platform_imports: Vec<String>,
}

/// How cargo optimises the component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The project's release profile as written: what production serves (the
    /// templates turn on link-time optimisation, for cheaper instantiation).
    Production,
    /// Release without link-time optimisation, for `wharf dev`: a rebuild after a
    /// save takes about half as long (todo: 1.1 s instead of 2.7 s).
    Iteration,
}

/// Why a build failed. `Compile` carries the compiler's output, for showing it again
/// (`wharf dev` puts it on an error page).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0:#}")]
    Setup(anyhow::Error),
    #[error("cargo build failed in {project}: fix the errors above")]
    Compile { project: PathBuf, output: String },
    #[error("{0:#}")]
    Invalid(anyhow::Error),
}

/// Builds the guest crate in `project` and copies the result (and its manifest) into
/// `apps_dir`, replacing any previous version in one rename so a running wharf never
/// sees half a file. Cargo's progress and diagnostics go to stderr as they come.
pub async fn build(project: &Path, apps_dir: &Path, profile: Profile) -> Result<Built, BuildError> {
    let name = package_name(project).map_err(BuildError::Setup)?;
    check_target().map_err(BuildError::Setup)?;
    let artifact = {
        let project = project.to_path_buf();
        tokio::task::spawn_blocking(move || cargo_build(&project, profile))
            .await
            .map_err(|e| BuildError::Setup(e.into()))??
    };
    let manifest = Some(project.join(format!("{name}.toml"))).filter(|m| m.is_file());
    let platform_imports = check(&name, &artifact, manifest.as_deref())
        .await
        .map_err(BuildError::Invalid)?;
    let install = || -> anyhow::Result<(PathBuf, Option<PathBuf>, u64)> {
        std::fs::create_dir_all(apps_dir)
            .with_context(|| format!("creating {}", apps_dir.display()))?;
        let wasm = apps_dir.join(format!("{name}.wasm"));
        let bytes = replace(&artifact, &wasm)?;
        let manifest = match &manifest {
            Some(source) => {
                let target = apps_dir.join(format!("{name}.toml"));
                replace(source, &target)?;
                Some(target)
            }
            None => None,
        };
        Ok((wasm, manifest, bytes))
    };
    let (wasm, manifest, bytes) = install().map_err(BuildError::Setup)?;
    Ok(Built {
        name,
        wasm,
        bytes,
        manifest,
        platform_imports,
    })
}

/// The `[package] name` of the crate in `project`.
pub(super) fn package_name(project: &Path) -> anyhow::Result<String> {
    let path = project.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a guest project (no Cargo.toml there): pass the directory of \
             one, or make one with `wharf new NAME`",
            project.display()
        )
    })?;
    let table: toml::Table = toml::from_str(&text).with_context(|| path.display().to_string())?;
    table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .with_context(|| format!("{}: no [package] name", path.display()))
}

/// Fails with the command to run when rustup lacks the target. Without rustup the
/// build itself reports it.
fn check_target() -> anyhow::Result<()> {
    let Ok(output) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&output.stdout);
    ensure!(
        !output.status.success() || installed.lines().any(|l| l.trim() == TARGET),
        "the Rust target {TARGET} is not installed: run `rustup target add {TARGET}`"
    );
    Ok(())
}

/// Runs cargo and returns the `.wasm` it produced. Its stderr is passed through and
/// also kept, for the error.
fn cargo_build(project: &Path, profile: Profile) -> Result<PathBuf, BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--release", "--target", TARGET]);
    if profile == Profile::Iteration {
        // Profile settings given as --config take precedence over Cargo.toml's.
        command.args(["--config", "profile.release.lto=false"]);
        command.args(["--config", "profile.release.codegen-units=16"]);
    }
    let mut child = command
        .arg("--message-format=json-render-diagnostics")
        .current_dir(project)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BuildError::Setup(anyhow::anyhow!("running cargo: {e}")))?;
    let stderr = child.stderr.take().expect("piped");
    let echo = std::thread::spawn(move || {
        let mut kept = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            kept.push_str(&line);
            kept.push('\n');
        }
        kept
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .map_err(|e| BuildError::Setup(e.into()))?;
    let status = child.wait().map_err(|e| BuildError::Setup(e.into()))?;
    let output = echo.join().unwrap_or_default();
    if !status.success() {
        return Err(BuildError::Compile {
            project: project.to_path_buf(),
            output,
        });
    }
    // One JSON message per line; the last artifact with a .wasm file is the app.
    stdout
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .find_map(|m| {
            m["filenames"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
        })
        .ok_or_else(|| {
            BuildError::Invalid(anyhow::anyhow!(
                "the build produced no .wasm: the crate needs `[lib] crate-type = [\"cdylib\"]`"
            ))
        })
}

/// Loads the component as `wharf serve` would (same engine, linker and checks), and
/// returns the wharf:platform interfaces it imports.
async fn check(name: &str, wasm: &Path, manifest: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    std::fs::copy(wasm, dir.path().join(format!("{name}.wasm")))
        .with_context(|| format!("reading {}", wasm.display()))?;
    if let Some(manifest) = manifest {
        std::fs::copy(manifest, dir.path().join(format!("{name}.toml")))?;
    }
    let databases = Provider::Sqlite(SqliteDir::new(dir.path().join("data")));
    let runtime = Runtime::new(dir.path(), crate::runtime::default_cache_dir(), databases)?;
    // Errors name the copy; the developer knows the file as the build's output.
    let here = dir.path().display().to_string();
    match runtime.reload(name).await {
        LoadEvent::Loaded(app) => Ok(app.platform_imports()),
        LoadEvent::Failed(_, e) => {
            let text = format!("{e:#}")
                .replace(&format!("{here}/{name}.wasm"), &wasm.display().to_string());
            let text = match manifest {
                Some(m) => text.replace(&format!("{here}/{name}.toml"), &m.display().to_string()),
                None => text,
            };
            if text.contains("does not export wasi:http/incoming-handler") {
                bail!(
                    "{text}\n  a wharf-sdk app exports its handler with \
                     `wharf_sdk::export!(handler);` (see `wharf new`)"
                );
            }
            bail!("{text}")
        }
        LoadEvent::Unchanged | LoadEvent::Removed(_) => bail!("{}: not loaded", wasm.display()),
    }
}

/// Copies `from` over `to` through a temporary file in `to`'s directory and a rename.
fn replace(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let file_name = to.file_name().and_then(|n| n.to_str()).unwrap_or("app");
    let temp = dir.join(format!(".{file_name}.partial"));
    let bytes = std::fs::copy(from, &temp)
        .with_context(|| format!("copying {} to {}", from.display(), temp.display()))?;
    std::fs::rename(&temp, to).with_context(|| format!("replacing {}", to.display()))?;
    Ok(bytes)
}

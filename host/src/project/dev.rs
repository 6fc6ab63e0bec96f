//! `wharf dev`: serve the apps directory and rebuild guest projects as their sources
//! change. A rebuilt app is swapped in place by the runtime (requests in flight finish
//! on the old version); a failed build leaves the last good version serving, and a
//! browser asking for that app gets the compiler's output instead.

use super::build::{BuildError, Profile, build};
use crate::runtime::watch::SETTLE;
use crate::runtime::{LoadEvent, Runtime, report};
use notify::{RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The last failed build of each app whose newest sources do not compile.
#[derive(Default)]
pub struct BuildErrors(Mutex<HashMap<String, String>>);

impl BuildErrors {
    /// The failure to show for a request to `path`, if the app serving that path
    /// (`/NAME` and below) last failed to build: (app, compiler output).
    pub fn for_path(&self, path: &str) -> Option<(String, String)> {
        let errors = self.0.lock().unwrap();
        errors
            .iter()
            .find(|(name, _)| crate::http::route_matches(&format!("/{name}"), path))
            .map(|(name, output)| (name.clone(), output.clone()))
    }

    fn set(&self, name: &str, output: Option<String>) {
        let mut errors = self.0.lock().unwrap();
        match output {
            Some(output) => errors.insert(name.to_string(), output),
            None => errors.remove(name),
        };
    }
}

/// A guest project and the app it builds.
pub struct Project {
    dir: PathBuf,
    name: String,
}

/// The projects in `dirs`, each with its app's name (the crate's name).
pub fn projects(dirs: &[PathBuf]) -> anyhow::Result<Vec<Project>> {
    dirs.iter()
        .map(|dir| {
            let dir = dir.canonicalize()?;
            let name = super::build::package_name(&dir)?;
            Ok(Project { dir, name })
        })
        .collect()
}

/// Builds every project once, so the apps are there when serving starts. Failures are
/// reported and recorded; the others go on.
pub async fn build_all(projects: &[Project], apps: &Path, errors: &BuildErrors) {
    for project in projects {
        rebuild(project, apps, errors).await;
    }
}

/// Watches the projects' sources and rebuilds the one that changed, until the
/// returned watcher is dropped. After a good build the runtime reloads the app at once
/// and the time from the save to the new version serving is printed.
pub fn watch(
    projects: Vec<Project>,
    apps: PathBuf,
    runtime: Arc<Runtime>,
    errors: Arc<BuildErrors>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let roots: Vec<PathBuf> = projects.iter().map(|p| p.dir.clone()).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() || event.kind.is_other() {
            return;
        }
        for path in &event.paths {
            if let Some(index) = roots.iter().position(|root| is_source(root, path)) {
                let _ = tx.send(index);
            }
        }
    })?;
    for project in &projects {
        watcher.watch(&project.dir, RecursiveMode::Recursive)?;
    }
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let saved = Instant::now();
            let mut changed = vec![first];
            while let Ok(Some(index)) = tokio::time::timeout(SETTLE, rx.recv()).await {
                changed.push(index);
            }
            changed.sort();
            changed.dedup();
            for index in changed {
                let project = &projects[index];
                println!("{}: sources changed, rebuilding", project.name);
                if rebuild(project, &apps, &errors).await {
                    // The apps directory watcher would pick the file up too; reloading
                    // here tells when the new version is serving.
                    match runtime.reload(&project.name).await {
                        // Loaded by this reload, or already by the directory watcher.
                        LoadEvent::Loaded(_) | LoadEvent::Unchanged => println!(
                            "{}: new version serving {} ms after the save",
                            project.name,
                            saved.elapsed().as_millis()
                        ),
                        // e.g. a route another app already serves: only the serving
                        // runtime can tell, not the check the build made.
                        other => report(other),
                    }
                }
            }
        }
    });
    Ok(watcher)
}

/// A change under `root` that can affect the build: not the target directory, not
/// hidden files (editors' swap files, .git).
fn is_source(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    let mut names = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy());
    names
        .next()
        .is_some_and(|first| first != "target" && !first.starts_with('.'))
        && names.all(|name| !name.starts_with('.'))
}

/// A terminal spinner with `message`, for the waits of `wharf dev` (builds, the first
/// compilation of apps).
pub fn spinner(message: String) -> indicatif::ProgressBar {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message(message);
    spinner
}

/// Builds one project into `apps`; true when a new version is there.
async fn rebuild(project: &Project, apps: &Path, errors: &BuildErrors) -> bool {
    let spinner = spinner(format!("building {}", project.name));
    let started = Instant::now();
    let result = build(&project.dir, apps, Profile::Iteration).await;
    spinner.finish_and_clear();
    match result {
        Ok(built) => {
            errors.set(&project.name, None);
            println!(
                "{}: built in {} ms -> {}",
                project.name,
                started.elapsed().as_millis(),
                built.wasm.display()
            );
            true
        }
        Err(e) => {
            let output = match &e {
                BuildError::Compile { output, .. } => format!("{output}\n{e}"),
                other => other.to_string(),
            };
            // Recorded before it is printed: whoever reads the message (a test, a
            // developer reloading the page) finds the error page already there.
            errors.set(&project.name, Some(output));
            eprintln!(
                "{}: build failed; the last good version keeps serving: {e}",
                project.name
            );
            false
        }
    }
}

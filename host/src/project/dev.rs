//! `wharf dev`: serve the apps directory and rebuild guest projects as their sources
//! change. A rebuilt app is swapped in place by the runtime (requests in flight finish
//! on the old version); a failed build leaves the last good version serving, and a
//! browser asking for that app gets the compiler's output instead.

use super::build::{BuildError, Profile, build};
use crate::fswatch::{self, RecursiveMode, SETTLE};
use crate::runtime::{LoadEvent, Runtime, print_when_optimised, report};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gateway::BuildErrors;

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

/// Watches the projects' sources and rebuilds the ones that changed, until the
/// returned watch is dropped. After a good build the runtime reloads the app at once
/// and the time from the save to the new version serving is printed.
pub fn watch(
    projects: Vec<Project>,
    apps: PathBuf,
    runtime: Arc<Runtime>,
    errors: Arc<BuildErrors>,
) -> anyhow::Result<fswatch::Watch> {
    let projects = Arc::new(projects);
    let dirs: Vec<_> = projects
        .iter()
        .map(|project| (project.dir.as_path(), RecursiveMode::Recursive))
        .collect();
    let (sources, building) = (projects.clone(), projects.clone());
    fswatch::watch(
        &dirs,
        move |path| sources.iter().position(|p| is_source(&p.dir, path)),
        move |changed| {
            // A batch settles SETTLE after its last event: the save.
            let saved = Instant::now() - SETTLE;
            let (projects, apps, runtime, errors) = (
                building.clone(),
                apps.clone(),
                runtime.clone(),
                errors.clone(),
            );
            async move {
                for index in changed {
                    let project = &projects[index];
                    println!("{}: sources changed, rebuilding", project.name);
                    if rebuild(project, &apps, &errors).await {
                        // The apps directory watcher would pick the file up too;
                        // reloading here tells when the new version is serving.
                        match runtime.reload(&project.name).await {
                            // Loaded by this reload, or already by the directory watcher.
                            LoadEvent::Loaded(_) | LoadEvent::Unchanged => {
                                let Some(app) = runtime.registry().get(&project.name).cloned()
                                else {
                                    continue;
                                };
                                println!(
                                    "{}: new version serving {} ms after the save ({})",
                                    project.name,
                                    saved.elapsed().as_millis(),
                                    app.tier.as_str()
                                );
                                print_when_optimised(&runtime, &app, saved, "the save");
                            }
                            // e.g. a route another app already serves: only the serving
                            // runtime can tell, not the check the build made.
                            other => report(other),
                        }
                    }
                }
            }
        },
    )
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

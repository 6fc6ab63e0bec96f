//! Hot reload: file events from the apps directory, debounced per app, each settled
//! app reloaded off the request path.

use super::{LoadEvent, Runtime, app_name};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Quiet time after the last file event before what changed is read again: an app
/// here, and likewise wharf.toml, certificates and `wharf dev`'s sources. A copy or a
/// save in progress keeps producing events, so the file is read once the writer has
/// paused (for certificates, once both the certificate and the key have landed); a
/// file still incomplete after that fails validation and the previous version stays.
pub(crate) const SETTLE: Duration = Duration::from_millis(150);

pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start(runtime: Arc<Runtime>) -> anyhow::Result<WatchHandle> {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Reads (ours included) show up as access events; only changes matter.
            Ok(event) if event.kind.is_access() || event.kind.is_other() => {}
            Ok(event) => {
                for name in event.paths.iter().filter_map(|p| app_name(p)) {
                    let _ = tx.send(name);
                }
            }
            Err(e) => tracing::warn!("file watcher: {e}"),
        }
    })?;
    watcher.watch(runtime.apps_dir(), RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut pending = BTreeSet::from([first]);
            // Gather until the directory has been quiet for SETTLE.
            while let Ok(Some(name)) = tokio::time::timeout(SETTLE, rx.recv()).await {
                pending.insert(name);
            }
            for name in pending {
                report(runtime.reload(&name).await);
            }
            runtime.remove_unused_artifacts().await;
        }
    });
    Ok(WatchHandle {
        _watcher: watcher,
        task,
    })
}

/// One log line per outcome.
pub fn report(event: LoadEvent) {
    match event {
        LoadEvent::Loaded(app) => tracing::info!(
            app = %app.name,
            file = %app.file.display(),
            routes = ?app.routes,
            origin = ?app.origin,
            "app loaded"
        ),
        LoadEvent::Removed(name) => tracing::info!(app = %name, "app removed"),
        LoadEvent::Failed(name, e) => {
            tracing::error!(app = %name, "app not loaded, previous version (if any) keeps serving: {e:#}")
        }
        LoadEvent::Unchanged => {}
    }
}

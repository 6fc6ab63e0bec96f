//! Hot reload: the apps directory watched through [`crate::fswatch`], each settled
//! batch of changed apps reloaded off the request path.

use super::{App, LoadEvent, Runtime, TierKind, app_name};
use crate::fswatch::{self, RecursiveMode};
use std::sync::Arc;
use std::time::Instant;

// The wharf.toml watcher in server.rs reads the settle time from here.

/// Reloads the apps whose files change until the returned watch is dropped.
pub fn start(runtime: Arc<Runtime>) -> anyhow::Result<fswatch::Watch> {
    let dir = runtime.apps_dir().to_path_buf();
    fswatch::watch(
        &[(&dir, RecursiveMode::NonRecursive)],
        app_name,
        move |names| {
            let runtime = runtime.clone();
            async move {
                for name in names {
                    report(runtime.reload(&name).await);
                }
                runtime.remove_unused_artifacts().await;
            }
        },
    )
}

/// One log line per outcome.
pub fn report(event: LoadEvent) {
    match event {
        LoadEvent::Loaded(app) => tracing::info!(
            app = %app.name,
            file = %app.file.display(),
            routes = ?app.routes,
            origin = ?app.origin,
            tier = app.tier.as_str(),
            "app loaded"
        ),
        LoadEvent::Removed(name) => tracing::info!(app = %name, "app removed"),
        LoadEvent::Failed(name, e) => {
            tracing::error!(app = %name, "app not loaded, previous version (if any) keeps serving: {e:#}")
        }
        LoadEvent::Unchanged => {}
    }
}

/// Once `app` (serving from the baseline tier) has its optimised build serving, prints
/// `NAME: optimised build serving N ms after WHAT`, N counted from `since`. Nothing if
/// it changes first, or serves from its last tier already.
pub fn print_when_optimised(runtime: &Arc<Runtime>, app: &App, since: Instant, what: &'static str) {
    if app.tier != TierKind::Baseline {
        return;
    }
    let optimised = runtime.until_optimised(&app.name, app.fingerprint);
    tokio::spawn(async move {
        if let Some(app) = optimised.await
            && app.tier == TierKind::Optimised
        {
            println!(
                "{}: optimised build serving {} ms after {what}",
                app.name,
                since.elapsed().as_millis()
            );
        }
    });
}

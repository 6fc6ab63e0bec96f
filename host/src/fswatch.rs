//! The one debounced file watcher: the apps directory, certificates, wharf.toml and
//! `wharf dev`'s projects all learn of their changes through it, with one settle rule.
//!
//! Directories are watched, never single files: editors, `cp`/`mv` and deploy tools
//! replace a file with a new inode by renaming it into place, which a watch on the old
//! file would never report, and certbot-style renewals swap a symlink in the directory.
//! Each path an event names is mapped to a key the caller cares about (an app, a TLS
//! site, a project), or dropped; access events are dropped too (reading a file, ours
//! included, is not a change).
//!
//! The settle rule: a batch is delivered once no event has arrived for [`SETTLE`], and
//! holds every key seen since the batch began. The debouncer crates of notify settle
//! each path on its own timer (and `notify-debouncer-mini` emits events for a file still
//! being written), so a certificate and its key written one after the other could be
//! read apart; one quiet period for the whole batch reads them together.

use anyhow::Context;
use notify::Watcher;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

pub use notify::RecursiveMode;

/// Quiet time after the last file event before what changed is read again. A copy or a
/// save in progress keeps producing events, so a file is read once the writer has
/// paused (for certificates, once both the certificate and the key have landed); a file
/// still incomplete after that fails validation, and the previous version stays.
pub const SETTLE: Duration = Duration::from_millis(150);

/// A running watch; dropping it stops watching and ends the delivery of batches (a
/// batch being handled is cut short at its next await).
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `dirs` and calls `on_change` with each settled batch of the keys `key` maps
/// the changed paths to. Paths come as the watcher reports them: the watched directory
/// as given, joined with the names below it. Batches are handled one at a time: events
/// that arrive meanwhile make up the next one. Must be called inside a Tokio runtime.
pub fn watch<K, F, Fut>(
    dirs: &[(&Path, RecursiveMode)],
    key: impl Fn(&Path) -> Option<K> + Send + 'static,
    mut on_change: F,
) -> anyhow::Result<Watch>
where
    K: Ord + Send + 'static,
    F: FnMut(BTreeSet<K>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let watched = dirs
        .iter()
        .map(|(dir, _)| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (tx, mut rx) = mpsc::unbounded_channel::<K>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.kind.is_access() => {}
            Ok(event) => {
                for key in event.paths.iter().filter_map(|path| key(path)) {
                    let _ = tx.send(key);
                }
            }
            Err(e) => tracing::warn!("watching {watched}: {e}"),
        })?;
    for (dir, mode) in dirs {
        watcher
            .watch(dir, *mode)
            .with_context(|| format!("watching {}", dir.display()))?;
    }
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = BTreeSet::from([first]);
            while let Ok(Some(key)) = tokio::time::timeout(SETTLE, rx.recv()).await {
                batch.insert(key);
            }
            on_change(batch).await;
        }
    });
    Ok(Watch {
        _watcher: watcher,
        task,
    })
}

/// Watches one file (through its directory, see the module doc) and calls `on_change`
/// once per settled change: written, created, replaced or removed. Must be called
/// inside a Tokio runtime.
pub fn watch_file<F, Fut>(path: &Path, mut on_change: F) -> anyhow::Result<Watch>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (dir, file) = watch_target(path)?;
    watch(
        &[(&dir, RecursiveMode::NonRecursive)],
        move |changed| (changed == file).then_some(()),
        move |_| on_change(),
    )
}

/// The directory to watch for `path` (canonical, as the watcher reports paths under
/// the watched directory) and the path events for the file will carry. The file itself
/// is not resolved: it may not exist yet, and a symlink swapped in its place (certbot,
/// a Kubernetes ConfigMap) must keep being seen under its own name.
pub(crate) fn watch_target(path: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let name = path
        .file_name()
        .with_context(|| format!("watching {}: does not name a file", path.display()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = parent
        .canonicalize()
        .with_context(|| format!("watching {}", parent.display()))?;
    let file = dir.join(name);
    Ok((dir, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    type Batches = Arc<Mutex<Vec<BTreeSet<String>>>>;

    /// Watches `dir`, keying each path by its file name; the batches seen so far.
    fn watch_names(dir: &Path) -> (Watch, Batches) {
        let batches = Batches::default();
        let seen = batches.clone();
        let watch = watch(
            &[(dir, RecursiveMode::NonRecursive)],
            |path| Some(path.file_name()?.to_string_lossy().into_owned()),
            move |batch| {
                seen.lock().unwrap().push(batch);
                std::future::ready(())
            },
        )
        .unwrap();
        (watch, batches)
    }

    /// Waits, at most five seconds, for the first batch; the batches then.
    async fn first_batch(batches: &Batches) -> Vec<BTreeSet<String>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while batches.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no batch within five seconds");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        batches.lock().unwrap().clone()
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[tokio::test]
    async fn a_burst_of_writes_to_several_files_is_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (_watch, batches) = watch_names(dir.path());
        // Each pause is well inside the quiet period, and the burst outlasts it: the
        // batch waits for quiet after the last write, not a fixed time from the first.
        for round in 0..8 {
            for name in ["a.txt", "b.txt"] {
                std::fs::write(dir.path().join(name), format!("{round}")).unwrap();
            }
            tokio::time::sleep(SETTLE / 5).await;
        }
        let seen = first_batch(&batches).await;
        assert_eq!(seen, [names(&["a.txt", "b.txt"])]);
        // Nothing more comes: the burst was delivered whole.
        tokio::time::sleep(SETTLE * 3).await;
        assert_eq!(batches.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_file_renamed_into_place_is_seen_under_its_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wharf.toml");
        std::fs::write(&file, "old").unwrap();
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let _watch = watch_file(&file, move || {
            *counted.lock().unwrap() += 1;
            std::future::ready(())
        })
        .unwrap();
        // An editor's save: a new file beside it, renamed over it. The temporary file
        // alone is not the watched one.
        let tmp = dir.path().join(".wharf.toml.swp");
        std::fs::write(&tmp, "new").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while *calls.lock().unwrap() == 0 {
            assert!(Instant::now() < deadline, "the rename was not seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(SETTLE * 3).await;
        assert_eq!(*calls.lock().unwrap(), 1, "one call per settled change");
    }

    #[tokio::test]
    async fn a_symlink_swapped_to_another_target_is_seen() {
        // As a Kubernetes ConfigMap or certbot's live/ directory: the watched name is a
        // symlink, and an update points a new symlink at a file elsewhere, renamed over.
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("v1"), dir.path().join("v2"));
        for (version, text) in [(&first, "old"), (&second, "new")] {
            std::fs::create_dir(version).unwrap();
            std::fs::write(version.join("wharf.toml"), text).unwrap();
        }
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        let file = conf.join("wharf.toml");
        std::os::unix::fs::symlink(first.join("wharf.toml"), &file).unwrap();
        let calls = Arc::new(Mutex::new(0));
        let counted = calls.clone();
        let _watch = watch_file(&file, move || {
            *counted.lock().unwrap() += 1;
            std::future::ready(())
        })
        .unwrap();
        let tmp = conf.join(".wharf.toml.new");
        std::os::unix::fs::symlink(second.join("wharf.toml"), &tmp).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while *calls.lock().unwrap() == 0 {
            assert!(
                Instant::now() < deadline,
                "the swapped symlink was not seen"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn paths_without_a_key_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let batches = Batches::default();
        let seen = batches.clone();
        let _watch = watch(
            &[(dir.path(), RecursiveMode::NonRecursive)],
            |path| {
                let name = path.file_name()?.to_string_lossy().into_owned();
                name.ends_with(".wasm").then_some(name)
            },
            move |batch| {
                seen.lock().unwrap().push(batch);
                std::future::ready(())
            },
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::write(dir.path().join("app.wasm"), "x").unwrap();
        assert_eq!(first_batch(&batches).await, [names(&["app.wasm"])]);
    }

    #[tokio::test]
    async fn dropping_the_watch_stops_the_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (watch, batches) = watch_names(dir.path());
        std::fs::write(dir.path().join("a.txt"), "1").unwrap();
        first_batch(&batches).await;
        drop(watch);
        std::fs::write(dir.path().join("b.txt"), "2").unwrap();
        tokio::time::sleep(SETTLE * 3).await;
        assert_eq!(batches.lock().unwrap().as_slice(), [names(&["a.txt"])]);
    }
}

//! keepalived's track file. In it, wharf says whether this node should hold the
//! address it shares with its peer. A node that stops being ready then gives the
//! address up at once; no check script has to poll `/readyz`.
//!
//! The file follows keepalived's `vrrp_track_file` with `weight 0`. `0` means hold the
//! address. Any other value puts the VRRP instance in FAULT, which gives it up. wharf
//! writes `1` for that.

use super::live::Live;
use arc_swap::ArcSwapOption;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the node's health is read into the file. A reading is a few atomics and
/// snapshots. 50 ms is well inside the 3 × 0.1 s keepalived needs to notice a dead peer.
const EVERY: Duration = Duration::from_millis(50);

/// Keeps the file at `path` (reloads may change it) true to the node until aborted.
/// It is written only when its answer changes. A write that fails is logged and tried
/// again on the next tick.
pub async fn keep(path: Arc<ArcSwapOption<PathBuf>>, live: Arc<Live>) {
    let mut written: Option<(PathBuf, bool)> = None;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(path) = path.load_full() else {
            written = None;
            continue;
        };
        let holds = live.holds_shared_address();
        if written.as_ref() == Some(&(path.to_path_buf(), holds)) {
            continue;
        }
        match write(&path, holds) {
            Ok(()) => {
                tracing::info!(file = %path.display(), holds, "track file written");
                written = Some((path.to_path_buf(), holds));
            }
            Err(e) => tracing::warn!("track file {}: {e}", path.display()),
        }
    }
}

/// Writes the file whole: a new file renamed over the old. keepalived never reads a
/// half-written value.
pub fn write(path: &Path, holds: bool) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".wharf-new");
    let new = path.with_file_name(name);
    std::fs::write(&new, if holds { "0\n" } else { "1\n" })?;
    std::fs::rename(&new, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_says_0_to_hold_and_1_to_give_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        write(&path, true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n");
        write(&path, false).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        // Only the file itself is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Waits (at most 5 s) for the file to say `want`.
    async fn says(path: &Path, want: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = std::fs::read_to_string(path).unwrap_or_default();
            if now == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{now:?}, not {want:?}"
            );
            tokio::time::sleep(EVERY / 5).await;
        }
    }

    #[tokio::test]
    async fn a_draining_node_gives_up_the_address_only_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        let live = Live::for_test();
        let keeper = tokio::spawn(keep(
            Arc::new(ArcSwapOption::from_pointee(path.clone())),
            live.clone(),
        ));
        says(&path, "0\n").await;
        live.readiness.start_draining();
        // A few ticks: still held while the connections open at the drain finish.
        tokio::time::sleep(EVERY * 3).await;
        says(&path, "0\n").await;
        live.readiness.release();
        says(&path, "1\n").await;
        keeper.abort();
    }
}

//! Logging setup and the admin listener's health checks. Metrics and the status page
//! come later.

pub mod admin;

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Logs to stderr (stdout carries the listening line and app table), as text or JSON.
/// `RUST_LOG` overrides the level; the default is `info`.
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

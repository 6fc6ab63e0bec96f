//! Headless Chromium for the tests of the status page: what a real browser renders
//! from `/status.json`.

use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;

/// Headless Chromium, offline: every host name but `ip` fails to resolve, so nothing
/// else is reached.
pub fn chromium(ip: std::net::IpAddr, args: &[&str]) -> std::process::Output {
    crate::needs("chromium");
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--no-pings",
            &format!("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {ip}"),
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(args)
        .output()
        .expect("chromium runs")
}

/// Every `data-field` of `dom` with its `data-value`, the raw JSON value the page
/// rendered it from.
pub fn rendered_fields(dom: &str) -> HashMap<String, Value> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    };
    let attribute = |tag: &str, name: &str| {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = tag[start..].find('"')?;
        Some(unescape(&tag[start..start + len]))
    };
    dom.split('<')
        .filter_map(|tag| {
            let tag = tag.split('>').next()?;
            let field = attribute(tag, "data-field")?;
            let value = serde_json::from_str(&attribute(tag, "data-value")?).ok()?;
            Some((field, value))
        })
        .collect()
}

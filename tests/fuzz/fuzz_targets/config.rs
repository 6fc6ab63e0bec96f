//! wharf.toml: any text is either a checked `Config` or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = wharf::config::Config::parse(text);
});

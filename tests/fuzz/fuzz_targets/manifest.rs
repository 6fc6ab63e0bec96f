//! An app's manifest (`apps/NAME.toml`) and the outbound rules in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::runtime::manifest::{Manifest, OutboundRule};

fuzz_target!(|text: &str| {
    let _ = Manifest::parse(text);
    // The rule parser also meets strings no TOML parser has unescaped.
    let _ = OutboundRule::parse(text);
});

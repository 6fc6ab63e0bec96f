//! `[[upstream]] backends` addresses (`host:port`, `http://`, `https://`, `[v6]`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::config::BackendAddress;

fuzz_target!(|text: &str| {
    if let Ok(address) = text.parse::<BackendAddress>() {
        // Status pages and logs print the address; it must read back as itself.
        let printed = address.to_string();
        assert_eq!(printed.parse::<BackendAddress>(), Ok(address), "{printed}");
    }
});

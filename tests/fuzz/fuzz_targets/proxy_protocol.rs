//! The PROXY protocol reader over the first bytes of a connection: it never panics,
//! a header it finds lies within the bytes, and more bytes never turn a header or a
//! "not a header" into something else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::net::proxy_protocol::{Parsed, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Header { len, .. } => {
            assert!(len > 0 && len <= data.len(), "header of {len} in {} bytes", data.len());
            // What follows the header belongs to the client: the header alone reads the same.
            assert!(matches!(parse(&data[..len]), Parsed::Header { len: l, .. } if l == len));
        }
        Parsed::NotProxy => {
            let mut longer = data.to_vec();
            longer.extend(b"GET / HTTP/1.1\r\n");
            assert!(matches!(parse(&longer), Parsed::NotProxy));
        }
        Parsed::Incomplete | Parsed::Invalid => {}
    }
});

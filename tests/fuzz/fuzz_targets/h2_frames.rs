//! The HTTP/2 frame-header scanner: it never panics, and however the client's bytes are
//! sliced into reads, it finds the same frame headers. The first byte picks the slicing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf::net::h2_guard::{FrameHeader, FrameScanner};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn scan(bytes: &[u8], step: usize) -> Vec<FrameHeader> {
    let mut scanner = FrameScanner::default();
    let mut frames = Vec::new();
    for chunk in bytes.chunks(step) {
        scanner.feed(chunk, |frame| frames.push(frame));
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let bytes = [PREFACE, rest].concat();
    let whole = scan(&bytes, bytes.len());
    assert_eq!(scan(&bytes, 1 + pick as usize % 17), whole);
});

//! HTTP/2 "glitches": protocol misuse the h2 crate tolerates but a well-behaved client
//! never commits in numbers (HAProxy 2.9 counts the same things). Each HTTP/2 connection
//! counts its client's glitches; past `http2_max_glitches` it is sent GOAWAY and closed.
//!
//! What counts as one glitch:
//! - a RST_STREAM from the client (cancelling is legitimate, thousands of times is the
//!   rapid-reset attack);
//! - an empty DATA frame that does not end its stream (it moves no byte, only work);
//! - a CONTINUATION frame under [`TINY_CONTINUATION`] bytes that does not end the header
//!   block (the CONTINUATION flood: h2 bounds the block by the header list size, this
//!   bounds the frame count);
//! - a SETTINGS or PING (not an ACK) past [`CONTROL_BURST`] at once, refilled at
//!   [`CONTROL_PER_SECOND`]: h2 answers each, one at a time.
//!
//! h2 itself refuses the rest (a zero WINDOW_UPDATE, a window overflowing 2^31-1, more
//! streams than allowed, resets of streams not yet accepted past
//! `max_pending_accept_reset_streams`), so they are not counted again here.
//!
//! The inspector only follows frame headers (9 bytes each, after the 24-byte client
//! preface) on the read side; payloads are skipped, never buffered. A connection that
//! does not start with the preface is HTTP/1 and is left alone.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A CONTINUATION smaller than this that does not end the header block is a glitch:
/// real encoders fill frames up to the peer's max frame size (16 KiB at least).
pub const TINY_CONTINUATION: u32 = 16;
/// SETTINGS or PING frames a client may send at once before they count as glitches.
pub const CONTROL_BURST: f64 = 10.0;
/// How fast that allowance comes back.
pub const CONTROL_PER_SECOND: f64 = 10.0;

pub const DATA: u8 = 0x0;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The 9-byte header of one HTTP/2 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; 9]) -> Self {
        Self {
            length: u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]),
            kind: bytes[3],
            flags: bytes[4],
            // The reserved top bit is ignored, as RFC 9113 says.
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }
}

/// Follows the frame headers of a client's byte stream, given in any slicing.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// This many bytes of the preface seen so far.
    Preface(usize),
    /// Not HTTP/2 (or past a malformed frame): nothing more to follow.
    Inert,
    Header([u8; 9], usize),
    Payload(u32),
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self {
            state: State::Preface(0),
        }
    }
}

impl FrameScanner {
    /// Whether the stream has shown the HTTP/2 preface.
    pub fn is_http2(&self) -> bool {
        matches!(self.state, State::Header(..) | State::Payload(_))
    }

    /// Feeds the next bytes read; calls `frame` for each frame header completed.
    pub fn feed(&mut self, mut bytes: &[u8], mut frame: impl FnMut(FrameHeader)) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Inert => return,
                State::Preface(seen) => {
                    let n = (PREFACE.len() - *seen).min(bytes.len());
                    if bytes[..n] != PREFACE[*seen..*seen + n] {
                        self.state = State::Inert;
                        return;
                    }
                    *seen += n;
                    bytes = &bytes[n..];
                    if *seen == PREFACE.len() {
                        self.state = State::Header([0; 9], 0);
                    }
                }
                State::Header(buf, filled) => {
                    let n = (9 - *filled).min(bytes.len());
                    buf[*filled..*filled + n].copy_from_slice(&bytes[..n]);
                    *filled += n;
                    bytes = &bytes[n..];
                    if *filled == 9 {
                        let header = FrameHeader::parse(buf);
                        frame(header);
                        self.state = match header.length {
                            0 => State::Header([0; 9], 0),
                            length => State::Payload(length),
                        };
                    }
                }
                State::Payload(left) => {
                    let n = (*left as usize).min(bytes.len());
                    *left -= n as u32;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.state = State::Header([0; 9], 0);
                    }
                }
            }
        }
    }
}

/// One connection's glitch count against its threshold.
#[derive(Debug)]
pub struct Glitches {
    count: u32,
    max: u32,
    settings: Bucket,
    pings: Bucket,
}

impl Glitches {
    pub fn new(max: u32, now: Instant) -> Self {
        Self {
            count: 0,
            max,
            settings: Bucket::full(now),
            pings: Bucket::full(now),
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Counts `frame` if it is a glitch; true once the count passes the threshold.
    pub fn observe(&mut self, frame: &FrameHeader, now: Instant) -> bool {
        let glitch = match frame.kind {
            RST_STREAM => true,
            DATA => frame.length == 0 && frame.flags & END_STREAM == 0,
            CONTINUATION => frame.length < TINY_CONTINUATION && frame.flags & END_HEADERS == 0,
            SETTINGS if frame.flags & ACK == 0 => !self.settings.take(now),
            PING if frame.flags & ACK == 0 => !self.pings.take(now),
            _ => false,
        };
        if glitch {
            self.count = self.count.saturating_add(1);
        }
        self.count > self.max
    }
}

/// A token bucket of [`CONTROL_BURST`] refilled at [`CONTROL_PER_SECOND`].
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Self {
            tokens: CONTROL_BURST,
            at: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * CONTROL_PER_SECOND).min(CONTROL_BURST);
        self.at = now;
        let ok = self.tokens >= 1.0;
        if ok {
            self.tokens -= 1.0;
        }
        ok
    }
}

/// The client's side of a connection as hyper reads it, with its glitches counted.
/// `tripped` is notified once, when the count passes the threshold.
pub struct GuardedIo<S> {
    inner: S,
    scanner: FrameScanner,
    glitches: Glitches,
    tripped: Option<Arc<Notify>>,
}

impl<S> GuardedIo<S> {
    pub fn new(inner: S, max_glitches: u32, tripped: Arc<Notify>) -> Self {
        Self {
            inner,
            scanner: FrameScanner::default(),
            glitches: Glitches::new(max_glitches, Instant::now()),
            tripped: Some(tripped),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.tripped.is_some() {
            let now = Instant::now();
            let (glitches, mut over) = (&mut this.glitches, false);
            this.scanner.feed(&buf.filled()[before..], |frame| {
                over |= glitches.observe(&frame, now);
            });
            if over && let Some(tripped) = this.tripped.take() {
                tracing::debug!(
                    glitches = this.glitches.count(),
                    "HTTP/2 client past its glitch threshold"
                );
                tripped.notify_one();
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    write_through!(inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn scan_all(bytes: &[u8], chunk: usize) -> (Vec<FrameHeader>, bool) {
        let mut scanner = FrameScanner::default();
        let mut seen = Vec::new();
        for piece in bytes.chunks(chunk) {
            scanner.feed(piece, |f| seen.push(f));
        }
        (seen, scanner.is_http2())
    }

    #[test]
    fn frame_headers_are_found_however_the_bytes_are_sliced() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[0; 6]));
        bytes.extend(frame(0x1, 0x5, 1, &[0x82; 20]));
        bytes.extend(frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        bytes.extend(frame(DATA, 0, 0x8000_0003, &[]));
        for chunk in [1, 2, 7, 9, 10, 1000] {
            let (seen, http2) = scan_all(&bytes, chunk);
            assert!(http2);
            let kinds: Vec<_> = seen.iter().map(|f| (f.kind, f.length, f.stream)).collect();
            assert_eq!(
                kinds,
                [
                    (SETTINGS, 6, 0),
                    (0x1, 20, 1),
                    (RST_STREAM, 4, 1),
                    (DATA, 0, 3)
                ],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn an_http1_request_is_not_followed() {
        let (seen, http2) = scan_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 3);
        assert!(seen.is_empty());
        assert!(!http2);
        let (seen, http2) = scan_all(b"PRI * HTTP/1.1\r\n\r\n", 100);
        assert!(seen.is_empty() && !http2);
    }

    #[test]
    fn resets_empty_data_and_tiny_continuations_are_glitches_and_the_threshold_trips_past_max() {
        let now = Instant::now();
        let mut glitches = Glitches::new(3, now);
        let header = |kind, flags, length| FrameHeader {
            length,
            kind,
            flags,
            stream: 1,
        };
        // Legitimate frames: a full DATA, the end of a stream, a header block's end.
        assert!(!glitches.observe(&header(DATA, 0, 100), now));
        assert!(!glitches.observe(&header(DATA, END_STREAM, 0), now));
        assert!(!glitches.observe(&header(CONTINUATION, END_HEADERS, 3), now));
        assert!(!glitches.observe(&header(CONTINUATION, 0, 16_384), now));
        assert_eq!(glitches.count(), 0);
        assert!(!glitches.observe(&header(RST_STREAM, 0, 4), now));
        assert!(!glitches.observe(&header(DATA, 0, 0), now));
        assert!(!glitches.observe(&header(CONTINUATION, 0, 1), now));
        assert_eq!(glitches.count(), 3);
        assert!(glitches.observe(&header(RST_STREAM, 0, 4), now));
    }

    #[test]
    fn settings_and_pings_count_only_past_their_burst_and_acks_never() {
        let now = Instant::now();
        let mut glitches = Glitches::new(1000, now);
        let ping = FrameHeader {
            length: 8,
            kind: PING,
            flags: 0,
            stream: 0,
        };
        for _ in 0..CONTROL_BURST as u32 {
            glitches.observe(&ping, now);
        }
        assert_eq!(glitches.count(), 0);
        glitches.observe(&ping, now);
        assert_eq!(glitches.count(), 1);
        // A second later the allowance is back.
        glitches.observe(&ping, now + Duration::from_secs(1));
        assert_eq!(glitches.count(), 1);
        let ack = FrameHeader { flags: ACK, ..ping };
        for _ in 0..100 {
            glitches.observe(&ack, now);
        }
        let settings_ack = FrameHeader {
            kind: SETTINGS,
            length: 0,
            ..ack
        };
        for _ in 0..100 {
            glitches.observe(&settings_ack, now);
        }
        assert_eq!(glitches.count(), 1);
    }
}

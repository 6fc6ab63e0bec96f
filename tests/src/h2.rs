//! A tiny HTTP/2 client speaking raw frames, for tests that send what no real client
//! would: floods, resets, broken windows. Requests are HPACK literals without
//! indexing (no Huffman, no dynamic table), answers are read as frame headers and
//! payload bytes, never decoded.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// Error codes of RFC 9113 section 7.
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: its header's fields and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Self {
        Self {
            kind,
            flags,
            stream,
            payload: payload.to_vec(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let len = (self.payload.len() as u32).to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], self.kind, self.flags];
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// A GOAWAY's error code, or a RST_STREAM's.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let code = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(code.try_into().unwrap()))
    }
}

pub fn settings(values: &[(u16, u32)]) -> Frame {
    let mut payload = Vec::new();
    for (id, value) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    Frame::new(SETTINGS, 0, 0, &payload)
}

pub fn ping(data: u64) -> Frame {
    Frame::new(PING, 0, 0, &data.to_be_bytes())
}

pub fn rst_stream(stream: u32, code: u32) -> Frame {
    Frame::new(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Frame {
    Frame::new(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// A header field as an HPACK literal without indexing, with a new name.
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(string(name.as_bytes()));
    out.extend(string(value.as_bytes()));
    out
}

/// An HPACK string literal: a 7-bit prefixed length, no Huffman.
fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut len = bytes.len();
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        len -= 127;
        while len >= 128 {
            out.push((len % 128 + 128) as u8);
            len /= 128;
        }
        out.push(len as u8);
    }
    out.extend_from_slice(bytes);
    out
}

/// The header block of `GET path` on `authority` over http.
pub fn get_block(authority: &str, path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
    ] {
        block.extend(literal(name, value));
    }
    block
}

/// HEADERS of a whole `GET path` request (END_HEADERS, END_STREAM) on `stream`.
pub fn get(stream: u32, authority: &str, path: &str) -> Frame {
    Frame::new(
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &get_block(authority, path),
    )
}

/// A cleartext HTTP/2 connection (prior knowledge) that has sent its preface and an
/// empty SETTINGS.
pub struct Conn {
    tcp: TcpStream,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Self {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(PREFACE).await.unwrap();
        tcp.write_all(&settings(&[]).bytes()).await.unwrap();
        Self { tcp }
    }

    /// Writes `frames` in one write.
    pub async fn send(&mut self, frames: &[Frame]) -> std::io::Result<()> {
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::bytes).collect();
        self.tcp.write_all(&bytes).await
    }

    /// The next frame, `None` once the server closed the connection (or reset it);
    /// panics past `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        let read = async {
            let mut head = [0u8; 9];
            self.tcp.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            self.tcp.read_exact(&mut payload).await.ok()?;
            Some(Frame {
                kind: head[3],
                flags: head[4],
                stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
                payload,
            })
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| panic!("no frame and no close within {timeout:?}"))
    }

    /// Every frame until the server closes the connection, within `timeout`. PINGs are
    /// acknowledged, as any client does: h2's graceful GOAWAY waits for that.
    pub async fn until_closed(&mut self, timeout: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        // Bounded by the deadline: each read waits at most what is left of it.
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(frame) => {
                    if frame.kind == PING && frame.flags & ACK == 0 {
                        let ack = Frame::new(PING, ACK, 0, &frame.payload);
                        let _ = self.send(&[ack]).await;
                    }
                    frames.push(frame)
                }
                None => return frames,
            }
        }
    }
}

/// The error code of the first GOAWAY among `frames`.
pub fn goaway_code(frames: &[Frame]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.kind == GOAWAY)
        .and_then(Frame::error_code)
}

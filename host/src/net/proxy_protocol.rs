//! The PROXY protocol (v1 text and v2 binary): the address of the client a proxy in
//! front of wharf accepted, sent ahead of the proxied bytes. Read only from trusted
//! proxies, on listeners that enable it, before TLS.

use ppp::{PartialResult, v1, v2};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, `\r\n` included.
const V1_MAX: usize = 107;
/// The longest header: v2's 16 bytes and a 16-bit length of addresses and TLVs (v1 is
/// at most 107 bytes).
const MAX_HEADER: usize = 16 + u16::MAX as usize;

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// A signature, or the start of one: more bytes decide.
    Incomplete,
    /// No PROXY header: the bytes are the client's own (TLS or HTTP).
    NotProxy,
    /// A signature followed by what no header can be.
    Invalid,
    /// A header of `len` bytes. `client` is `None` for LOCAL (the proxy's own health
    /// check) and for UNKNOWN or non-IP addresses: the peer is the client then.
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
}

/// Reads a header off the start of `buf`, which holds the first bytes of a connection.
pub fn parse(buf: &[u8]) -> Parsed {
    let starts = |signature: &[u8]| match buf.len() < signature.len() {
        true => signature.starts_with(buf),
        false => buf.starts_with(signature),
    };
    let (v1, v2) = (starts(V1_SIGNATURE), starts(V2_SIGNATURE));
    if !v1 && !v2 {
        return Parsed::NotProxy;
    }
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if v1 {
        // ppp reads a line cut inside a number as a whole one: it gets only whole lines.
        let Some(end) = buf.iter().position(|&b| b == b'\n') else {
            return match buf.len() < V1_MAX {
                true => Parsed::Incomplete,
                false => Parsed::Invalid,
            };
        };
        match v1::Header::try_from(&buf[..=end]) {
            Ok(header) => Parsed::Header {
                len: header.header.len(),
                client: match header.addresses {
                    v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                    v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                    v1::Addresses::Unknown => None,
                },
            },
            Err(_) => Parsed::Invalid,
        }
    } else {
        match v2::Header::try_from(buf) {
            Ok(header) => Parsed::Header {
                len: header.len(),
                client: match (header.command, header.addresses) {
                    (v2::Command::Local, _) => None,
                    (_, v2::Addresses::IPv4(a)) => Some((a.source_address, a.source_port).into()),
                    (_, v2::Addresses::IPv6(a)) => Some((a.source_address, a.source_port).into()),
                    (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
                },
            },
            Err(e) if e.is_incomplete() => Parsed::Incomplete,
            Err(_) => Parsed::Invalid,
        }
    }
}

/// Reads a PROXY header, if the connection starts with one, within `timeout`: the
/// client it names (`None`: the peer is the client) and the bytes read past it, which
/// belong to TLS or HTTP. A malformed or cut header, or none in time, is an error: the
/// connection is to be closed.
pub async fn read_header(
    tcp: &mut TcpStream,
    timeout: Duration,
) -> io::Result<(Option<SocketAddr>, Vec<u8>)> {
    let read = async {
        let mut buf = Vec::with_capacity(256);
        loop {
            match parse(&buf) {
                Parsed::NotProxy => return Ok((None, buf)),
                Parsed::Header { len, client } => return Ok((client, buf.split_off(len))),
                Parsed::Invalid => return Err(invalid("malformed PROXY protocol header")),
                // Bounded by the parser too: v1 ends within 107 bytes, v2 at its length.
                Parsed::Incomplete if buf.len() >= MAX_HEADER => {
                    return Err(invalid("PROXY protocol header too long"));
                }
                Parsed::Incomplete => {
                    if tcp.read_buf(&mut buf).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed within its PROXY protocol header",
                        ));
                    }
                }
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete PROXY protocol header in time",
            ))
        })
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend([command, family]);
        header.extend((addresses.len() as u16).to_be_bytes());
        header.extend(addresses);
        header
    }

    #[test]
    fn a_v1_header_names_the_client_and_its_length() {
        let line = b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 443\r\n";
        let mut buf = line.to_vec();
        buf.extend(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&buf),
            Parsed::Header {
                len: line.len(),
                client: Some("192.0.2.7:4711".parse().unwrap())
            }
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 4711 443\r\n";
        assert_eq!(
            parse(line),
            Parsed::Header {
                len: line.len(),
                client: Some("[2001:db8::1]:4711".parse().unwrap())
            }
        );
        let line = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            parse(line),
            Parsed::Header {
                len: line.len(),
                client: None
            }
        );
    }

    #[test]
    fn a_v2_header_names_the_client_unless_it_is_local() {
        let addresses = [192, 0, 2, 7, 127, 0, 0, 1, 0x12, 0x67, 0x01, 0xbb];
        let mut buf = v2(0x21, 0x11, &addresses);
        let len = buf.len();
        buf.extend([0x16, 0x03, 0x01]);
        assert_eq!(
            parse(&buf),
            Parsed::Header {
                len,
                client: Some("192.0.2.7:4711".parse().unwrap())
            }
        );
        let local = v2(0x20, 0x00, &[]);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                len: 16,
                client: None
            }
        );
    }

    #[test]
    fn every_cut_of_a_header_is_incomplete() {
        let line = b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 443\r\n";
        let binary = v2(
            0x21,
            0x11,
            &[192, 0, 2, 7, 127, 0, 0, 1, 0x12, 0x67, 0x01, 0xbb],
        );
        for header in [&line[..], &binary] {
            for cut in 0..header.len() {
                assert_eq!(parse(&header[..cut]), Parsed::Incomplete, "{cut} bytes");
            }
        }
    }

    #[test]
    fn tls_and_http_are_not_proxy_headers() {
        assert_eq!(parse(&[0x16, 0x03, 0x01, 0x02]), Parsed::NotProxy);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::NotProxy);
        assert_eq!(parse(b"PUT"), Parsed::NotProxy);
        assert_eq!(parse(b"\r\n\r\nGET"), Parsed::NotProxy);
        assert_eq!(parse(&[b'a'; 200]), Parsed::NotProxy);
    }

    #[test]
    fn a_malformed_header_is_invalid() {
        assert_eq!(parse(b"PROXY TCP4 nonsense\r\n"), Parsed::Invalid);
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7\r\n"), Parsed::Invalid);
        assert_eq!(
            parse(b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n"),
            Parsed::Invalid
        );
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend([b'1'; 120]);
        assert_eq!(parse(&long), Parsed::Invalid);
        // Version 3.
        assert_eq!(parse(&v2(0x31, 0x11, &[0; 12])), Parsed::Invalid);
        // Fewer address bytes than the family has.
        assert_eq!(parse(&v2(0x21, 0x11, &[0; 4])), Parsed::Invalid);
    }
}

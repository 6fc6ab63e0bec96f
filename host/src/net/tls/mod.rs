//! HTTPS building blocks: certificates chosen by SNI name ([`table`]), read from PEM
//! files and checked ([`load`]), reloaded when their files change ([`watch`]), the
//! rustls server configuration, and a handshake bounded in time.
//!
//! The crypto provider is always aws-lc-rs ([`provider`]), passed explicitly to every
//! server and client configuration: rustls' process-wide default is chosen from crate
//! features, and building a configuration panics if another crate in the binary ever
//! enables a second provider. aws-lc-rs does a full handshake in well under ring's
//! time (BENCHMARKS.md, "TLS handshakes").

mod challenge;
mod load;
mod table;
mod watch;

pub use challenge::{ACME_TLS_ALPN, Challenges, HTTP01_PREFIX};
pub(crate) use load::{parse_pem, self_signed_pem};
pub use table::{Certificates, Expiry};
pub use watch::CertStore;

use crate::http::HostPattern;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSite {
    /// Identifies the site in logs.
    pub name: String,
    /// Exact host names, or `*.example.com` for any single label under example.com.
    pub hosts: Vec<HostPattern>,
    /// PEM file: the leaf certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC; not encrypted).
    pub key: PathBuf,
    /// For a site whose certificate comes over ACME: where its TLS-ALPN-01 answers
    /// are. Until the first order completes, it serves a self-signed certificate.
    pub acme: Option<Challenges>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// A new certificate now serves new handshakes.
    Swapped,
    /// The files hold the certificate already serving (e.g. only touched).
    Unchanged,
}

/// The crypto provider of every TLS configuration wharf builds, server or client.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The rustls configuration for every TLS listener: TLS 1.2 and 1.3, ALPN `h2` preferred
/// over `http/1.1`, certificates from `certs`, and session resumption both through
/// stateless tickets and rustls' default in-memory session cache (for TLS 1.2 clients
/// that resume by session id). 0-RTT stays off: early data can be replayed.
pub fn server_config(certs: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("the aws-lc-rs provider implements TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    // `acme-tls/1` last: only a TLS-ALPN-01 validation, which offers nothing else,
    // gets it, and its connection is closed after the handshake.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    // The server's order (AES-256-GCM, AES-128-GCM, then ChaCha20-Poly1305, each with
    // ECDHE) rather than whatever a client lists first, as nginx's
    // `ssl_prefer_server_ciphers on` does; testssl.sh rates a server without an order
    // of its own HIGH.
    config.ignore_client_order = true;
    match rustls::crypto::aws_lc_rs::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        // Only a failing system RNG gets here; resumption then relies on the cache.
        Err(e) => tracing::warn!("TLS session tickets disabled: {e}"),
    }
    Arc::new(config)
}

/// Completes the TLS handshake on an accepted connection, or fails with `TimedOut` after
/// `timeout`. Call it in the connection's own task, never in the accept loop: a client
/// that opens a connection and stays silent must only cost its own task.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    stream: IO,
    timeout: Duration,
) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Whether the handshake was a TLS-ALPN-01 validation, whose connection carries no
/// requests (RFC 8737 §3).
pub fn is_acme_validation<IO>(stream: &TlsStream<IO>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN)
}

/// The SNI name the client sent (lowercase), if any.
pub fn server_name<IO>(stream: &TlsStream<IO>) -> Option<&str> {
    stream.get_ref().1.server_name()
}

#[cfg(test)]
mod tests;

//! Small clients over real TCP: HTTP/1.1 and HTTP/2 (hyper), raw bytes, HTTPS (rustls).

use crate::poll::poll_until_async;
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub version: http::Version,
}

/// An HTTP client over one protocol: HTTP/1.1 with keep-alive, or HTTP/2 with prior knowledge.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn http1() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn http2() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str) -> anyhow::Result<Reply> {
        self.send("GET", url, None, "").await
    }

    /// The status of a GET, panicking if the request itself fails.
    pub async fn status(&self, url: &str) -> u16 {
        self.get(url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e:#}"))
            .status
    }

    pub async fn post_json(&self, url: &str, body: &str) -> anyhow::Result<Reply> {
        self.send("POST", url, Some("application/json"), body).await
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> anyhow::Result<Reply> {
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| ("content-type", ct))
            .into_iter()
            .collect();
        self.request(method, url, &headers, body).await
    }

    /// A GET with extra headers (`host` among them replaces the URL's).
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        self.request("GET", url, headers, "").await
    }

    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<Reply> {
        let mut req = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string())))?;
        let response = self.client.request(req).await.context("request failed")?;
        let status = response.status().as_u16();
        let version = response.version();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            version,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Polls `url` until it answers `status` (bounded by `timeout`).
pub async fn wait_for_status(
    client: &HttpClient,
    url: &str,
    status: u16,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    let what = format!("{url} answers {status}");
    // A request that fails ends the wait: the server is gone, not slow.
    poll_until_async(timeout, &what, async || match client.get(url).await {
        Ok(reply) if reply.status != status => Err((reply.status, reply.body)),
        answer => Ok(answer),
    })
    .await?
}

/// Sends raw bytes on a new TCP connection and returns what the server sent back
/// before closing (or the first response head).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// What an HTTPS request saw: the reply, the certificate the server presented and the
/// protocol ALPN chose.
pub struct TlsReply {
    pub reply: Reply,
    pub certificate: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
}

/// A client configuration trusting only the CA in `ca_pem`, offering h2 and http/1.1.
pub fn tls_client_config(ca_pem: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A GET over a new TLS connection to `addr`, sending `server_name` as SNI and `host`
/// (default: the server name) as the request's host, trusting only the CA in `ca_pem`,
/// offering h2 and http/1.1 (h2 is used if chosen).
pub async fn https_get(
    addr: SocketAddr,
    server_name: &str,
    host: Option<&str>,
    ca_pem: &Path,
    path: &str,
) -> anyhow::Result<TlsReply> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    https_get_over(tcp, server_name, host, ca_pem, path).await
}

/// [`https_get`] over a connection already open (from an address of the caller's
/// choice, or after a PROXY protocol header).
pub async fn https_get_over(
    tcp: tokio::net::TcpStream,
    server_name: &str,
    host: Option<&str>,
    ca_pem: &Path,
    path: &str,
) -> anyhow::Result<TlsReply> {
    let host = host.unwrap_or(server_name);
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca_pem)?);
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .context("TLS handshake timed out")??;
    let (_, session) = tls.get_ref();
    let certificate = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let alpn = session.alpn_protocol().map(|p| p.to_vec());
    let io = hyper_util::rt::TokioIo::new(tls);
    let uri = format!("https://{host}{path}");
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let req = http::Request::get(uri).body(Full::new(Bytes::new()))?;
        sender.send_request(req).await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))?;
        sender.send_request(req).await?
    };
    let status = response.status().as_u16();
    let version = response.version();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(TlsReply {
        reply: Reply {
            status,
            headers,
            version,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
        certificate,
        alpn,
    })
}

//! The answers to an ACME server's validation requests, read from files under the ACME
//! storage directory. Every node that shares the directory (both balancers of a pair)
//! answers whichever of them the ACME server reaches; the node that orders writes them
//! (`crate::acme`).
//!
//! - HTTP-01: `challenges/http-01/TOKEN` holds the key authorization served at
//!   `/.well-known/acme-challenge/TOKEN` over plain HTTP (RFC 8555 §8.3).
//! - TLS-ALPN-01: `challenges/tls-alpn-01/NAME.pem` holds the self-signed certificate
//!   (and its key) a handshake for NAME offering only ALPN `acme-tls/1` gets (RFC 8737).

use super::load::parse_pem_unmatched;
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of HTTP-01 requests.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The challenge files of one ACME storage directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenges {
    dir: PathBuf,
}

impl Challenges {
    pub fn in_storage(storage: &Path) -> Self {
        Self {
            dir: storage.join("challenges"),
        }
    }

    /// Where the key authorization for `token` lives; `None` for a token no ACME
    /// server sends (tokens are base64url, RFC 8555 §8.1), so a request path never
    /// names a file outside the directory.
    pub fn http01_path(&self, token: &str) -> Option<PathBuf> {
        let valid = (1..=128).contains(&token.len())
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| self.dir.join("http-01").join(token))
    }

    /// Where the validation certificate for `name` lives; `None` for what is not a
    /// lowercase DNS name.
    pub fn tls_alpn01_path(&self, name: &str) -> Option<PathBuf> {
        let valid = (1..=253).contains(&name.len())
            && !name.starts_with('.')
            && !name.contains("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        valid.then(|| self.dir.join("tls-alpn-01").join(format!("{name}.pem")))
    }

    /// The key authorization to answer `GET /.well-known/acme-challenge/TOKEN` with.
    pub fn http01(&self, token: &str) -> Option<String> {
        std::fs::read_to_string(self.http01_path(token)?).ok()
    }

    /// The certificate a TLS-ALPN-01 validation handshake for `name` gets.
    pub fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let pem = std::fs::read(self.tls_alpn01_path(name)?).ok()?;
        parse_pem_unmatched(&pem)
            .inspect_err(|e| tracing::warn!(name, "TLS-ALPN-01 certificate unusable: {e:#}"))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_an_acme_server_sends_map_to_files_inside_the_directory() {
        let challenges = Challenges::in_storage(Path::new("/s"));
        assert_eq!(
            challenges.http01_path("a-Z_09"),
            Some(PathBuf::from("/s/challenges/http-01/a-Z_09"))
        );
        let long = "a".repeat(129);
        for token in [
            "",
            "..",
            "../lock",
            "a/b",
            "a%2fb",
            "a.b",
            "tok en",
            long.as_str(),
        ] {
            assert_eq!(challenges.http01_path(token), None, "{token:?}");
        }
        assert_eq!(
            challenges.tls_alpn01_path("www.example.com"),
            Some(PathBuf::from(
                "/s/challenges/tls-alpn-01/www.example.com.pem"
            ))
        );
        for name in [
            "",
            ".",
            "..",
            "../../certs/x",
            "a..b",
            ".a",
            "a/b",
            "WWW.example.com",
        ] {
            assert_eq!(challenges.tls_alpn01_path(name), None, "{name:?}");
        }
    }

    #[test]
    fn an_answer_is_read_from_its_file_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let challenges = Challenges::in_storage(dir.path());
        std::fs::create_dir_all(dir.path().join("challenges/http-01")).unwrap();
        std::fs::write(dir.path().join("challenges/http-01/tok"), "tok.thumb").unwrap();
        assert_eq!(challenges.http01("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(challenges.http01("other"), None);
        assert!(challenges.tls_alpn01("www.example.com").is_none());
    }
}

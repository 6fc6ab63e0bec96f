//! The ACME storage directory, shared by every node that serves the same sites:
//!
//! ```text
//! accounts/HASH.json            the account of one directory URL (0600)
//! certs/HOST.pem                a site's chain and key, named by its first host (0600)
//! challenges/http-01/TOKEN      answers being validated (crate::net::tls::Challenges)
//! challenges/tls-alpn-01/HOST.pem
//! lock                          held by the node that is ordering
//! ```
//!
//! Every file is written whole (a new file renamed over the old one), so a node
//! watching the directory never reads half a certificate.

use crate::net::tls::{Challenges, self_signed_pem};
use anyhow::{Context, anyhow};
use sha2::Digest;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
    challenges: Challenges,
}

impl Storage {
    /// Makes the directory and its parts (mode 0700) if they are not there yet.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        for part in [
            "",
            "accounts",
            "certs",
            "challenges/http-01",
            "challenges/tls-alpn-01",
        ] {
            let path = dir.join(part);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .with_context(|| format!("acme.storage: creating {}", path.display()))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            challenges: Challenges::in_storage(dir),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a site's certificate and key live.
    pub fn cert(dir: &Path, first_host: &str) -> PathBuf {
        dir.join("certs").join(format!("{first_host}.pem"))
    }

    /// The account file of one ACME directory URL: switching from a staging directory
    /// to production registers anew rather than reusing the staging account.
    pub(super) fn account(&self, directory: &str) -> PathBuf {
        let hash = hex::encode(&sha2::Sha256::digest(directory.as_bytes())[..8]);
        self.dir.join("accounts").join(format!("{hash}.json"))
    }

    /// Takes the ordering lock if no other node (or process) holds it. `flock`, so it
    /// goes with the process: a node that dies mid-order holds nothing.
    pub(super) fn try_lock(&self) -> anyhow::Result<Option<File>> {
        let path = self.dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(anyhow!("locking {}: {e}", path.display())),
        }
    }

    pub(super) fn put_http01(
        &self,
        token: &str,
        key_authorization: &str,
    ) -> anyhow::Result<PathBuf> {
        let path = self
            .challenges
            .http01_path(token)
            .ok_or_else(|| anyhow!("the ACME server sent an invalid token {token:?}"))?;
        crate::cert::write_file(&path, key_authorization, 0o644)?;
        Ok(path)
    }

    pub(super) fn put_tls_alpn01(&self, name: &str, digest: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self
            .challenges
            .tls_alpn01_path(name)
            .ok_or_else(|| anyhow!("{name:?} is not a host name"))?;
        let pem = self_signed_pem(vec![name.to_string()], Some(digest))?;
        crate::cert::write_file(&path, &pem, 0o600)?;
        Ok(path)
    }
}

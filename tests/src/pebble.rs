//! A real ACME server for the tests: Pebble, with `pebble-challtestsrv` as the DNS
//! server it resolves the names it validates with. Every name resolves to 127.0.0.1
//! until a test points it elsewhere ([`Pebble::point`]), so validation requests reach
//! the wharf nodes listening there on the ports given at start.
//!
//! Pebble serves its API over HTTPS with a certificate of `wharf cert dev`; the CA of
//! that is [`Pebble::ca`], the `acme.ca_bundle` of the nodes. The certificates Pebble
//! issues chain to a root it makes at each start, [`Pebble::root`].

use crate::client::{HttpClient, https_get};
use crate::{free_ports, poll_until_async, wharf_bin};
use anyhow::{Context, bail};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long Pebble gets to answer its directory after a start.
const START: Duration = Duration::from_secs(20);

pub struct Pebble {
    dir: tempfile::TempDir,
    api: SocketAddr,
    management: SocketAddr,
    dns_management: SocketAddr,
    dns: SocketAddr,
    http_port: u16,
    tls_port: u16,
    pebble: Option<Child>,
    challtestsrv: Child,
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    pub async fn start(http_port: u16, tls_port: u16) -> anyhow::Result<Self> {
        crate::needs("pebble");
        crate::needs("pebble-challtestsrv");
        let dir = tempfile::tempdir()?;
        let cert = Command::new(wharf_bin())
            .args(["cert", "dev", "--host", "localhost", "--out"])
            .arg(dir.path())
            .output()?;
        if !cert.status.success() {
            bail!("wharf cert dev: {}", String::from_utf8_lossy(&cert.stderr));
        }
        let ports = free_ports(4)?;
        let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (api, management, dns, dns_management) =
            (at(ports[0]), at(ports[1]), at(ports[2]), at(ports[3]));
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-management", &dns_management.to_string()])
            .args(["-dns01", &dns.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log_file(dir.path(), "challtestsrv.log")?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting pebble-challtestsrv")?;
        let mut pebble = Self {
            dir,
            api,
            management,
            dns_management,
            dns,
            http_port,
            tls_port,
            pebble: None,
            challtestsrv,
        };
        let url = format!("http://{dns_management}/set-default-ipv4");
        poll_until_async(START, "pebble-challtestsrv answers", async || {
            let reply = HttpClient::http1()
                .post_json(&url, r#"{"ip":"127.0.0.1"}"#)
                .await?;
            match reply.status {
                200 => Ok(()),
                status => Err(anyhow::anyhow!("{url}: {status}")),
            }
        })
        .await?;
        pebble.resume().await?;
        Ok(pebble)
    }

    /// The directory URL, `acme.directory` of the nodes.
    pub fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.api.port())
    }

    /// The CA Pebble's own HTTPS certificate chains to, `acme.ca_bundle` of the nodes.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("wharf-dev-ca.pem")
    }

    /// The root the certificates Pebble issues chain to, written to a file for
    /// [`https_get`].
    pub async fn root(&self) -> anyhow::Result<PathBuf> {
        let root = https_get(self.management, "localhost", None, &self.ca(), "/roots/0").await?;
        if root.reply.status != 200 {
            bail!("Pebble's /roots/0: {}", root.reply.status);
        }
        let path = self.dir.path().join("issuer-root.pem");
        std::fs::write(&path, root.reply.body)?;
        Ok(path)
    }

    /// Resolves `host` to `ip` from now on.
    pub async fn point(&self, host: &str, ip: Ipv4Addr) -> anyhow::Result<()> {
        let url = format!("http://{}/add-a", self.dns_management);
        let body = serde_json::json!({ "host": format!("{host}."), "addresses": [ip.to_string()] });
        let reply = HttpClient::http1()
            .post_json(&url, &body.to_string())
            .await?;
        match reply.status {
            200 => Ok(()),
            status => bail!("{url}: {status} {}", reply.body),
        }
    }

    /// Stops Pebble (the DNS server keeps running): orders fail until [`Self::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Pebble again on the same ports. Pebble keeps its state in memory: a new
    /// one knows no account and has a new root.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.stop();
        let config = serde_json::json!({ "pebble": {
            "listenAddress": self.api.to_string(),
            "managementListenAddress": self.management.to_string(),
            "certificate": self.dir.path().join("localhost.pem"),
            "privateKey": self.dir.path().join("localhost-key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = self.dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string())?;
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &self.dns.to_string()])
            // No random sleeps before validating, no nonces refused at random, and an
            // authorization per order, so that every order validates anew.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log_file(self.dir.path(), "pebble.log")?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting pebble")?;
        self.pebble = Some(child);
        let ca = self.ca();
        let api = self.api;
        poll_until_async(START, "Pebble serves its directory", async || {
            let dir = https_get(api, "localhost", None, &ca, "/dir").await?;
            match dir.reply.status {
                200 => Ok(()),
                status => Err(anyhow::anyhow!("/dir: {status}")),
            }
        })
        .await
    }

    /// What Pebble logged, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.challtestsrv.kill();
        let _ = self.challtestsrv.wait();
    }
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<File> {
    Ok(File::options()
        .create(true)
        .append(true)
        .open(dir.join(name))?)
}

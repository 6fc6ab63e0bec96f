//! One ACME order, start to certificate: the account (made once and kept), the
//! challenges written where every node sharing the storage answers them, and the
//! certificate chain with a key made here.

use super::storage::Storage;
use crate::config::{AcmeConfig, ChallengeKind};
use anyhow::{Context, anyhow, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use std::path::PathBuf;
use std::time::Duration;

/// How long the ACME server gets to validate and to issue, each.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .timeout(Duration::from_secs(90));

/// The ACME account of `config.directory`: read from storage, or registered once and
/// written there (mode 0600) for every later order and every node sharing it.
pub(super) async fn account(config: &AcmeConfig, storage: &Storage) -> anyhow::Result<Account> {
    let http = http_client(config)?;
    let path = storage.account(&config.directory);
    match std::fs::read(&path) {
        Ok(json) => {
            let credentials: AccountCredentials = serde_json::from_slice(&json)
                .with_context(|| format!("{}: not an ACME account", path.display()))?;
            Account::builder_with_http(http)
                .from_credentials(credentials)
                .await
                .with_context(|| format!("ACME directory {}", config.directory))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
            let new = NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            };
            let (account, credentials) = Account::builder_with_http(http)
                .create(&new, config.directory.clone(), None)
                .await
                .with_context(|| format!("registering with {}", config.directory))?;
            let json = serde_json::to_string(&credentials)?;
            crate::cert::write_file(&path, &json, 0o600)?;
            tracing::info!(directory = %config.directory, file = %path.display(), "ACME account registered");
            Ok(account)
        }
        Err(e) => Err(anyhow!("{}: {e}", path.display())),
    }
}

/// The client the ACME conversation goes over: HTTPS checked against `ca_bundle` or
/// the system's roots, with wharf's crypto provider.
fn http_client(config: &AcmeConfig) -> anyhow::Result<Box<dyn instant_acme::HttpClient>> {
    let tls = crate::proxy::client::tls_config(config.ca_bundle.as_deref(), false)
        .context("acme.ca_bundle")?;
    let mut tls = rustls::ClientConfig::clone(&tls);
    // The connector offers http/1.1 itself (and panics if ALPN is set already).
    tls.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    Ok(Box::new(client))
}

/// Orders a certificate for `hosts`; returns its chain and its new key as one PEM text.
/// The challenge files are removed however the order ends.
pub(super) async fn order(
    account: &Account,
    storage: &Storage,
    kind: ChallengeKind,
    hosts: &[String],
) -> anyhow::Result<String> {
    let identifiers: Vec<Identifier> = hosts.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut answers = Answers(Vec::new());
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let name = match &authorization.identifier().identifier {
            Identifier::Dns(name) => name.clone(),
            other => bail!("the ACME server asks to authorize {other:?}, not a host name"),
        };
        match authorization.status {
            AuthorizationStatus::Pending => {}
            // Authorized by an earlier order of this account, still valid.
            AuthorizationStatus::Valid => continue,
            status => bail!("{name}: authorization is {status:?}"),
        }
        let offered = match kind {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut challenge = authorization
            .challenge(offered.clone())
            .ok_or_else(|| anyhow!("{name}: the ACME server offers no {offered:?} challenge"))?;
        let key_authorization = challenge.key_authorization();
        let file = match kind {
            ChallengeKind::Http01 => {
                storage.put_http01(&challenge.token, key_authorization.as_str())
            }
            ChallengeKind::TlsAlpn01 => {
                storage.put_tls_alpn01(&name, key_authorization.digest().as_ref())
            }
        }?;
        answers.0.push(file);
        challenge.set_ready().await?;
    }
    match order.poll_ready(&POLL).await? {
        OrderStatus::Ready => {}
        status => {
            let why = order.state().error.as_ref().map(ToString::to_string);
            bail!(
                "order is {status:?}: {}",
                why.unwrap_or_else(|| "an authorization failed".into())
            )
        }
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&POLL).await?;
    Ok(chain + &key.serialize_pem())
}

/// Challenge files written for one order, removed when it ends.
struct Answers(Vec<PathBuf>);

impl Drop for Answers {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = std::fs::remove_file(file);
        }
    }
}

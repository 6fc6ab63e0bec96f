//! `wharf.toml`: the node's configuration. Every key is optional and unknown keys are
//! errors that name the key; `wharf serve apps/` runs without a file at all.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The MySQL/MariaDB cluster apps query. Without it, apps get SQLite files.
    pub database: Option<DatabaseConfig>,
}

/// `[database]`: a primary and its replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `mysql://USER@HOST:PORT/DATABASE` of the primary (no password in the URL).
    pub primary: String,
    /// The replicas, in the same form. Reads are spread over the healthy ones.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Connections kept open to each node while idle.
    #[serde(default = "defaults::pool_min")]
    pub pool_min: usize,
    /// Most connections to each node.
    #[serde(default = "defaults::pool_max")]
    pub pool_max: usize,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "defaults::query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// A replica further behind the primary than this (seconds) leaves rotation.
    #[serde(default = "defaults::max_replica_lag_s")]
    pub max_replica_lag_s: u64,
    /// How often replicas' replication state is checked.
    #[serde(default = "defaults::check_interval_ms")]
    pub check_interval_ms: u64,
}

mod defaults {
    pub fn pool_min() -> usize {
        1
    }
    pub fn pool_max() -> usize {
        16
    }
    pub fn connect_timeout_ms() -> u64 {
        1_000
    }
    pub fn query_timeout_ms() -> u64 {
        10_000
    }
    pub fn max_replica_lag_s() -> u64 {
        5
    }
    pub fn check_interval_ms() -> u64 {
        1_000
    }
}

impl Config {
    /// Reads and validates `path`; errors name the file, the key and the reason.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        if let Some(db) = &config.database {
            db.validate()?;
        }
        Ok(config)
    }
}

impl DatabaseConfig {
    fn validate(&self) -> anyhow::Result<()> {
        let urls = std::iter::once(("database.primary".to_string(), &self.primary)).chain(
            self.replicas
                .iter()
                .enumerate()
                .map(|(i, url)| (format!("database.replicas[{i}]"), url)),
        );
        for (key, url) in urls {
            let opts = mysql_async::Opts::from_url(url).map_err(|e| {
                anyhow::anyhow!("{key}: {e} (expected mysql://USER@HOST:PORT/DATABASE)")
            })?;
            anyhow::ensure!(
                opts.pass().is_none(),
                "{key}: the URL holds a password; put it in password_env or password_file"
            );
            anyhow::ensure!(opts.user().is_some(), "{key}: the URL names no user");
            anyhow::ensure!(opts.db_name().is_some(), "{key}: the URL names no database");
        }
        anyhow::ensure!(
            !(self.password_env.is_some() && self.password_file.is_some()),
            "database: set password_env or password_file, not both"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.pool_max),
            "database.pool_max: {} is outside 1..=1024",
            self.pool_max
        );
        anyhow::ensure!(
            self.pool_min <= self.pool_max,
            "database.pool_min: {} is above pool_max {}",
            self.pool_min,
            self.pool_max
        );
        for (key, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("query_timeout_ms", self.query_timeout_ms),
            ("check_interval_ms", self.check_interval_ms),
        ] {
            anyhow::ensure!(ms > 0, "database.{key}: must be at least 1");
        }
        Ok(())
    }

    /// The password, from the environment or a file; `None` when neither is set.
    /// Errors name where it was looked for, never the value.
    pub fn password(&self) -> anyhow::Result<Option<String>> {
        if let Some(var) = &self.password_env {
            let value = std::env::var(var).map_err(|_| {
                anyhow::anyhow!("database.password_env: environment variable {var} is not set")
            })?;
            return Ok(Some(value));
        }
        if let Some(file) = &self.password_file {
            let value = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("database.password_file: {}: {e}", file.display()))?;
            return Ok(Some(value.trim_end_matches(['\n', '\r']).to_string()));
        }
        Ok(None)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }
}

/// toml's message spans several lines (with a source excerpt); logs want one, with the
/// line number.
pub fn toml_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let msg = e.message();
    match e.span() {
        Some(span) => {
            let line = text[..span.start].matches('\n').count() + 1;
            anyhow::anyhow!("line {line}: {msg}")
        }
        None => anyhow::anyhow!("{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn database_section() {
        let config = Config::parse(
            "[database]\nprimary = 'mysql://app@127.0.0.1:3306/app'\n\
             replicas = ['mysql://app@127.0.0.1:3307/app']\npassword_env = 'DB_PW'\n",
        )
        .unwrap();
        let db = config.database.unwrap();
        assert_eq!(db.replicas.len(), 1);
        assert_eq!(db.pool_max, 16);
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("[database]\nprimary = 'mysql://a@h/db'\npool_maxx = 3").contains("pool_maxx"));
        assert!(err("[databse]").contains("databse"));
        let msg = err("[database]\nprimary = 'mysql://a:secret@h/db'");
        assert!(
            msg.contains("database.primary") && !msg.contains("secret"),
            "{msg}"
        );
        assert!(
            err("[database]\nprimary = 'mysql://a@h/db'\nreplicas = ['mysql://h/db']")
                .contains("database.replicas[0]")
        );
        assert!(err("[database]\nprimary = 'mysql://a@h/db'\npool_max = 0").contains("pool_max"));
    }
}

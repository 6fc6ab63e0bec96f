//! The background checks: every interval, the primary answers and each replica
//! replicates without lagging past the limit. A replica that fails leaves rotation at
//! once and comes back after one good round: a lagging replica serves stale reads, and
//! one round that finds it caught up is all the proof there is.

use super::{MysqlCluster, Node};
use crate::health::{Change, Thresholds};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use std::sync::Weak;
use std::time::Duration;

/// See the module doc.
pub(super) const CHECKS: Thresholds = Thresholds { rise: 1, fall: 1 };

/// The checker's own connections: primary first, then each replica.
#[derive(Default)]
pub(super) struct Probes {
    conns: Vec<Option<Conn>>,
}

pub(super) async fn check_loop(
    cluster: Weak<MysqlCluster>,
    mut probes: Probes,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.check_round(&mut probes).await;
    }
}

impl MysqlCluster {
    /// One round of health checks.
    pub(super) async fn check_round(&self, probes: &mut Probes) {
        probes.conns.resize_with(self.replicas.len() + 1, || None);
        let (primary_conn, replica_conns) = probes.conns.split_first_mut().unwrap();
        let primary = self.probe(&self.primary, primary_conn, "DO 1").await;
        let primary_up = primary.is_ok();
        let name = &self.primary.name;
        match self.primary.observe(primary.map(drop), None) {
            Some((Change::WentUp, _)) => tracing::info!(node = %name, "primary answers again"),
            Some((Change::WentDown, e)) => tracing::warn!(node = %name, "primary unreachable: {e}"),
            _ => {}
        }
        for (node, conn) in self.replicas.iter().zip(replica_conns) {
            let status = self.probe(node, conn, "SHOW SLAVE STATUS").await;
            let (verdict, lag) = match status {
                Err(e) => (Err(format!("not answering: {e}")), None),
                Ok(row) => (
                    replica_verdict(row.as_ref(), primary_up, self.max_lag_s),
                    row.as_ref().and_then(lag),
                ),
            };
            match node.observe(verdict, lag) {
                Some((Change::WentUp, _)) => {
                    tracing::info!(node = %node.name, "replica in rotation")
                }
                Some((Change::WentDown | Change::NewReason, reason)) => {
                    tracing::warn!(node = %node.name, "replica out of rotation: {reason}")
                }
                None => {}
            }
        }
    }

    /// Runs a check statement on `node` over the checker's own connection (not the
    /// pool's), reconnecting when needed, bounded by the connect timeout. Returns the
    /// first row, if any.
    async fn probe(
        &self,
        node: &Node,
        slot: &mut Option<Conn>,
        statement: &'static str,
    ) -> Result<Option<Row>, String> {
        let limit = self.connect_timeout;
        if slot.is_none() {
            let conn = tokio::time::timeout(limit, Conn::new(node.opts.clone()))
                .await
                .map_err(|_| format!("no connection within {limit:?}"))?
                .map_err(|e| e.to_string())?;
            *slot = Some(conn);
        }
        let conn = slot.as_mut().unwrap();
        let result = match tokio::time::timeout(limit, conn.query_first(statement)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {limit:?}"),
        };
        // The connection may be broken or mid-answer: the next round makes a new one.
        *slot = None;
        Err(result)
    }
}

/// A `SHOW SLAVE STATUS` field; `None` for NULL or a missing column.
fn field(row: &Row, name: &str) -> Option<String> {
    row.get_opt::<Option<String>, _>(name)?.ok()?
}

/// How far the replica is behind the primary, when the server knows.
fn lag(row: &Row) -> Option<Duration> {
    let seconds = field(row, "Seconds_Behind_Master")?.parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// Whether a replica may serve reads, from its `SHOW SLAVE STATUS` row.
fn replica_verdict(row: Option<&Row>, primary_up: bool, max_lag_s: u64) -> Result<(), String> {
    let row = row.ok_or("replication is not configured")?;
    if field(row, "Slave_SQL_Running").as_deref() != Some("Yes") {
        let error = field(row, "Last_SQL_Error").unwrap_or_default();
        return Err(format!("replication SQL thread is not running {error}")
            .trim_end()
            .to_string());
    }
    if field(row, "Slave_IO_Running").as_deref() != Some("Yes") {
        // With the primary down, replicas cannot fetch anything new, but what they have
        // applied is the newest data there is: keep serving reads from them.
        if primary_up {
            let error = field(row, "Last_IO_Error").unwrap_or_default();
            return Err(format!("replication IO thread is not running {error}")
                .trim_end()
                .to_string());
        }
        return Ok(());
    }
    match lag(row).map(|lag| lag.as_secs()) {
        None => Err("replication lag is unknown".into()),
        Some(lag) if lag > max_lag_s => Err(format!(
            "replication lag {lag} s is over the {max_lag_s} s limit"
        )),
        Some(_) => Ok(()),
    }
}

impl Node {
    /// Records a check of this node and the lag it found; a change comes with the
    /// node's reason after it.
    fn observe(
        &self,
        check: Result<(), String>,
        lag: Option<Duration>,
    ) -> Option<(Change, String)> {
        let mut state = self.state.lock().unwrap();
        state.lag = lag;
        let change = state.health.observe(check)?;
        Some((change, state.health.reason().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_without_replication_never_serves_reads() {
        // The verdict reads only named fields; a missing row means no replication.
        assert!(replica_verdict(None, true, 5).is_err());
    }
}

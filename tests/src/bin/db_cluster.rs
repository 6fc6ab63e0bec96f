//! A MariaDB primary with replicas for benchmarks and manual runs, from the test
//! harness: prints the node URLs, seeds the `todos` table, and runs until stdin closes.
//! Usage: db-cluster [REPLICAS] [TODOS]   (password: wharf_tests::mariadb::PASSWORD)

use std::io::{Read, Write};
use wharf_tests::mariadb::{Cluster, NodeId};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let replicas: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let todos: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster = runtime.block_on(async {
        let cluster = Cluster::start(replicas).await?;
        cluster
            .sql(
                NodeId::Primary,
                "CREATE TABLE todos (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 title VARCHAR(200) NOT NULL, done BOOLEAN NOT NULL DEFAULT FALSE) \
                 DEFAULT CHARSET = utf8mb4",
            )
            .await?;
        for chunk in (1..=todos).collect::<Vec<_>>().chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|i| format!("('todo number {i}', {})", i % 2))
                .collect();
            let insert = format!(
                "INSERT INTO todos (title, done) VALUES {}",
                values.join(",")
            );
            cluster.sql(NodeId::Primary, &insert).await?;
        }
        cluster
            .wait_replicated(std::time::Duration::from_secs(30))
            .await?;
        anyhow::Ok(cluster)
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "primary {}", cluster.url(NodeId::Primary))?;
    for i in 0..replicas {
        writeln!(out, "replica {}", cluster.url(NodeId::Replica(i)))?;
    }
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);
    // Until whoever started us closes our stdin (or exits).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(cluster);
    Ok(())
}

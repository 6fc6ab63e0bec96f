//! The database benchmark's baseline: the todo app's `GET /todo/:id` as a native hyper
//! server with a mysql_async pool, the same runtime setup wharf uses.
//! Usage: todo-native ADDR WORKERS MYSQL_URL POOL_MAX   (password from $DB_PASSWORD)

use bytes::Bytes;
use http_body_util::Full;
use mysql_async::prelude::Queryable;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, workers, url, pool_max] = &args[..] else {
        anyhow::bail!("usage: todo-native ADDR WORKERS MYSQL_URL POOL_MAX");
    };
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(url)?)
        .pass(std::env::var("DB_PASSWORD").ok())
        .pool_opts(
            mysql_async::PoolOpts::default()
                .with_constraints(mysql_async::PoolConstraints::new(1, pool_max.parse()?).unwrap())
                .with_reset_connection(false),
        );
    let pool = mysql_async::Pool::new(opts);
    wharf_tests::baseline::serve(addr, workers.parse()?, move |req| {
        let pool = pool.clone();
        async move { show(&pool, req.uri().path()).await }
    })
}

async fn show(pool: &mysql_async::Pool, path: &str) -> wharf_tests::baseline::Response {
    let reply = |status: u16, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let Some(id) = path
        .strip_prefix("/todo/")
        .and_then(|id| id.parse::<u64>().ok())
    else {
        return reply(404, r#"{"error":"no such todo"}"#.into());
    };
    let row: Result<Option<(u64, String, bool)>, _> = async {
        let mut conn = pool.get_conn().await?;
        conn.exec_first("SELECT id, title, done FROM todos WHERE id = ?", (id,))
            .await
    }
    .await;
    match row {
        Ok(Some((id, title, done))) => reply(
            200,
            serde_json::json!({ "id": id, "title": title, "done": done }).to_string(),
        ),
        Ok(None) => reply(404, r#"{"error":"no such todo"}"#.into()),
        Err(e) => reply(
            503,
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

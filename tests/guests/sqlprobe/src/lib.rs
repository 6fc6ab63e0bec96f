//! Runs the SQL a test sends and reports every outcome, value kinds included, to test
//! wharf's `wharf:platform/sql` from inside a guest.
//!
//! `POST /sqlprobe` takes `{"steps": [{"op": "query"|"execute", "sql": "...",
//! "params": [...]}], "tx": "none"|"commit"|"rollback"|"drop"}` and answers
//! `{"results": [...], "end": null | {"error": ...}}`, one result per step; it keeps
//! going after a failed step. Values travel as one-key objects naming their kind
//! (`{"int": 5}`, `{"binary": "00ff"}`); plain JSON parameters map by type.

use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use wharf_sdk::db::{self, Value};
use wharf_sdk::{Request, Response, Router};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    steps: Vec<Step>,
    #[serde(default)]
    tx: Tx,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    op: Op,
    sql: String,
    #[serde(default)]
    params: Vec<Json>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Op {
    Query,
    Execute,
}

/// How the steps run: on their own, or in one transaction that ends as named.
#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Tx {
    #[default]
    None,
    Commit,
    Rollback,
    Drop,
}

fn app(req: Request) -> Response {
    Router::new()
        .post("/sqlprobe", probe)
        .get("/sqlprobe/server-id", |_| server_id())
        .get("/sqlprobe/write-then-read", |_| write_then_read())
        .handle(req)
}

fn probe(req: Request) -> Result<Response, Response> {
    let probe: Probe = req.json()?;
    // A malformed parameter is the test's mistake: refuse the probe before any SQL runs.
    let mut steps = Vec::with_capacity(probe.steps.len());
    for step in probe.steps {
        let params = step.params.iter().map(param).collect::<Result<Vec<_>, _>>();
        steps.push((step.op, step.sql, params.map_err(bad_request)?));
    }

    let tx = match probe.tx {
        Tx::None => None,
        _ => match db::transaction() {
            Ok(tx) => Some(tx),
            Err(e) => return Ok(Response::json(&json!({ "results": [], "end": error(&e) }))),
        },
    };
    let results: Vec<Json> = steps
        .iter()
        .map(|(op, sql, params)| run(tx.as_ref(), *op, sql, params))
        .collect();
    let end = match (probe.tx, tx) {
        (Tx::Commit, Some(tx)) => tx.commit().err(),
        (Tx::Rollback, Some(tx)) => tx.rollback().err(),
        // "drop": the transaction is dropped right here, before the response, and the
        // host rolls it back.
        _ => None,
    };
    Ok(Response::json(
        &json!({ "results": results, "end": end.as_ref().map(error) }),
    ))
}

fn run(tx: Option<&db::Transaction>, op: Op, sql: &str, params: &[Value]) -> Json {
    let outcome = match (op, tx) {
        (Op::Query, Some(tx)) => tx.query(sql, params).map(rows),
        (Op::Query, None) => db::query(sql, params).map(rows),
        (Op::Execute, Some(tx)) => tx.execute(sql, params).map(exec),
        (Op::Execute, None) => db::execute(sql, params).map(exec),
    };
    outcome.unwrap_or_else(|e| error(&e))
}

fn rows(rows: db::Rows) -> Json {
    let values: Vec<Vec<Json>> = rows
        .iter()
        .map(|row| row.values().iter().map(tagged).collect())
        .collect();
    json!({ "columns": rows.columns(), "rows": values })
}

fn exec(done: db::ExecResult) -> Json {
    json!({ "rows_affected": done.rows_affected, "last_insert_id": done.last_insert_id })
}

fn error(e: &db::Error) -> Json {
    let (kind, message) = match e {
        db::Error::BadStatement(m) => ("bad_statement", m),
        db::Error::ConstraintViolation(m) => ("constraint_violation", m),
        db::Error::Unavailable(m) => ("unavailable", m),
        db::Error::Timeout(m) => ("timeout", m),
        db::Error::NotAllowed(m) => ("not_allowed", m),
        db::Error::Decode { message, .. } => ("decode", message),
    };
    json!({ "error": { "kind": kind, "message": message } })
}

/// A value as a one-key object naming its kind, so a test sees exactly what came back.
fn tagged(value: &Value) -> Json {
    let inner = match value {
        Value::Null => Json::Null,
        Value::Int(n) => json!(n),
        Value::Uint(n) => json!(n),
        Value::Float(f) => json!(f),
        Value::Binary(b) => Json::String(b.iter().map(|byte| format!("{byte:02x}")).collect()),
        Value::Decimal(s)
        | Value::Text(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Datetime(s)
        | Value::Json(s) => Json::String(s.clone()),
    };
    Json::Object(Map::from_iter([(value.kind().to_string(), inner)]))
}

/// A parameter: plain JSON maps by type (true is 1; an integer past `i64::MAX` is a
/// uint), a one-key object names the kind as in the output.
fn param(json: &Json) -> Result<Value, String> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Int(i),
            (None, Some(u), _) => Value::Uint(u),
            (None, None, f) => Value::Float(f.unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(tag) if tag.len() == 1 => {
            let (kind, inner) = tag.iter().next().expect("one key");
            kind_param(kind, inner)?
        }
        other => return Err(format!("cannot use {other} as a parameter")),
    })
}

fn kind_param(kind: &str, inner: &Json) -> Result<Value, String> {
    let wrong = || format!("cannot read {inner} as {kind}");
    let text = || inner.as_str().map(str::to_string).ok_or_else(wrong);
    Ok(match kind {
        "null" => Value::Null,
        "int" => Value::Int(inner.as_i64().ok_or_else(wrong)?),
        "uint" => Value::Uint(inner.as_u64().ok_or_else(wrong)?),
        "float" => Value::Float(inner.as_f64().ok_or_else(wrong)?),
        "decimal" => Value::Decimal(text()?),
        "text" => Value::Text(text()?),
        "date" => Value::Date(text()?),
        "time" => Value::Time(text()?),
        "datetime" => Value::Datetime(text()?),
        // JSON text as a string, or a document given inline.
        "json" => Value::Json(
            inner
                .as_str()
                .map_or_else(|| inner.to_string(), str::to_string),
        ),
        "binary" => Value::Binary(unhex(&text()?).ok_or_else(wrong)?),
        _ => return Err(format!("unknown value kind {kind:?}")),
    })
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

fn bad_request(message: String) -> Response {
    Response::json(&json!({ "error": message })).with_status(400)
}

/// The `@@server_id` of whichever MySQL node answers a read.
fn server_id() -> Result<Response, Response> {
    let rows = db::query("SELECT @@server_id", &[])?;
    let row = rows
        .first()
        .ok_or_else(|| Response::text("SELECT @@server_id returned no row").with_status(500))?;
    Ok(Response::text(row.get::<u64>(0)?.to_string()))
}

/// A write, then a read that must reach the primary (read-your-writes). The write may
/// fail as a bad statement when the test has not created `probe_ryw`; it is still a
/// write attempt.
fn write_then_read() -> Result<Response, Response> {
    match db::execute("UPDATE probe_ryw SET n = n + 1", &[]) {
        Ok(_) | Err(db::Error::BadStatement(_)) => server_id(),
        Err(e) => Err(e.into()),
    }
}

wharf_sdk::export!(app);

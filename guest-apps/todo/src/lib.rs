//! A to-do list kept in the app's database: a JSON CRUD API served at /todo by wharf.

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use wharf_sdk::db::{self, Dialect};
use wharf_sdk::{Request, Response, Router};

#[derive(Serialize, Deserialize)]
struct Todo {
    id: u64,
    title: String,
    done: bool,
}

/// Longest title in characters, as the MySQL column (`VARCHAR(200)`) counts them.
const MAX_TITLE: usize = 200;

/// Database errors become responses through `?` (503 + Retry-After when unavailable).
type Answer = Result<Response, Response>;

fn app(req: Request) -> Response {
    Router::new()
        .get("/todo", list)
        .post("/todo", create)
        .get("/todo/:id", show)
        .put("/todo/:id", update)
        .delete("/todo/:id", remove)
        .handle(req)
}

fn list(_req: Request) -> Answer {
    let rows = with_table(|| db::query("SELECT id, title, done FROM todos ORDER BY id", &[]))?;
    Ok(Response::json(&rows.to_structs::<Todo>()?))
}

fn show(req: Request) -> Answer {
    let id = id(&req)?;
    // The hot path: one query, nothing else.
    let rows = with_table(|| {
        db::query(
            "SELECT id, title, done FROM todos WHERE id = ?",
            &[id.into()],
        )
    })?;
    found(rows)
}

fn create(req: Request) -> Answer {
    let fields = Fields::parse(&req)?;
    let title = fields
        .title
        .ok_or_else(|| invalid("title", "is required"))?;
    let done = fields.done.unwrap_or(false);
    let inserted = with_table(|| {
        db::execute(
            "INSERT INTO todos (title, done) VALUES (?, ?)",
            wharf_sdk::params![&title, done],
        )
    })?;
    let Some(id) = inserted.last_insert_id else {
        eprintln!("INSERT INTO todos reported no id");
        return Err(Response::json(&json!({ "error": "internal error" })).with_status(500));
    };
    Ok(Response::json(&Todo { id, title, done })
        .with_status(201)
        .with_header("location", format!("/todo/{id}")))
}

fn update(req: Request) -> Answer {
    let id = id(&req)?;
    let fields = Fields::parse(&req)?;
    let (set, mut params) = match (fields.title, fields.done) {
        (Some(title), Some(done)) => ("title = ?, done = ?", vec![title.into(), done.into()]),
        (Some(title), None) => ("title = ?", vec![title.into()]),
        (None, Some(done)) => ("done = ?", vec![done.into()]),
        (None, None) => return Err(invalid("body", "must have a title or done")),
    };
    params.push(id.into());
    let statement = format!("UPDATE todos SET {set} WHERE id = ?");
    with_table(|| db::execute(&statement, &params))?;
    // MySQL counts only the rows an UPDATE changed, so "0 rows" may just mean "same
    // values": read the row back to tell. (After a write, reads go to the primary.)
    found(db::query(
        "SELECT id, title, done FROM todos WHERE id = ?",
        &[id.into()],
    )?)
}

fn remove(req: Request) -> Answer {
    let id = id(&req)?;
    let deleted = with_table(|| db::execute("DELETE FROM todos WHERE id = ?", &[id.into()]))?;
    if deleted.rows_affected == 0 {
        return Err(not_found());
    }
    Ok(Response::new(204))
}

/// The `:id` in the path. Only plain digits name a todo, and never beyond `i64::MAX`
/// (SQLite's largest rowid), so an odd id is a 404 rather than a database error.
fn id(req: &Request) -> Result<i64, Response> {
    req.param("id")
        .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse().ok())
        .ok_or_else(not_found)
}

/// The todo in `rows`, or 404.
fn found(rows: db::Rows) -> Answer {
    let todo: Todo = rows.into_first().ok_or_else(not_found)?.to_struct()?;
    Ok(Response::json(&todo))
}

/// Runs `statement`. The table is created on first use, not by an install step: if the
/// database calls the statement bad, the likely reason is a missing table, so create
/// it and try once more. (A truly bad statement fails again and answers 500.)
fn with_table<T>(statement: impl Fn() -> Result<T, db::Error>) -> Result<T, db::Error> {
    match statement() {
        Err(db::Error::BadStatement(_)) => {
            db::execute(create_table(), &[])?;
            statement()
        }
        other => other,
    }
}

fn create_table() -> &'static str {
    match db::dialect() {
        // utf8mb4 so that any title of 200 characters fits, whatever the server's default.
        Dialect::Mysql => {
            "CREATE TABLE IF NOT EXISTS todos (\
                id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                title VARCHAR(200) NOT NULL, \
                done BOOLEAN NOT NULL DEFAULT FALSE\
            ) DEFAULT CHARSET = utf8mb4"
        }
        Dialect::Sqlite => {
            "CREATE TABLE IF NOT EXISTS todos (\
                id INTEGER PRIMARY KEY AUTOINCREMENT, \
                title TEXT NOT NULL, \
                done INTEGER NOT NULL DEFAULT 0\
            )"
        }
    }
}

/// The fields of a todo a client sent in a body; absent ones are `None`.
#[derive(Default)]
struct Fields {
    title: Option<String>,
    done: Option<bool>,
}

impl Fields {
    /// Reads the body. Broken JSON is a 400 (from `Request::json`); JSON that is not a
    /// valid todo is a 422 naming the field. Checked by hand rather than by serde so
    /// that every error can name its field.
    fn parse(req: &Request) -> Result<Self, Response> {
        let Json::Object(body) = req.json()? else {
            return Err(invalid("body", "must be a JSON object"));
        };
        let mut fields = Fields::default();
        for (name, value) in body {
            match (name.as_str(), value) {
                ("title", Json::String(title)) => fields.title = Some(check_title(title)?),
                ("title", _) => return Err(invalid("title", "must be a string")),
                ("done", Json::Bool(done)) => fields.done = Some(done),
                ("done", _) => return Err(invalid("done", "must be true or false")),
                (other, _) => return Err(invalid(other, "is not a field of a todo")),
            }
        }
        Ok(fields)
    }
}

fn check_title(title: String) -> Result<String, Response> {
    if title.trim().is_empty() {
        Err(invalid("title", "must not be empty"))
    } else if title.chars().count() > MAX_TITLE {
        Err(invalid(
            "title",
            &format!("must be at most {MAX_TITLE} characters"),
        ))
    } else {
        Ok(title)
    }
}

/// 422 naming the field at fault.
fn invalid(field: &str, problem: &str) -> Response {
    Response::json(&json!({ "error": format!("{field} {problem}"), "field": field }))
        .with_status(422)
}

fn not_found() -> Response {
    Response::json(&json!({ "error": "no such todo" })).with_status(404)
}

wharf_sdk::export!(app);

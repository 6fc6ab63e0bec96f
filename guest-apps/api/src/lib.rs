//! A small JSON API: served at /api by wharf.

use serde::{Deserialize, Serialize};
use wharf_sdk::{Request, Response, Router};

#[derive(Serialize)]
struct Book {
    id: u32,
    title: &'static str,
    author: &'static str,
}

const BOOKS: [Book; 3] = [
    Book {
        id: 1,
        title: "The Left Hand of Darkness",
        author: "Ursula K. Le Guin",
    },
    Book {
        id: 2,
        title: "Dune",
        author: "Frank Herbert",
    },
    Book {
        id: 3,
        title: "Hyperion",
        author: "Dan Simmons",
    },
];

#[derive(Deserialize, Serialize)]
struct Greeting {
    name: String,
    #[serde(default)]
    times: u32,
}

fn app(req: Request) -> Response {
    Router::new()
        .get("/api", |_| Response::json(&serde_json::json!({ "service": "books", "routes": ["/api/books", "/api/books/:id", "/api/echo", "/api/greet"] })))
        .get("/api/books", |_| Response::json(&BOOKS))
        .get("/api/books/:id", book)
        .post("/api/echo", echo)
        .post("/api/greet", greet)
        .handle(req)
}

fn book(req: Request) -> Response {
    let found = req
        .param("id")
        .and_then(|id| id.parse::<u32>().ok())
        .and_then(|id| BOOKS.iter().find(|b| b.id == id));
    match found {
        Some(book) => Response::json(book),
        None => Response::json(&serde_json::json!({ "error": "no such book" })).with_status(404),
    }
}

/// Echoes any JSON document back, unchanged in meaning.
fn echo(req: Request) -> Result<Response, Response> {
    let value: serde_json::Value = req.json()?;
    Ok(Response::json(&value))
}

/// Typed JSON in and out; the greeting word comes from the app's variables.
fn greet(req: Request) -> Result<Response, Response> {
    let greeting: Greeting = req.json()?;
    let word = wharf_sdk::var("greeting").unwrap_or_else(|| "Hello".into());
    let message = format!("{word}, {}!", greeting.name);
    Ok(
        Response::json(&serde_json::json!({ "message": message, "times": greeting.times.max(1) }))
            .with_status(201),
    )
}

wharf_sdk::export!(app);

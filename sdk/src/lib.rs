//! Write [wharf](https://crates.io/crates/wharf) apps in Rust.
#![warn(missing_docs)]
//!
//! An app is a function from [`Request`] to [`Response`], exported with [`export!`].
//! Build it for `wasm32-wasip2`; the result is a standard `wasi:http` component that
//! wharf (or any `wasi:http` host) serves.
//!
//! ```no_run
//! use wharf_sdk::{Request, Response};
//!
//! fn hello(_req: Request) -> Response {
//!     Response::text("Hello from wharf!\n")
//! }
//!
//! wharf_sdk::export!(hello);
//! ```
//!
//! Larger apps route by method and path with a [`Router`], read JSON with
//! [`Request::json`] and answer it with [`Response::json`].
//!
//! An app whose manifest says `database = true` runs SQL on the database wharf
//! manages for it (MySQL/MariaDB, or SQLite) with [`db`]: parameters are bound, rows
//! read by column name or straight into your own types, and a database error is
//! itself a response (503 with `Retry-After` while the database is unavailable), so
//! `?` works in handlers.
//!
//! ```no_run
//! use wharf_sdk::{db, Request, Response};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Todo {
//!     id: u64,
//!     title: String,
//!     done: bool,
//! }
//!
//! fn todos(_req: Request) -> Result<Response, Response> {
//!     let rows = db::query("SELECT id, title, done FROM todos WHERE done = ?", &[false.into()])?;
//!     Ok(Response::json(&rows.to_structs::<Todo>()?))
//! }
//!
//! wharf_sdk::export!(todos);
//! ```

pub mod db;
mod headers;
mod request;
mod response;
mod router;
mod serve;

pub use request::{Method, Request};
pub use response::{IntoResponse, Response};
pub use router::Router;

/// Reads one of the app's variables (set under `[variables]` in the app's manifest).
///
/// ```no_run
/// let greeting = wharf_sdk::var("greeting").unwrap_or_else(|| "Hello".into());
/// ```
pub fn var(name: &str) -> Option<String> {
    bindings::wharf::platform::config::get(name)
}

/// Every variable of the app, as name and value.
///
/// ```no_run
/// for (name, value) in wharf_sdk::vars() {
///     println!("{name} = {value}");
/// }
/// ```
pub fn vars() -> Vec<(String, String)> {
    bindings::wharf::platform::config::get_all()
}

/// Raw bindings to the `wharf:platform` WIT package (`sdk/wit/`).
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "wharf:platform/imports",
        // `db::Value` has exactly the shape of the WIT `value` variant, so parameters
        // are lowered and column values lifted in place, with no copy into a twin type.
        with: {
            "wharf:platform/sql@0.1.0/value": crate::db::Value,
        },
        generate_all,
    });
}

/// Exports a handler as the app's `wasi:http/incoming-handler`.
///
/// The handler is any function `fn(Request) -> R` where `R:` [`IntoResponse`], such as
/// a plain function or [`Router::handle`] behind a small wrapper.
///
/// ```no_run
/// use wharf_sdk::{Request, Response, Router};
///
/// fn app(req: Request) -> Response {
///     Router::new()
///         .get("/app/ping", |_| Response::text("pong"))
///         .handle(req)
/// }
///
/// wharf_sdk::export!(app);
/// ```
#[macro_export]
macro_rules! export {
    ($handler:path) => {
        #[doc(hidden)]
        pub struct __WharfApp;

        impl $crate::__private::Guest for __WharfApp {
            fn handle(
                request: $crate::__private::IncomingRequest,
                out: $crate::__private::ResponseOutparam,
            ) {
                $crate::__private::serve(request, out, |req| {
                    $crate::IntoResponse::into_response($handler(req))
                })
            }
        }

        $crate::__private::wasi::http::proxy::export!(
            __WharfApp with_types_in $crate::__private::wasi
        );
    };
}

/// Not public API: used by [`export!`].
#[doc(hidden)]
pub mod __private {
    pub use crate::serve::serve;
    pub use wasi;
    pub use wasi::exports::http::incoming_handler::Guest;
    pub use wasi::http::types::{IncomingRequest, ResponseOutparam};
}

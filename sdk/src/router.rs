use crate::request::percent_decode;
use crate::{IntoResponse, Method, Request, Response};

type Handler = Box<dyn Fn(Request) -> Response>;

/// Routes requests by method and path pattern.
///
/// Patterns are matched segment by segment: a literal matches itself, `:name`
/// captures one segment (read it with [`Request::param`]), and a final `*name`
/// captures the rest of the path. The first matching route wins. A path that
/// matches no route answers 404; a path that matches only with other methods
/// answers 405 with an `Allow` header.
///
/// ```
/// use wharf_sdk::{Method, Request, Response, Router};
///
/// let router = Router::new()
///     .get("/api/items/:id", |req| Response::text(format!("item {}", req.param("id").unwrap())))
///     .post("/api/items", |req| Response::new(201).with_body(req.body().to_vec()));
///
/// let res = router.handle(Request::new(Method::Get, "/api/items/42"));
/// assert_eq!(res.body(), b"item 42");
/// assert_eq!(router.handle(Request::new(Method::Delete, "/api/items")).status(), 405);
/// assert_eq!(router.handle(Request::new(Method::Get, "/nope")).status(), 404);
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<(Method, Vec<Segment>, Handler)>,
}

#[derive(Debug, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

impl Router {
    /// An empty router: every request gets 404.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Router};
    /// assert_eq!(Router::new().handle(Request::new(Method::Get, "/")).status(), 404);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route for `method` and `pattern`.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Response, Router};
    /// let router = Router::new().route(Method::Options, "/*any", |_| Response::new(204));
    /// assert_eq!(router.handle(Request::new(Method::Options, "/a/b")).status(), 204);
    /// ```
    pub fn route<R: IntoResponse>(
        mut self,
        method: Method,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Self {
        let segments = split(pattern)
            .map(|s| {
                if let Some(name) = s.strip_prefix(':') {
                    Segment::Param(name.to_string())
                } else if let Some(name) = s.strip_prefix('*') {
                    Segment::Rest(name.to_string())
                } else {
                    Segment::Literal(s.to_string())
                }
            })
            .collect();
        self.routes.push((
            method,
            segments,
            Box::new(move |req| handler(req).into_response()),
        ));
        self
    }

    /// Adds a `GET` route (which also answers `HEAD`).
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Router};
    /// let router = Router::new().get("/files/*path", |req| req.param("path").unwrap().to_string());
    /// assert_eq!(router.handle(Request::new(Method::Get, "/files/a/b.txt")).body(), b"a/b.txt");
    /// assert_eq!(router.handle(Request::new(Method::Head, "/files/x")).status(), 200);
    /// ```
    pub fn get<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Self {
        self.route(Method::Get, pattern, handler)
    }

    /// Adds a `POST` route.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Response, Router};
    /// let router = Router::new().post("/items", |_| Response::new(201));
    /// assert_eq!(router.handle(Request::new(Method::Post, "/items")).status(), 201);
    /// ```
    pub fn post<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Self {
        self.route(Method::Post, pattern, handler)
    }

    /// Adds a `PUT` route.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Response, Router};
    /// let router = Router::new().put("/items/:id", |_| Response::new(204));
    /// assert_eq!(router.handle(Request::new(Method::Put, "/items/1")).status(), 204);
    /// ```
    pub fn put<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Self {
        self.route(Method::Put, pattern, handler)
    }

    /// Adds a `PATCH` route.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Response, Router};
    /// let router = Router::new().patch("/items/:id", |_| Response::new(204));
    /// assert_eq!(router.handle(Request::new(Method::Patch, "/items/1")).status(), 204);
    /// ```
    pub fn patch<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Self {
        self.route(Method::Patch, pattern, handler)
    }

    /// Adds a `DELETE` route.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Response, Router};
    /// let router = Router::new().delete("/items/:id", |_| Response::new(204));
    /// assert_eq!(router.handle(Request::new(Method::Delete, "/items/1")).status(), 204);
    /// ```
    pub fn delete<R: IntoResponse>(
        self,
        pattern: &str,
        handler: impl Fn(Request) -> R + 'static,
    ) -> Self {
        self.route(Method::Delete, pattern, handler)
    }

    /// Dispatches `req` to the first matching route.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Router};
    /// let router = Router::new().get("/a", |_| "first").get("/:any", |_| "second");
    /// assert_eq!(router.handle(Request::new(Method::Get, "/a")).body(), b"first");
    /// assert_eq!(router.handle(Request::new(Method::Get, "/b")).body(), b"second");
    /// ```
    pub fn handle(&self, mut req: Request) -> Response {
        let path: Vec<&str> = split(req.path()).collect();
        let mut allowed: Vec<&str> = Vec::new();
        for (method, pattern, handler) in &self.routes {
            let Some(params) = match_path(pattern, &path) else {
                continue;
            };
            let head_as_get = *req.method() == Method::Head && *method == Method::Get;
            if method == req.method() || head_as_get {
                req.set_params(params);
                return handler(req);
            }
            if !allowed.contains(&method.as_str()) {
                allowed.push(method.as_str());
            }
        }
        if allowed.is_empty() {
            Response::not_found()
        } else {
            Response::text("405 Method Not Allowed\n")
                .with_status(405)
                .with_header("allow", allowed.join(", "))
        }
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn match_path(pattern: &[Segment], path: &[&str]) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    for (i, segment) in pattern.iter().enumerate() {
        match segment {
            Segment::Rest(name) => {
                let rest: Vec<String> = path
                    .get(i..)?
                    .iter()
                    .map(|s| percent_decode(s, false))
                    .collect();
                params.push((name.clone(), rest.join("/")));
                return Some(params);
            }
            Segment::Literal(lit) => {
                if path.get(i)? != lit {
                    return None;
                }
            }
            Segment::Param(name) => {
                params.push((name.clone(), percent_decode(path.get(i)?, false)))
            }
        }
    }
    (pattern.len() == path.len()).then_some(params)
}

use crate::headers::Headers;
use serde::Serialize;

/// An outgoing response: status, headers and a body.
///
/// ```
/// use wharf_sdk::Response;
/// let res = Response::text("created\n").with_status(201).with_header("x-id", "7");
/// assert_eq!(res.status(), 201);
/// assert_eq!(res.header("X-Id"), Some("7"));
/// assert_eq!(res.body(), b"created\n");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// let res = Response::new(204);
    /// assert_eq!((res.status(), res.body()), (204, &b""[..]));
    /// ```
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    /// `200 OK` with a `text/plain` body.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// let res = Response::text("hi");
    /// assert_eq!(res.header("content-type"), Some("text/plain; charset=utf-8"));
    /// ```
    pub fn text(body: impl Into<String>) -> Self {
        Self::new(200)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// `200 OK` with an HTML body.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// let res = Response::html("<h1>hi</h1>");
    /// assert_eq!(res.header("content-type"), Some("text/html; charset=utf-8"));
    /// ```
    pub fn html(body: impl Into<String>) -> Self {
        Self::new(200)
            .with_header("content-type", "text/html; charset=utf-8")
            .with_body(body.into())
    }

    /// `200 OK` with `value` serialized as JSON.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// let res = Response::json(&serde_json::json!({ "ok": true }));
    /// assert_eq!(res.body(), br#"{"ok":true}"#);
    /// assert_eq!(res.header("content-type"), Some("application/json"));
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(200)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(e) => Self::text(format!("could not serialize response: {e}\n")).with_status(500),
        }
    }

    /// `404 Not Found` with a short text body.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// assert_eq!(Response::not_found().status(), 404);
    /// ```
    pub fn not_found() -> Self {
        Self::text("404 Not Found\n").with_status(404)
    }

    /// Sets the status code.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// assert_eq!(Response::text("gone").with_status(410).status(), 410);
    /// ```
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// let res = Response::new(302).with_header("Location", "/login");
    /// assert_eq!(res.header("location"), Some("/login"));
    /// ```
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(name, value.into());
        self
    }

    /// Replaces the body.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// assert_eq!(Response::new(200).with_body("x").body(), b"x");
    /// ```
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// assert_eq!(Response::text("ok").status(), 200);
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` as text.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// assert_eq!(Response::json(&1).header("Content-Type"), Some("application/json"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// All headers, names in lower case.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// assert_eq!(Response::text("x").headers().count(), 1);
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter()
    }

    /// The body bytes.
    ///
    /// ```
    /// # use wharf_sdk::Response;
    /// assert_eq!(Response::text("abc").body(), b"abc");
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub(crate) fn into_parts(self) -> (u16, Headers, Vec<u8>) {
        (self.status, self.headers, self.body)
    }
}

/// Anything a handler may return: a [`Response`], text, or a `Result` whose error is
/// itself a response (so `?` works on [`Request::json`](crate::Request::json)).
///
/// ```
/// use wharf_sdk::{IntoResponse, Response};
/// assert_eq!("hi".into_response().body(), b"hi");
/// let failed: Result<Response, Response> = Err(Response::new(422));
/// assert_eq!(failed.into_response().status(), 422);
/// ```
pub trait IntoResponse {
    /// Converts into a response.
    ///
    /// ```
    /// # use wharf_sdk::IntoResponse;
    /// assert_eq!(String::from("hi").into_response().status(), 200);
    /// ```
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for &str {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::text(self)
    }
}

impl<T: IntoResponse, E: IntoResponse> IntoResponse for Result<T, E> {
    fn into_response(self) -> Response {
        match self {
            Ok(v) => v.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

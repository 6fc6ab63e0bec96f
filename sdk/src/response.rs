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
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `200 OK` with a `text/plain` body.
    pub fn text(body: impl Into<String>) -> Self {
        Self::new(200)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// `200 OK` with an HTML body.
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
    pub fn not_found() -> Self {
        Self::text("404 Not Found\n").with_status(404)
    }

    /// Sets the status code.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// All headers, names in lower case.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub(crate) fn into_parts(self) -> (u16, Vec<(String, Vec<u8>)>, Vec<u8>) {
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

use crate::headers::Headers;
use serde::de::DeserializeOwned;
use std::cell::OnceCell;
use std::rc::Rc;

/// An HTTP method.
///
/// ```
/// use wharf_sdk::Method;
/// assert_eq!(Method::Get.as_str(), "GET");
/// assert_eq!(Method::from("PURGE"), Method::Other("PURGE".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `CONNECT`
    Connect,
    /// `TRACE`
    Trace,
    /// Any other method, as sent.
    Other(String),
}

impl Method {
    /// The method as it appears on the wire.
    ///
    /// ```
    /// # use wharf_sdk::Method;
    /// assert_eq!(Method::Other("PURGE".into()).as_str(), "PURGE");
    /// ```
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
            Method::Other(m) => m,
        }
    }
}

impl From<&str> for Method {
    fn from(s: &str) -> Self {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "CONNECT" => Method::Connect,
            "TRACE" => Method::Trace,
            other => Method::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An incoming request. Its headers and body are read from the host when first used.
///
/// ```
/// use wharf_sdk::{Method, Request};
/// let req = Request::new(Method::Post, "/api/echo?x=1")
///     .with_header("content-type", "application/json")
///     .with_body(r#"{"a":1}"#);
/// assert_eq!(req.path(), "/api/echo");
/// assert_eq!(req.query(), Some("x=1"));
/// assert_eq!(req.header("Content-Type"), Some("application/json"));
/// let v: serde_json::Value = req.json().unwrap();
/// assert_eq!(v["a"], 1);
/// ```
#[derive(Clone)]
pub struct Request {
    /// Every part is fetched from the host on first use: a handler that never looks
    /// at one costs no host call for it.
    method: OnceCell<Method>,
    path_with_query: OnceCell<String>,
    headers: OnceCell<Headers>,
    body: OnceCell<Result<Vec<u8>, String>>,
    params: Vec<(String, String)>,
    source: Option<Rc<dyn Source>>,
}

/// Where a request's headers and body come from when they are first needed.
pub(crate) trait Source {
    fn method(&self) -> Method;
    fn path_with_query(&self) -> String;
    fn headers(&self) -> Headers;
    fn body(&self) -> Result<Vec<u8>, String>;
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method.get())
            .field("path_with_query", &self.path_with_query.get())
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request with no headers and an empty body, handy in tests.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// let req = Request::new(Method::Get, "/hello");
    /// assert_eq!(req.body(), b"");
    /// ```
    pub fn new(method: Method, path_with_query: impl Into<String>) -> Self {
        Self {
            method: OnceCell::from(method),
            path_with_query: OnceCell::from(path_with_query.into()),
            headers: OnceCell::from(Headers::default()),
            body: OnceCell::from(Ok(Vec::new())),
            params: Vec::new(),
            source: None,
        }
    }

    pub(crate) fn from_source(source: Rc<dyn Source>) -> Self {
        Self {
            method: OnceCell::new(),
            path_with_query: OnceCell::new(),
            headers: OnceCell::new(),
            body: OnceCell::new(),
            params: Vec::new(),
            source: Some(source),
        }
    }

    /// The value of a lazily read part, fetched from the source the first time.
    fn part<'a, T>(&'a self, cell: &'a OnceCell<T>, fetch: fn(&dyn Source) -> T) -> &'a T {
        cell.get_or_init(|| {
            // `Request::new` fills every part, so an empty cell always has a source.
            fetch(
                self.source
                    .as_deref()
                    .expect("request part without a source"),
            )
        })
    }

    fn loaded_path_with_query(&self) -> &str {
        self.part::<String>(&self.path_with_query, |s| s.path_with_query())
    }

    fn loaded_headers(&self) -> &Headers {
        self.part(&self.headers, |s| s.headers())
    }

    fn loaded_body(&self) -> &Result<Vec<u8>, String> {
        self.part(&self.body, |s| s.body())
    }

    /// The body, or a 400 response saying why it could not be read.
    fn read_body(&self) -> Result<&[u8], Response> {
        self.loaded_body().as_deref().map_err(|e| {
            Response::text(format!("could not read request body: {e}\n")).with_status(400)
        })
    }

    /// Adds a header (names are case-insensitive).
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// let req = Request::new(Method::Get, "/").with_header("Accept", "text/html");
    /// assert_eq!(req.header("accept"), Some("text/html"));
    /// ```
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.loaded_headers();
        if let Some(headers) = self.headers.get_mut() {
            headers.push(name, value.into());
        }
        self
    }

    /// Replaces the body.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// let req = Request::new(Method::Post, "/").with_body("hi");
    /// assert_eq!(req.text().unwrap(), "hi");
    /// ```
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = OnceCell::from(Ok(body.into()));
        self
    }

    /// The request method.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// assert_eq!(Request::new(Method::Put, "/").method(), &Method::Put);
    /// ```
    pub fn method(&self) -> &Method {
        self.part(&self.method, |s| s.method())
    }

    /// The full path as the client sent it, without the query: the app sees its
    /// route prefix too (`/hello/world` for an app mounted at `/hello`).
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// assert_eq!(Request::new(Method::Get, "/hello/world?x=1").path(), "/hello/world");
    /// ```
    pub fn path(&self) -> &str {
        let full = self.loaded_path_with_query();
        full.split_once('?').map_or(full, |(path, _)| path)
    }

    /// The query string, without the `?`.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// assert_eq!(Request::new(Method::Get, "/?a=1&b=2").query(), Some("a=1&b=2"));
    /// ```
    pub fn query(&self) -> Option<&str> {
        self.loaded_path_with_query()
            .split_once('?')
            .map(|(_, q)| q)
    }

    /// The first value of query parameter `name`, percent-decoded.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// let req = Request::new(Method::Get, "/s?q=a%20b&n=2");
    /// assert_eq!(req.query_param("q").as_deref(), Some("a b"));
    /// assert_eq!(req.query_param("missing"), None);
    /// ```
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true) == name).then(|| percent_decode(v, true))
        })
    }

    /// The first value of header `name` as text, if present and valid UTF-8.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// let req = Request::new(Method::Get, "/").with_header("x-token", "abc");
    /// assert_eq!(req.header("X-Token"), Some("abc"));
    /// assert_eq!(req.header("missing"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.loaded_headers().get(name)
    }

    /// All headers, in the order received, names in lower case.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// let req = Request::new(Method::Get, "/").with_header("A", "1").with_header("b", "2");
    /// let names: Vec<&str> = req.headers().map(|(k, _)| k).collect();
    /// assert_eq!(names, ["a", "b"]);
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.loaded_headers().iter()
    }

    /// The body bytes (empty if it could not be read; [`Request::text`] and
    /// [`Request::json`] report that as a 400).
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// assert_eq!(Request::new(Method::Post, "/").with_body(vec![1, 2]).body(), &[1, 2]);
    /// ```
    pub fn body(&self) -> &[u8] {
        self.loaded_body().as_deref().unwrap_or(&[])
    }

    /// The body as UTF-8 text; invalid UTF-8 is a 400 error.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request};
    /// let bad = Request::new(Method::Post, "/").with_body(vec![0xff]);
    /// assert_eq!(bad.text().unwrap_err().status(), 400);
    /// ```
    pub fn text(&self) -> Result<&str, Response> {
        std::str::from_utf8(self.read_body()?)
            .map_err(|_| Response::text("request body is not valid UTF-8\n").with_status(400))
    }

    /// The body parsed as JSON. The error is a ready 400 response naming the problem,
    /// so handlers can use `?`.
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Response};
    /// #[derive(serde::Deserialize)]
    /// struct Login { user: String }
    ///
    /// fn login(req: Request) -> Result<Response, Response> {
    ///     let login: Login = req.json()?;
    ///     Ok(Response::text(format!("hi {}", login.user)))
    /// }
    ///
    /// let ok = login(Request::new(Method::Post, "/").with_body(r#"{"user":"ada"}"#));
    /// assert_eq!(ok.unwrap().body(), b"hi ada");
    /// let bad = login(Request::new(Method::Post, "/").with_body("{"));
    /// assert_eq!(bad.unwrap_err().status(), 400);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Response> {
        serde_json::from_slice(self.read_body()?).map_err(|e| {
            Response::json(&serde_json::json!({ "error": format!("invalid JSON body: {e}") }))
                .with_status(400)
        })
    }

    /// A path parameter captured by the [`Router`](crate::Router) (`:id` in `/items/:id`).
    ///
    /// ```
    /// # use wharf_sdk::{Method, Request, Response, Router};
    /// let router = Router::new().get("/users/:name", |req| {
    ///     Response::text(format!("user {}", req.param("name").unwrap_or("?")))
    /// });
    /// let res = router.handle(Request::new(Method::Get, "/users/ada%20l"));
    /// assert_eq!(res.body(), b"user ada l");
    /// ```
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn set_params(&mut self, params: Vec<(String, String)>) {
        self.params = params;
    }
}

use crate::Response;

/// Decodes `%XX` escapes (and `+` as space in query strings); malformed escapes are
/// kept as they are, invalid UTF-8 becomes U+FFFD.
pub(crate) fn percent_decode(s: &str, plus_as_space: bool) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') if plus_as_space => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

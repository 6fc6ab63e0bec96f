//! Static files for the web server role.
//!
//! tower-http's `ServeDir` does the HTTP work: byte ranges, ETag / Last-Modified and the
//! conditional requests on them, precompressed `.br` / `.gz` siblings, `index.html` for
//! directories and content types. This module adds what a server facing the internet
//! needs on top: every file `ServeDir` opens is confined to the root even through
//! symlinks, only regular files are read (opened without blocking, so a FIFO cannot
//! hold a worker), hostile paths are refused before they reach the file system, the
//! content coding is negotiated once (so the cache keys on it), text without a
//! precompressed sibling is compressed on the fly, the site's Cache-Control is set, and
//! small files are answered from memory while they stay unchanged (see [`cache`]).
//!
//! The seams: [`serve_dir`] adapts tower-http's `ServeDir` and compressor to wharf's
//! answers, [`confined`] is the only way a file is opened, [`cache`] keeps small answers.

mod cache;
mod confined;
mod serve_dir;

use super::GatewayError;
use crate::http::Body;
use anyhow::{Context as _, bail};
use bytes::Bytes;
use cache::{Encoding, Entry, FileCache, Identity, KeyRef};
use confined::RequestFiles;
use http::header::RANGE;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use percent_encoding::percent_decode_str;
use serve_dir::{EncodedOnDisk, Predicate, compressible};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tower::{Layer, ServiceExt};
use tower_http::compression::CompressionLayer;

pub struct StaticFiles {
    cache: FileCache,
    root: Arc<Path>,
    /// The root, open, for `openat2`.
    root_dir: Arc<OwnedFd>,
    compression: CompressionLayer<Predicate>,
    cache_control: Option<HeaderValue>,
}

impl StaticFiles {
    /// `root` must exist and be a directory. `cache_control` is sent as Cache-Control on
    /// 200, 206 and 304 answers; `None` sends no such header.
    pub fn new(root: &Path, cache_control: Option<&str>) -> anyhow::Result<Self> {
        let root_real = std::fs::canonicalize(root)
            .with_context(|| format!("static files root {}", root.display()))?;
        if !root_real.is_dir() {
            bail!("static files root {} is not a directory", root.display());
        }
        let cache_control = cache_control
            .map(|value| {
                HeaderValue::from_str(value)
                    .with_context(|| format!("Cache-Control value {value:?} is not a valid header"))
            })
            .transpose()?;
        let root_dir = std::fs::File::open(&root_real)
            .with_context(|| format!("static files root {}", root.display()))?;
        let compression = CompressionLayer::new().compress_when(compressible as Predicate);
        Ok(Self {
            cache: FileCache::new(),
            root: root_real.into(),
            root_dir: Arc::new(root_dir.into()),
            compression,
            cache_control,
        })
    }

    /// Serves `req` from the root. `prefix` is the route this was mounted on ("/" or e.g.
    /// "/assets"); it is stripped from the request path, so "/assets/app.js" is
    /// `<root>/app.js`. The request body is never read. What the files cannot answer
    /// (another method, a hostile path, no such file, a failed read) is an error for the
    /// gateway to map, as every other.
    pub async fn serve<B>(
        &self,
        req: Request<B>,
        prefix: &str,
    ) -> Result<Response<Body>, GatewayError> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(GatewayError::MethodNotAllowed("GET, HEAD"));
        }
        let is_head = req.method() == Method::HEAD;
        let prefix = prefix.trim_end_matches('/');
        let (mut parts, _body) = req.into_parts();

        let Some(rest) = parts.uri.path().strip_prefix(prefix) else {
            return Err(GatewayError::NotFound);
        };
        let query = || {
            parts
                .uri
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        };
        if rest.is_empty() {
            // "/assets" itself: send the client to "/assets/" so relative links in the
            // index page resolve below the mount point, as ServeDir does for directories.
            let location = format!("{prefix}/{}", query());
            return Ok(super::redirect(StatusCode::TEMPORARY_REDIRECT, &location));
        }
        if !rest.starts_with('/') {
            // "/assetsfoo" merely shares the prefix's spelling.
            return Err(GatewayError::NotFound);
        }
        if !is_safe_path(rest) {
            return Err(GatewayError::BadRequest("the path is not allowed"));
        }
        // The encoding is chosen here, once, and ServeDir and the compressor are asked
        // for exactly that one: the answer then depends on the file and the encoding
        // alone, which is what the cache keys on.
        let encoding = negotiate(&parts.headers);
        if let Some(encoding) = encoding {
            parts.headers.remove(header::ACCEPT_ENCODING);
            if let Some(value) = encoding.accept_value() {
                parts
                    .headers
                    .insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            }
        }
        // Requests that only ask for the whole file can be answered from memory; a
        // miss on GET remembers the file to fill the cache afterwards.
        let cache_key = match encoding {
            Some(encoding) if is_plain_fetch(&parts.headers) => {
                let file = resolved_file(rest);
                let key = KeyRef {
                    file: &file,
                    encoding,
                };
                if let Some(entry) = self.cache.get(&key, &self.root_dir) {
                    return Ok(cached(&entry, is_head));
                }
                (!is_head).then_some((file, encoding))
            }
            _ => None,
        };
        if !prefix.is_empty() {
            // Mounted below "/": ServeDir sees the path relative to the mount point.
            let Ok(path_and_query) = PathAndQuery::try_from(format!("{rest}{}", query())) else {
                return Err(GatewayError::BadRequest("the path is not valid"));
            };
            let mut uri = parts.uri.into_parts();
            uri.path_and_query = Some(path_and_query);
            let Ok(uri) = http::Uri::from_parts(uri) else {
                return Err(GatewayError::BadRequest("the path is not valid"));
            };
            parts.uri = uri;
        }
        let req = Request::from_parts(parts, Empty::<Bytes>::new());

        let files = Arc::new(Mutex::new(RequestFiles::default()));
        let dir = ServiceExt::<Request<Empty<Bytes>>>::map_response(
            self.dir(prefix, files.clone()),
            |mut response| {
                if response.headers().contains_key(header::CONTENT_ENCODING) {
                    response.extensions_mut().insert(EncodedOnDisk);
                }
                response
            },
        );
        // A client that accepts no encoding gets nothing from the compression layer
        // but its cost, so it goes straight to the files.
        let response = if req.headers().contains_key(header::ACCEPT_ENCODING) {
            match self.compression.layer(dir).oneshot(req).await {
                Ok(response) => self.finish(response, is_head)?,
                Err(never) => match never {},
            }
        } else {
            match dir.oneshot(req).await {
                Ok(response) => self.finish(response, is_head)?,
                Err(never) => match never {},
            }
        };
        let served = files.lock().unwrap().served.take();
        match (cache_key, served) {
            (Some(key), Some((source, identity)))
                if response.status() == StatusCode::OK && identity.len() <= cache::MAX_FILE_LEN =>
            {
                self.remember(key, source, identity, response).await
            }
            _ => Ok(response),
        }
    }

    /// Reads the whole of a small file's answer into the cache and answers from there.
    /// It is kept under the encoding negotiated for the request, not the one the answer
    /// has: a png or a tiny file goes out uncompressed to a client that asked for br, and
    /// that client's next request looks it up under br.
    async fn remember(
        &self,
        (file, encoding): (String, Encoding),
        source: PathBuf,
        identity: Identity,
        response: Response<Body>,
    ) -> Result<Response<Body>, GatewayError> {
        let (mut parts, body) = response.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                tracing::warn!(file = %source.display(), "static file read failed: {e}");
                return Err(GatewayError::FileUnreadable);
            }
        };
        // A compressed answer was a stream; whole, it has a length.
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if Encoding::of_content(parts.headers.get(header::CONTENT_ENCODING)).is_none() {
            return Ok(cached_answer(parts.headers, body));
        }
        let key = KeyRef {
            file: &file,
            encoding,
        };
        let entry = self
            .cache
            .insert(&key, source, identity, parts.headers, body);
        Ok(cached(&entry, false))
    }
}

/// A GET or HEAD of the whole file, unconditionally: the only kind the cache answers.
fn is_plain_fetch(headers: &HeaderMap) -> bool {
    use header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};
    [
        RANGE,
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
    ]
    .iter()
    .all(|name| !headers.contains_key(name))
}

/// The answer kept in `entry`; without its body for HEAD.
fn cached(entry: &Entry, is_head: bool) -> Response<Body> {
    let body = if is_head {
        Bytes::new()
    } else {
        entry.body.clone()
    };
    cached_answer(entry.headers.clone(), body)
}

/// A 200 with these headers and this whole body.
fn cached_answer(headers: HeaderMap, body: Bytes) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.headers_mut() = headers;
    response
}

/// The encoding the answer to these `Accept-Encoding` headers gets: of br and gzip, the
/// accepted one with the highest q-value (br on a tie, as tower-http prefers it),
/// else identity; `None` when the client refuses identity too, which is left to
/// tower-http to answer. Unknown codings and malformed items are ignored; a `*` stands
/// for br and gzip where they are not named (RFC 9110 §12.5.3).
fn negotiate(headers: &HeaderMap) -> Option<Encoding> {
    let (mut br, mut gzip, mut identity, mut any) = (None, None, None, None);
    let items = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for item in items {
        let (name, q) = match item.split_once(';') {
            Some((name, q)) => match q_value(q.trim()) {
                Some(q) => (name.trim(), q),
                None => continue,
            },
            None => (item.trim(), 1000),
        };
        let slot = match name.to_ascii_lowercase().as_str() {
            "br" => &mut br,
            "gzip" | "x-gzip" => &mut gzip,
            "identity" => &mut identity,
            "*" => &mut any,
            _ => continue,
        };
        // The first mention of a coding is the one that counts.
        slot.get_or_insert(q);
    }
    let br = br.or(any).unwrap_or(0);
    let gzip = gzip.or(any).unwrap_or(0);
    if br > 0 && br >= gzip {
        Some(Encoding::Br)
    } else if gzip > 0 {
        Some(Encoding::Gzip)
    } else if identity.or(any).unwrap_or(1) > 0 {
        Some(Encoding::Identity)
    } else {
        None
    }
}

/// A `q=` weight in thousandths (RFC 9110 §12.4.2), if well formed.
fn q_value(param: &str) -> Option<u16> {
    let value = param
        .strip_prefix("q=")
        .or_else(|| param.strip_prefix("Q="))?;
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The file ServeDir reads for `path` (below the mount point, checked by
/// [`is_safe_path`]): its decoded segments less the empty and `.` ones, and `index.html`
/// after a directory's slash. Every spelling of one file gives the one cache key.
fn resolved_file(path: &str) -> String {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let mut file = decoded
        .split('/')
        .filter(|segment| !segment.is_empty() && *segment != ".")
        .collect::<Vec<_>>()
        .join("/");
    if path.ends_with('/') {
        if !file.is_empty() {
            file.push('/');
        }
        file.push_str("index.html");
    }
    file
}

/// Refuses request paths that can only be attempts to leave the root or confuse the file
/// system: `..` segments (also percent-encoded), backslashes, NUL, bytes that are not
/// UTF-8 (overlong encodings such as `%c0%ae` among them) and encoded slashes, which
/// ServeDir would turn into separators after routing saw one segment (see
/// `crate::http::path`). It decodes exactly once, as ServeDir does, so a double-encoded
/// `%252e` stays the literal name `%2e`. ConfinedBackend is what actually guarantees
/// confinement; this gives hostile requests a 400 instead of a file-system lookup.
fn is_safe_path(path: &str) -> bool {
    let encoded_slash = path
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'));
    let Ok(decoded) = percent_decode_str(path).decode_utf8() else {
        return false;
    };
    !encoded_slash
        && decoded
            .split('/')
            .all(|segment| segment != ".." && !segment.contains(['\\', '\0']))
}

// The confinement tests build symlinks.
#[cfg(all(test, unix))]
mod tests;

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

mod cache;

use super::GatewayError;
use crate::http::Body;
use anyhow::{Context as _, bail};
use bytes::Bytes;
use cache::{Encoding, Entry, FileCache, Identity, KeyRef};
use http::header::RANGE;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Extensions, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use percent_encoding::percent_decode_str;
use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
use rustix::io::Errno;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tower::{Layer, ServiceExt};
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::services::fs::{Backend, DefaultServeDirFallback};

/// Below this many bytes the encoding overhead eats most of the saving, and the response
/// fits in a packet or two either way.
const MIN_COMPRESS_LEN: u64 = 256;

type Predicate = fn(StatusCode, Version, &HeaderMap, &Extensions) -> bool;

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

    /// The ServeDir for one request. Each gets its own backend, whose one-file stash
    /// lets the file ServeDir stats (to see whether it is a directory) be the file it
    /// then opens: one `openat2` per request instead of two. `prefix` goes into
    /// ServeDir's "/dir" -> "/dir/" redirects, which it builds from the rewritten path
    /// and would otherwise send outside the mount point.
    fn dir(
        &self,
        prefix: &str,
        files: Arc<Mutex<RequestFiles>>,
    ) -> ServeDir<DefaultServeDirFallback, ConfinedBackend> {
        let backend = ConfinedBackend {
            root: self.root.clone(),
            root_dir: self.root_dir.clone(),
            files,
        };
        ServeDir::with_backend(&*self.root, backend)
            .append_index_html_on_directories(true)
            .precompressed_br()
            .precompressed_gzip()
            // ServeDir allocates a buffer of this size for each read of a file; 64 KiB
            // by default, mostly unused for the small files sites are made of.
            .with_buf_chunk_size(16 * 1024)
            .redirect_path_prefix(prefix)
    }

    /// Serves `req` from the root. `prefix` is the route this was mounted on ("/" or e.g.
    /// "/assets"); it is stripped from the request path, so "/assets/app.js" is
    /// `<root>/app.js`. The request body is never read.
    pub async fn serve<B>(&self, req: Request<B>, prefix: &str) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return GatewayError::MethodNotAllowed("GET, HEAD").into_response();
        }
        let is_head = req.method() == Method::HEAD;
        let prefix = prefix.trim_end_matches('/');
        let (mut parts, _body) = req.into_parts();

        let Some(rest) = parts.uri.path().strip_prefix(prefix) else {
            return GatewayError::NotFound.into_response();
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
            return super::redirect(StatusCode::TEMPORARY_REDIRECT, &location);
        }
        if !rest.starts_with('/') {
            // "/assetsfoo" merely shares the prefix's spelling.
            return GatewayError::NotFound.into_response();
        }
        if !is_safe_path(rest) {
            return GatewayError::BadRequest("the path is not allowed").into_response();
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
                    return cached(&entry, is_head);
                }
                (!is_head).then_some((file, encoding))
            }
            _ => None,
        };
        if !prefix.is_empty() {
            // Mounted below "/": ServeDir sees the path relative to the mount point.
            let Ok(path_and_query) = PathAndQuery::try_from(format!("{rest}{}", query())) else {
                return GatewayError::BadRequest("the path is not valid").into_response();
            };
            let mut uri = parts.uri.into_parts();
            uri.path_and_query = Some(path_and_query);
            let Ok(uri) = http::Uri::from_parts(uri) else {
                return GatewayError::BadRequest("the path is not valid").into_response();
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
                Ok(response) => self.finish(response, is_head),
                Err(never) => match never {},
            }
        } else {
            match dir.oneshot(req).await {
                Ok(response) => self.finish(response, is_head),
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
            _ => response,
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
    ) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                tracing::warn!(file = %source.display(), "static file read failed: {e}");
                return GatewayError::FileUnreadable.into_response();
            }
        };
        // A compressed answer was a stream; whole, it has a length.
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if Encoding::of_content(parts.headers.get(header::CONTENT_ENCODING)).is_none() {
            return cached_answer(parts.headers, body);
        }
        let key = KeyRef {
            file: &file,
            encoding,
        };
        let entry = self
            .cache
            .insert(&key, source, identity, parts.headers, body);
        cached(&entry, false)
    }

    fn finish<B>(&self, response: Response<B>, is_head: bool) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::http::BoxError>,
    {
        let (mut parts, body) = response.into_parts();
        let status = parts.status;
        if status == StatusCode::NOT_FOUND {
            // ServeDir's 404 is empty; answer like the rest of wharf does.
            return GatewayError::NotFound.into_response();
        }

        let compressed_here = parts.headers.contains_key(header::CONTENT_ENCODING)
            && parts.extensions.get::<EncodedOnDisk>().is_none();
        if compressed_here {
            // ServeDir's ETag is strong and belongs to the bytes on disk; the compressed
            // stream is a different representation, and compressor output is not
            // byte-for-byte stable, so only a weak validator is honest here.
            if let Some(etag) = parts.headers.get(header::ETAG)
                && !etag.as_bytes().starts_with(b"W/")
                && let Ok(weak) = HeaderValue::from_bytes(&[b"W/", etag.as_bytes()].concat())
            {
                parts.headers.insert(header::ETAG, weak);
            }
        }
        // A 304 must carry the Vary its 200 would have had (RFC 9110 §15.4.5), and ServeDir
        // leaves it out.
        if status == StatusCode::NOT_MODIFIED && !parts.headers.contains_key(header::VARY) {
            parts
                .headers
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        if let Some(cache_control) = &self.cache_control
            && matches!(
                status,
                StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            parts
                .headers
                .insert(header::CACHE_CONTROL, cache_control.clone());
        }

        // On HEAD the compressor still emits its framing bytes for the empty input; the
        // headers are what the client asked for.
        let body = if is_head {
            Empty::new().map_err(|never| match never {}).boxed_unsync()
        } else {
            body.map_err(Into::into).boxed_unsync()
        };
        Response::from_parts(parts, body)
    }
}

/// Marks a response whose Content-Encoding comes from a precompressed sibling file rather
/// than from the on-the-fly compressor.
#[derive(Clone, Copy)]
struct EncodedOnDisk;

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
/// `gateway::path`). It decodes exactly once, as ServeDir does, so a double-encoded
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

/// Compress on the fly only complete answers of text, which shrinks well; precompressed
/// and ranged answers are left alone by the compression layer itself.
fn compressible(status: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions) -> bool {
    // Content-Length rather than the body's size: HEAD answers have an empty body but
    // must carry the same headers as GET.
    let long_enough = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len >= MIN_COMPRESS_LEN);
    let is_text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_text_type);
    status == StatusCode::OK && long_enough && is_text
}

/// html, css, js, plain and other text/*, json, xml, svg (image/svg+xml) and the like.
fn is_text_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || matches!(
            essence.as_str(),
            "application/javascript" | "application/json" | "application/xml"
        )
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
}

/// File access for ServeDir that never leaves the root. ServeDir rejects `..` in the
/// request path but follows symlinks, and it also opens paths the request did not name
/// (index.html, .br/.gz siblings), so the check sits here, on every open and stat, and
/// is the kernel's: `openat2` with RESOLVE_BENEATH from the root directory (Linux 5.6),
/// so there is no window between a check and the open.
///
/// The file system calls run inline on the worker thread, as nginx makes them (without
/// its thread pools): for files in the page cache a stat, open or read takes a few
/// microseconds, far less than a hop to tokio's blocking pool and back, which the
/// default backend pays for each of them (five or more per request). A file on a slow
/// disk stalls the worker for its read.
///
/// A backend lives for one request (see [`StaticFiles::dir`]).
#[derive(Clone)]
struct ConfinedBackend {
    root: Arc<Path>,
    /// The root, open, for `openat2`.
    root_dir: Arc<OwnedFd>,
    files: Arc<Mutex<RequestFiles>>,
}

/// What one request's backend has opened.
#[derive(Default)]
struct RequestFiles {
    /// The last file stat'ed, still open: ServeDir stats a path and then opens the
    /// same one.
    stash: Option<Stashed>,
    /// The file whose contents the answer carries (relative to the root), for the cache.
    served: Option<(PathBuf, Identity)>,
}

struct Stashed {
    path: PathBuf,
    file: std::fs::File,
    metadata: std::fs::Metadata,
}

impl ConfinedBackend {
    /// Opens `path` (under the root) for reading, or just as a handle for `stat`, with
    /// its metadata. The kernel resolves it with RESOLVE_BENEATH: symlinks that stay
    /// under the root work, any that lead out (and `..` past the root) fail, in one
    /// system call. Only regular files and directories are served: the open does not
    /// block (a FIFO without a writer would hold the worker thread forever, in the open
    /// or in the first read), and anything else it finds (FIFO, socket, device) is
    /// reported as absent before a byte is read.
    fn open_beneath(
        &self,
        path: &Path,
        flags: OFlags,
    ) -> io::Result<(std::fs::File, std::fs::Metadata)> {
        let relative = self.relative(path)?;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let file: std::fs::File = match openat2(
            &*self.root_dir,
            relative,
            flags | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
            resolve,
        ) {
            Ok(fd) => fd.into(),
            Err(Errno::XDEV) => return Err(outside(path)),
            Err(e) => return Err(e.into()),
        };
        let metadata = file.metadata()?;
        if !metadata.is_file() && !metadata.is_dir() {
            tracing::warn!(path = %path.display(), "refusing to serve what is not a regular file");
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a regular file",
            ));
        }
        Ok((file, metadata))
    }

    /// `path` relative to the root: ServeDir joins the request path onto the root it was
    /// given, so that is what follows the root's bytes and a separator.
    fn relative<'a>(&self, path: &'a Path) -> io::Result<&'a Path> {
        let relative = path
            .as_os_str()
            .as_encoded_bytes()
            .strip_prefix(self.root.as_os_str().as_encoded_bytes())
            .ok_or_else(|| outside(path))?;
        match relative {
            [] | [b'/'] => Ok(Path::new(".")),
            [b'/', rest @ ..] => Ok(Path::new(std::ffi::OsStr::from_bytes(rest))),
            _ => Err(outside(path)),
        }
    }
}

/// A path that resolves outside the root: logged, and reported to ServeDir as NotFound,
/// which makes it answer 404 and move on to the next precompressed variant, exactly as
/// if the file were absent.
fn outside(path: &Path) -> io::Error {
    tracing::warn!(path = %path.display(), "refusing a path that leads outside the static files root");
    io::Error::new(io::ErrorKind::NotFound, "outside the static files root")
}

impl Backend for ConfinedBackend {
    type File = LocalFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = std::future::Ready<io::Result<LocalFile>>;
    type MetadataFuture = std::future::Ready<io::Result<std::fs::Metadata>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        let mut files = self.files.lock().unwrap();
        let opened = match files.stash.take() {
            Some(stashed) if stashed.path == path => Ok((stashed.file, stashed.metadata)),
            _ => self.open_beneath(&path, OFlags::RDONLY),
        };
        if let (Ok((_, metadata)), Ok(relative)) = (&opened, self.relative(&path)) {
            files.served = Some((relative.to_owned(), Identity::of(metadata)));
        }
        std::future::ready(opened.map(|(file, metadata)| LocalFile {
            file,
            len: metadata.len(),
            left: metadata.len(),
            metadata,
            seeked: None,
        }))
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        let mut files = self.files.lock().unwrap();
        if let Some(stashed) = files.stash.as_ref().filter(|s| s.path == path) {
            return std::future::ready(Ok(stashed.metadata.clone()));
        }
        // Opened for reading, so that `open` can take it.
        let metadata = match self.open_beneath(&path, OFlags::RDONLY) {
            Ok((file, metadata)) => {
                files.stash = Some(Stashed {
                    path,
                    file,
                    metadata: metadata.clone(),
                });
                Ok(metadata)
            }
            // May be stat'ed but not read (a directory with only search permission):
            // answer from a handle `open` cannot use.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => self
                .open_beneath(&path, OFlags::PATH)
                .map(|(_, metadata)| metadata),
            Err(e) => Err(e),
        };
        std::future::ready(metadata)
    }
}

/// An open file read with plain blocking calls (see [`ConfinedBackend`]).
struct LocalFile {
    file: std::fs::File,
    /// Size when opened: what ServeDir announced as Content-Length.
    len: u64,
    /// Taken when opened; ServeDir asks for it again, and a second `fstat` would only
    /// tell the same.
    metadata: std::fs::Metadata,
    /// Bytes from the position to `len`. Reads stop there, and are sized by it: the
    /// buffer ServeDir passes is 64 KiB, and zeroing all of it for a 1 KiB file (as an
    /// uninitialised buffer must be before `Read::read`) costs more than the read.
    left: u64,
    /// Outcome of a `start_seek` not yet reported by `poll_complete`.
    seeked: Option<io::Result<u64>>,
}

impl tokio::io::AsyncRead for LocalFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::io::Read;
        let want = buf
            .remaining()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return std::task::Poll::Ready(Ok(()));
        }
        let n = self.file.read(buf.initialize_unfilled_to(want));
        if let Ok(n) = n {
            self.left -= n as u64;
        }
        std::task::Poll::Ready(n.map(|n| buf.advance(n)))
    }
}

impl tokio::io::AsyncSeek for LocalFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        use std::io::Seek;
        let seeked = self.file.seek(position);
        if let Ok(at) = seeked {
            self.left = self.len.saturating_sub(at);
        }
        self.seeked = Some(seeked);
        Ok(())
    }

    fn poll_complete(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<u64>> {
        use std::io::Seek;
        let result = match self.seeked.take() {
            Some(result) => result,
            None => self.file.stream_position(),
        };
        std::task::Poll::Ready(result)
    }
}

impl tower_http::services::fs::File for LocalFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> = std::future::Ready<io::Result<std::fs::Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        std::future::ready(Ok(self.metadata.clone()))
    }
}

// The confinement tests build symlinks.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::os::unix::fs::symlink;

    const CANARY: &str = "CANARY-outside-the-root";

    /// `<tmp>/secret.txt` and `<tmp>/secretdir/secret.txt` hold the canary; `<tmp>/root` is
    /// served and holds symlinks that lead to them.
    struct Site {
        tmp: tempfile::TempDir,
        files: StaticFiles,
    }

    fn long_text(word: &str) -> String {
        format!("{word} ").repeat(200)
    }

    fn site(cache_control: Option<&str>) -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        std::fs::write(base.join("secret.txt"), CANARY).unwrap();
        std::fs::create_dir(base.join("secretdir")).unwrap();
        std::fs::write(base.join("secretdir/secret.txt"), CANARY).unwrap();

        let root = base.join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
        std::fs::write(root.join("hello.txt"), "hello, world\n").unwrap();
        std::fs::write(root.join("style.css"), long_text("body{color:red}")).unwrap();
        std::fs::write(root.join("photo.png"), vec![7u8; 4096]).unwrap();
        std::fs::write(root.join("app.js"), long_text("identity")).unwrap();
        std::fs::write(root.join("app.js.br"), "br-sibling").unwrap();
        std::fs::write(root.join("app.js.gz"), "gz-sibling").unwrap();
        std::fs::create_dir(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>").unwrap();

        symlink("../secret.txt", root.join("link")).unwrap();
        symlink("../secretdir", root.join("linkdir")).unwrap();
        symlink("..", root.join("up")).unwrap();
        // Files ServeDir opens without the request naming them must be confined too.
        std::fs::write(root.join("page.txt"), long_text("page")).unwrap();
        symlink("../secret.txt", root.join("page.txt.gz")).unwrap();
        std::fs::create_dir(root.join("trap")).unwrap();
        symlink("../../secret.txt", root.join("trap/index.html")).unwrap();
        // A symlink that stays inside the root is fine.
        symlink("hello.txt", root.join("alias.txt")).unwrap();

        let files = StaticFiles::new(&root, cache_control).unwrap();
        Site { tmp, files }
    }

    async fn get(site: &Site, uri: &str, headers: &[(&str, &str)]) -> (Response<()>, Bytes) {
        request(site, Method::GET, uri, "/", headers).await
    }

    async fn request(
        site: &Site,
        method: Method,
        uri: &str,
        prefix: &str,
        headers: &[(&str, &str)],
    ) -> (Response<()>, Bytes) {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = site.files.serve(builder.body(()).unwrap(), prefix).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (Response::from_parts(parts, ()), body)
    }

    fn header(response: &Response<()>, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    #[tokio::test]
    async fn traversal_vectors_never_reach_outside_the_root() {
        let site = site(None);
        let canary_abs = site.tmp.path().join("secret.txt");
        let absolute = format!("/{}", canary_abs.display());
        let cases: &[(&str, StatusCode)] = &[
            ("/../secret.txt", StatusCode::BAD_REQUEST),
            ("/docs/../../secret.txt", StatusCode::BAD_REQUEST),
            ("/%2e%2e/secret.txt", StatusCode::BAD_REQUEST),
            ("/%2E%2E/secret.txt", StatusCode::BAD_REQUEST),
            ("/..%2fsecret.txt", StatusCode::BAD_REQUEST),
            // An encoded slash is never a separator (see gateway::path).
            ("/docs%2Findex.html", StatusCode::BAD_REQUEST),
            ("/%252e%252e/secret.txt", StatusCode::NOT_FOUND),
            ("/%252e%252e%252fsecret.txt", StatusCode::NOT_FOUND),
            ("/..%5csecret.txt", StatusCode::BAD_REQUEST),
            ("/..%5c..%5csecret.txt", StatusCode::BAD_REQUEST),
            // The http crate (and so hyper) takes a raw backslash in the path.
            ("/..\\secret.txt", StatusCode::BAD_REQUEST),
            ("/docs\\..\\..\\secret.txt", StatusCode::BAD_REQUEST),
            ("/hello.txt%00", StatusCode::BAD_REQUEST),
            ("/%00/../secret.txt", StatusCode::BAD_REQUEST),
            ("/%c0%ae%c0%ae/secret.txt", StatusCode::BAD_REQUEST),
            ("/%c0%af..%c0%afsecret.txt", StatusCode::BAD_REQUEST),
            ("//etc/passwd", StatusCode::NOT_FOUND),
            (&absolute, StatusCode::NOT_FOUND),
            ("/link", StatusCode::NOT_FOUND),
            ("/linkdir/secret.txt", StatusCode::NOT_FOUND),
            ("/up/secret.txt", StatusCode::NOT_FOUND),
            ("/up/secretdir/secret.txt", StatusCode::NOT_FOUND),
            ("/trap/", StatusCode::NOT_FOUND),
            ("/trap/index.html", StatusCode::NOT_FOUND),
        ];
        for (uri, expected) in cases {
            for method in [Method::GET, Method::HEAD] {
                let (response, body) = request(&site, method.clone(), uri, "/", &[]).await;
                assert_eq!(response.status(), *expected, "{method} {uri}");
                assert!(
                    !String::from_utf8_lossy(&body).contains(CANARY),
                    "{method} {uri} leaked the canary"
                );
            }
        }
    }

    #[tokio::test]
    async fn absolute_form_with_an_absolute_path_is_refused() {
        let site = site(None);
        let (response, body) = get(&site, "http://example.com//etc/passwd", &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(!String::from_utf8_lossy(&body).contains("root:"));
    }

    #[tokio::test]
    async fn precompressed_sibling_that_leaves_the_root_is_skipped() {
        let site = site(None);
        let (response, body) = get(&site, "/page.txt", &[("accept-encoding", "gzip")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!String::from_utf8_lossy(&body).contains(CANARY));
        // It falls back to compressing page.txt itself.
        assert_eq!(header(&response, header::CONTENT_ENCODING), "gzip");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, long_text("page"));
    }

    #[tokio::test]
    async fn traversal_under_a_prefix() {
        let site = site(None);
        for uri in ["/assets/../secret.txt", "/assets/%2e%2e/secret.txt"] {
            let (response, _) = request(&site, Method::GET, uri, "/assets", &[]).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        }
        for uri in ["/assets/link", "/assetshello.txt", "/hello.txt"] {
            let (response, _) = request(&site, Method::GET, uri, "/assets", &[]).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test]
    async fn symlink_inside_the_root_is_served() {
        let site = site(None);
        let (response, body) = get(&site, "/alias.txt", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body, "hello, world\n");
    }

    #[tokio::test]
    async fn serves_a_file_with_its_content_type() {
        let site = site(None);
        let (response, body) = get(&site, "/hello.txt", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body, "hello, world\n");
        assert!(header(&response, header::CONTENT_TYPE).starts_with("text/plain"));
        assert_eq!(header(&response, header::CONTENT_LENGTH), "13");
        assert!(response.headers().get(header::CACHE_CONTROL).is_none());

        let (response, _) = get(&site, "/style.css", &[]).await;
        assert!(header(&response, header::CONTENT_TYPE).starts_with("text/css"));
        let (response, _) = get(&site, "/photo.png", &[]).await;
        assert_eq!(header(&response, header::CONTENT_TYPE), "image/png");
    }

    #[tokio::test]
    async fn head_has_headers_but_no_body() {
        let site = site(None);
        let (response, body) = request(&site, Method::HEAD, "/hello.txt", "/", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, header::CONTENT_LENGTH), "13");
        assert!(body.is_empty());

        // Also when the GET would be compressed on the fly.
        let accept = [("accept-encoding", "gzip")];
        let (response, body) = request(&site, Method::HEAD, "/style.css", "/", &accept).await;
        assert_eq!(header(&response, header::CONTENT_ENCODING), "gzip");
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn byte_ranges() {
        let site = site(None);
        let (response, body) = get(&site, "/hello.txt", &[("range", "bytes=0-4")]).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, "hello");
        assert_eq!(header(&response, header::CONTENT_RANGE), "bytes 0-4/13");

        let (response, _) = get(&site, "/hello.txt", &[("range", "bytes=100-200")]).await;
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header(&response, header::CONTENT_RANGE), "bytes */13");

        // A range of a text file is sent as is even to a client that takes gzip: the
        // offsets are into the bytes on disk.
        let headers = [("range", "bytes=0-3"), ("accept-encoding", "gzip")];
        let (response, body) = get(&site, "/style.css", &headers).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, "body");
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    }

    #[tokio::test]
    async fn not_modified_via_if_none_match() {
        let site = site(Some("public, max-age=60"));
        let (response, _) = get(&site, "/hello.txt", &[]).await;
        let etag = header(&response, header::ETAG).to_owned();

        let (response, body) = get(&site, "/hello.txt", &[("if-none-match", &etag)]).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(header(&response, header::ETAG), etag);
        assert_eq!(
            header(&response, header::CACHE_CONTROL),
            "public, max-age=60"
        );

        let other = [("if-none-match", "\"something-else\"")];
        let (response, _) = get(&site, "/hello.txt", &other).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn not_modified_via_if_modified_since() {
        let site = site(None);
        let (response, _) = get(&site, "/hello.txt", &[]).await;
        let last_modified = header(&response, header::LAST_MODIFIED).to_owned();

        let since = [("if-modified-since", last_modified.as_str())];
        let (response, body) = get(&site, "/hello.txt", &since).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());

        let old = [("if-modified-since", "Thu, 01 Jan 1970 00:00:01 GMT")];
        let (response, _) = get(&site, "/hello.txt", &old).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn precompressed_siblings_follow_accept_encoding() {
        let site = site(None);
        let cases = [
            ("br, gzip", Some("br"), "br-sibling"),
            ("gzip", Some("gzip"), "gz-sibling"),
            ("br;q=0.5, gzip", Some("gzip"), "gz-sibling"),
        ];
        for (accept, encoding, expected) in cases {
            let (response, body) = get(&site, "/app.js", &[("accept-encoding", accept)]).await;
            assert_eq!(response.status(), StatusCode::OK, "{accept}");
            assert_eq!(
                response
                    .headers()
                    .get(header::CONTENT_ENCODING)
                    .map(|v| v.to_str().unwrap()),
                encoding,
                "{accept}"
            );
            assert_eq!(body, expected, "{accept}");
            assert_eq!(header(&response, header::VARY), "accept-encoding");
            assert!(header(&response, header::CONTENT_TYPE).contains("javascript"));
            // The sibling's own validator, still strong: it is a file on disk.
            assert!(!header(&response, header::ETAG).starts_with("W/"));
        }

        for accept in [None, Some("identity")] {
            let headers: Vec<_> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
            let (response, body) = get(&site, "/app.js", &headers).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
            assert_eq!(body, long_text("identity"));
            assert_eq!(header(&response, header::VARY), "accept-encoding");
        }
    }

    #[tokio::test]
    async fn text_without_a_sibling_is_compressed_on_the_fly() {
        let site = site(None);
        let original = long_text("body{color:red}");

        let (response, body) = get(&site, "/style.css", &[("accept-encoding", "gzip")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, header::CONTENT_ENCODING), "gzip");
        assert!(header(&response, header::VARY).contains("accept-encoding"));
        assert!(header(&response, header::ETAG).starts_with("W/\""));
        // Small enough to be kept whole, so it goes out with its length.
        assert_eq!(
            header(&response, header::CONTENT_LENGTH),
            body.len().to_string()
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, original);

        let (response, body) = get(&site, "/style.css", &[("accept-encoding", "br")]).await;
        assert_eq!(header(&response, header::CONTENT_ENCODING), "br");
        let mut text = String::new();
        brotli::Decompressor::new(&body[..], 4096)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, original);

        // The weak ETag still matches the file for a revalidation.
        let etag = header(&response, header::ETAG).to_owned();
        let headers = [("accept-encoding", "br"), ("if-none-match", etag.as_str())];
        let (response, _) = get(&site, "/style.css", &headers).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&response, header::VARY), "accept-encoding");

        // Not for clients that do not take it, nor for images, nor for tiny files.
        let (response, body) = get(&site, "/style.css", &[]).await;
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(body, original);
        for uri in ["/photo.png", "/hello.txt"] {
            let (response, _) = get(&site, uri, &[("accept-encoding", "gzip, br")]).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                response.headers().get(header::CONTENT_ENCODING).is_none(),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn directories_serve_their_index() {
        let site = site(None);
        let (response, body) = get(&site, "/", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body, "<h1>home</h1>");
        assert!(header(&response, header::CONTENT_TYPE).starts_with("text/html"));

        let (response, body) = get(&site, "/docs/", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body, "<h1>docs</h1>");

        let (response, _) = get(&site, "/docs?x=1", &[]).await;
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(header(&response, header::LOCATION), "/docs/?x=1");
    }

    #[tokio::test]
    async fn mounted_under_a_prefix() {
        let site = site(None);
        let (response, body) =
            request(&site, Method::GET, "/assets/hello.txt", "/assets", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body, "hello, world\n");

        let (response, body) = request(&site, Method::GET, "/assets/", "/assets/", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body, "<h1>home</h1>");

        for (uri, location) in [("/assets", "/assets/"), ("/assets/docs", "/assets/docs/")] {
            let (response, _) = request(&site, Method::GET, uri, "/assets", &[]).await;
            assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT, "{uri}");
            assert_eq!(header(&response, header::LOCATION), location, "{uri}");
        }
    }

    #[tokio::test]
    async fn cache_control_on_success_only() {
        let site = site(Some("public, max-age=3600"));
        let (response, _) = get(&site, "/hello.txt", &[]).await;
        assert_eq!(
            header(&response, header::CACHE_CONTROL),
            "public, max-age=3600"
        );
        let (response, _) = get(&site, "/hello.txt", &[("range", "bytes=0-1")]).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert!(response.headers().contains_key(header::CACHE_CONTROL));
        let (response, _) = get(&site, "/missing.txt", &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.headers().get(header::CACHE_CONTROL).is_none());
    }

    #[tokio::test]
    async fn other_methods_are_not_allowed() {
        let site = site(None);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let (response, _) = request(&site, method.clone(), "/hello.txt", "/", &[]).await;
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}"
            );
            assert_eq!(header(&response, header::ALLOW), "GET, HEAD");
        }
    }

    #[test]
    fn root_must_be_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = StaticFiles::new(&missing, None).err().unwrap();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");

        let file = tmp.path().join("file.txt");
        std::fs::write(&file, "x").unwrap();
        let err = StaticFiles::new(&file, None).err().unwrap();
        assert!(format!("{err:#}").contains("file.txt"), "{err:#}");

        assert!(StaticFiles::new(tmp.path(), Some("bad\nvalue")).is_err());
    }

    /// Waits until the files' timestamps are old enough for the cache to keep them
    /// (just-written files are not kept: the next write may not change them).
    async fn settle(root: &Path, names: &[&str]) {
        let settled = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while names
            .iter()
            .any(|name| Identity::of(&std::fs::metadata(root.join(name)).unwrap()).is_racy())
        {
            assert!(
                std::time::Instant::now() < settled,
                "timestamps never settled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn files_left_uncompressed_are_answered_from_memory_to_clients_that_accept_compression() {
        let site = site(None);
        let root = site.tmp.path().join("root");
        // A png is never compressed; a tiny text is below the compression threshold.
        std::fs::write(root.join("tiny.txt"), "tiny").unwrap();
        settle(&root, &["photo.png", "tiny.txt"]).await;
        let browser = [("accept-encoding", "gzip, br")];
        for (uri, file) in [("/photo.png", "photo.png"), ("/tiny.txt", "tiny.txt")] {
            let (first, _) = get(&site, uri, &browser).await;
            assert_eq!(first.status(), StatusCode::OK, "{uri}");
            assert!(
                !first.headers().contains_key(header::CONTENT_ENCODING),
                "{uri}"
            );
            // The next request with the same Accept-Encoding looks up this key.
            let key = KeyRef {
                file,
                encoding: Encoding::Br,
            };
            assert!(
                site.files.cache.get(&key, &site.files.root_dir).is_some(),
                "{uri} is kept under the encoding its requests negotiate"
            );
            let (again, _) = get(&site, uri, &browser).await;
            assert_eq!(again.status(), StatusCode::OK, "{uri}");
        }
    }

    #[tokio::test]
    async fn small_files_are_answered_from_memory_until_they_change() {
        let site = site(None);
        let root = site.tmp.path().join("root");
        std::fs::write(root.join("cached.txt"), "version 1").unwrap();
        std::fs::write(root.join("swapped.txt"), "swapped 1").unwrap();
        std::fs::write(root.join("doomed.txt"), "doomed").unwrap();
        std::fs::write(root.join("linked.txt"), "linked").unwrap();
        settle(
            &root,
            &["cached.txt", "swapped.txt", "doomed.txt", "linked.txt"],
        )
        .await;

        let (first, body) = get(&site, "/cached.txt", &[]).await;
        assert_eq!(body, "version 1");
        assert_eq!(site.files.cache.len(), 1, "a plain GET fills the cache");
        let (again, body) = get(&site, "/cached.txt", &[]).await;
        assert_eq!(body, "version 1");
        for name in [header::ETAG, header::LAST_MODIFIED, header::CONTENT_LENGTH] {
            assert_eq!(header(&first, name.clone()), header(&again, name));
        }
        let (head, body) = request(&site, Method::HEAD, "/cached.txt", "/", &[]).await;
        assert_eq!((head.status(), body.len()), (StatusCode::OK, 0));
        assert_eq!(header(&head, header::CONTENT_LENGTH), "9");
        let (range, body) = get(&site, "/cached.txt", &[("range", "bytes=0-6")]).await;
        assert_eq!(
            (range.status(), &body[..]),
            (StatusCode::PARTIAL_CONTENT, &b"version"[..])
        );

        // Changed in place to the same length, replaced by rename, removed: each is
        // seen on the next request.
        std::fs::write(root.join("cached.txt"), "version 2").unwrap();
        assert_eq!(get(&site, "/cached.txt", &[]).await.1, "version 2");
        get(&site, "/swapped.txt", &[]).await;
        std::fs::write(root.join("swapped.new"), "swapped 2").unwrap();
        std::fs::rename(root.join("swapped.new"), root.join("swapped.txt")).unwrap();
        assert_eq!(get(&site, "/swapped.txt", &[]).await.1, "swapped 2");
        get(&site, "/doomed.txt", &[]).await;
        std::fs::remove_file(root.join("doomed.txt")).unwrap();
        assert_eq!(
            get(&site, "/doomed.txt", &[]).await.0.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(site.files.cache.len(), 0, "changed files leave the cache");

        // A cached file swapped for a symlink out of the root is not served from
        // memory, nor through the link.
        get(&site, "/linked.txt", &[]).await;
        assert_eq!(site.files.cache.len(), 1);
        std::fs::remove_file(root.join("linked.txt")).unwrap();
        symlink("../secret.txt", root.join("linked.txt")).unwrap();
        let (response, body) = get(&site, "/linked.txt", &[]).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(!String::from_utf8_lossy(&body).contains(CANARY));
    }

    #[tokio::test]
    async fn the_cache_keeps_one_entry_per_file_and_encoding_whatever_the_spelling() {
        let site = site(None);
        let root = site.tmp.path().join("root");
        std::fs::write(root.join("cached.txt"), long_text("cached")).unwrap();
        let settled = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Identity::of(&std::fs::metadata(root.join("cached.txt")).unwrap()).is_racy() {
            assert!(
                std::time::Instant::now() < settled,
                "timestamps never settled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Unique paths that name the same file, and unique Accept-Encoding values that
        // negotiate the same two encodings: padding of unknown codings, large and unique.
        let padding = "x".repeat(8 * 1024);
        for i in 0..64 {
            let path = match i % 4 {
                0 => format!("/{}cached.txt", "./".repeat(i)),
                1 => format!("/{}cached.txt", "/".repeat(i)),
                2 => "/%63ached.txt".to_string(),
                _ => format!("/./{}/cached.txt", "/.".repeat(i)),
            };
            let accept = match i % 2 {
                0 => format!("x-{i}-{padding}, gzip"),
                _ => format!("x-{i}-{padding}"),
            };
            let (response, body) = get(&site, &path, &[("accept-encoding", &accept)]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                response.headers().contains_key(header::CONTENT_ENCODING),
                i % 2 == 0,
                "{path}"
            );
            assert!(!body.is_empty());
        }
        assert_eq!(
            site.files.cache.len(),
            2,
            "one entry for cached.txt as gzip, one as identity"
        );
    }

    #[test]
    fn the_encoding_is_negotiated_from_br_gzip_and_their_weights() {
        use Encoding::{Br, Gzip, Identity};
        let cases: &[(&[&str], Option<Encoding>)] = &[
            (&[], Some(Identity)),
            (&["gzip"], Some(Gzip)),
            (&["gzip, br"], Some(Br)),
            (&["br;q=0.5, gzip"], Some(Gzip)),
            (&["br;q=0.5, gzip;q=0.5"], Some(Br)),
            (&["x-gzip"], Some(Gzip)),
            (&["GZIP;Q=1.0"], Some(Gzip)),
            (&["deflate, zstd"], Some(Identity)),
            (&["gzip;q=0, br;q=0"], Some(Identity)),
            (&["*"], Some(Br)),
            (&["br;q=0, *"], Some(Gzip)),
            (&["gzip;q=2, br;q=0.x"], Some(Identity)),
            (&["identity;q=0"], None),
            (&["*;q=0"], None),
            (&["identity;q=0, gzip"], Some(Gzip)),
            (&["junk", "gzip;q=0.1"], Some(Gzip)),
        ];
        for (values, expected) in cases {
            let mut headers = HeaderMap::new();
            for value in *values {
                headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            }
            assert_eq!(negotiate(&headers), *expected, "{values:?}");
        }
    }

    #[test]
    fn serve_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let tmp = tempfile::tempdir().unwrap();
        let files = StaticFiles::new(tmp.path(), None).unwrap();
        let future = files.serve(Request::new(()), "/");
        assert_send(&future);
    }
}

//! The adapter to tower-http: the `ServeDir` each request gets, the on-the-fly
//! compressor's rule, and the fixes that make their answers wharf's (errors through
//! [`GatewayError`], validators, Vary, Cache-Control).

use super::StaticFiles;
use super::confined::{ConfinedBackend, RequestFiles};
use crate::gateway::GatewayError;
use crate::http::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Extensions, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use std::sync::{Arc, Mutex};
use tower_http::services::ServeDir;
use tower_http::services::fs::DefaultServeDirFallback;

/// Below this many bytes the encoding overhead eats most of the saving, and the response
/// fits in a packet or two either way.
const MIN_COMPRESS_LEN: u64 = 256;

pub(super) type Predicate = fn(StatusCode, Version, &HeaderMap, &Extensions) -> bool;

impl StaticFiles {
    /// The ServeDir for one request. Each gets its own backend, whose one-file stash
    /// lets the file ServeDir stats (to see whether it is a directory) be the file it
    /// then opens: one `openat2` per request instead of two. `prefix` goes into
    /// ServeDir's "/dir" -> "/dir/" redirects, which it builds from the rewritten path
    /// and would otherwise send outside the mount point.
    pub(super) fn dir(
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

    /// Makes ServeDir's (or the compressor's) answer wharf's; a 404 becomes the
    /// gateway's own.
    pub(super) fn finish<B>(
        &self,
        response: Response<B>,
        is_head: bool,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::http::BoxError>,
    {
        let (mut parts, body) = response.into_parts();
        let status = parts.status;
        if status == StatusCode::NOT_FOUND {
            // ServeDir's 404 is empty; answer like the rest of wharf does.
            return Err(GatewayError::NotFound);
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
        Ok(Response::from_parts(parts, body))
    }
}

/// Marks a response whose Content-Encoding comes from a precompressed sibling file rather
/// than from the on-the-fly compressor.
#[derive(Clone, Copy)]
pub(super) struct EncodedOnDisk;

/// Compress on the fly only complete answers of text, which shrinks well; precompressed
/// and ranged answers are left alone by the compression layer itself.
pub(super) fn compressible(
    status: StatusCode,
    _: Version,
    headers: &HeaderMap,
    _: &Extensions,
) -> bool {
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

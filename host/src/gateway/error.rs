//! Every reason wharf answers a request itself, and the one mapping from those
//! reasons to HTTP statuses.

use crate::http::Body;
use crate::proxy::UpstreamError;
use crate::runtime::InvokeError;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("nothing on this site serves this path")]
    NotFound,
    #[error("no site serves this host")]
    UnknownHost,
    #[error("this connection is for another site")]
    Misdirected,
    #[error("the app this path is routed to is not loaded")]
    AppNotLoaded,
    #[error("{0}")]
    BadRequest(&'static str),
    /// The client's address is not let in to this site.
    #[error("this site does not serve your address")]
    Forbidden,
    /// Over a rate limit; the client may try again after `retry_after`.
    #[error("too many requests; slow down")]
    TooManyRequests { retry_after: std::time::Duration },
    #[error("the request's header fields are too large")]
    HeadersTooLarge,
    #[error("the request target is too long")]
    UriTooLong,
    #[error("the request body is larger than this server accepts")]
    BodyTooLarge,
    /// The client took too long to send the request (or paused its body too long).
    #[error("the request took too long to arrive")]
    RequestTimeout,
    /// The method is not served here; the value is the Allow header.
    #[error("this method is not allowed here")]
    MethodNotAllowed(&'static str),
    #[error("the file could not be read")]
    FileUnreadable,
    /// `wharf dev`: the app's newest sources do not compile.
    #[error("{app} does not build")]
    BuildFailed { app: String, output: String },
    #[error(transparent)]
    App(#[from] InvokeError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl From<crate::http::path::BadPath> for GatewayError {
    fn from(e: crate::http::path::BadPath) -> Self {
        GatewayError::BadRequest(e.0)
    }
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotFound | GatewayError::UnknownHost | GatewayError::AppNotLoaded => {
                StatusCode::NOT_FOUND
            }
            GatewayError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Forbidden => StatusCode::FORBIDDEN,
            GatewayError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::UriTooLong => StatusCode::URI_TOO_LONG,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::FileUnreadable | GatewayError::BuildFailed { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            GatewayError::App(e) => match e {
                InvokeError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                InvokeError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
                InvokeError::BadRequest(_) => StatusCode::BAD_REQUEST,
                InvokeError::Trap(_)
                | InvokeError::OutOfMemory(_)
                | InvokeError::NoResponse
                | InvokeError::ErrorCode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            GatewayError::Upstream(e) => match e {
                UpstreamError::NoBackend(_) | UpstreamError::Busy(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                UpstreamError::Connect | UpstreamError::NoResponse | UpstreamError::BadResponse => {
                    StatusCode::BAD_GATEWAY
                }
                UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            },
        }
    }

    /// A short plain-text answer (under `wharf dev`, a page with a build's errors).
    /// Guest internals (trap messages, backtraces) go to the log, never to the client.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let plain = |text: &str| {
            let reason = status.canonical_reason().unwrap_or("");
            let body = format!("{} {reason}: {text}\n", status.as_u16());
            ("text/plain; charset=utf-8", body)
        };
        let (content_type, body) = match &self {
            GatewayError::BuildFailed { app, output } => {
                ("text/html; charset=utf-8", build_error_page(app, output))
            }
            GatewayError::App(
                InvokeError::Trap(_) | InvokeError::OutOfMemory(_) | InvokeError::ErrorCode(_),
            ) => plain("the app failed while handling this request"),
            other => plain(&other.to_string()),
        };
        let mut response = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        if let GatewayError::MethodNotAllowed(allow) = &self {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if let GatewayError::TooManyRequests { retry_after } = &self {
            // Whole seconds, rounded up: a client retrying at 0 would be refused again.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(seconds.max(1)),
            );
        }
        response
    }

    /// Whether the connection the request came on must close after this answer: the
    /// request was malformed or cut short, so where the next one starts is not known
    /// (what follows may be a smuggled request), as nginx and HAProxy close too.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::BadRequest(_)
                | GatewayError::HeadersTooLarge
                | GatewayError::UriTooLong
                | GatewayError::BodyTooLarge
                | GatewayError::RequestTimeout
        )
    }
}

/// The page a browser gets for an app whose sources do not compile under `wharf dev`.
fn build_error_page(app: &str, output: &str) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<title>{app} does not build</title>\n\
         <h1>{app} does not build</h1>\n\
         <p>The last good version keeps serving other clients. Fix the errors below and \
         save: wharf dev rebuilds and this page turns into the app.</p>\n\
         <pre>{}</pre>\n",
        escape(output),
        app = escape(app),
    )
}

//! The bridge between `wasi:http` resources and [`Request`]/[`Response`].

use crate::headers::Headers;
use crate::request::Source;
use crate::{Method, Request, Response};
use std::rc::Rc;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

/// Largest write `blocking-write-and-flush` accepts.
const WRITE_CHUNK: usize = 4096;
/// Largest read asked for at once.
const READ_CHUNK: u64 = 64 * 1024;

/// Runs `handler` on the request and writes its response.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Response,
) {
    let req = Request::from_source(Rc::new(Incoming(request)));
    write_response(out, handler(req));
}

/// The host's request, read on demand.
struct Incoming(IncomingRequest);

impl Source for Incoming {
    fn method(&self) -> Method {
        use wasi::http::types::Method as M;
        match self.0.method() {
            M::Get => Method::Get,
            M::Head => Method::Head,
            M::Post => Method::Post,
            M::Put => Method::Put,
            M::Patch => Method::Patch,
            M::Delete => Method::Delete,
            M::Options => Method::Options,
            M::Connect => Method::Connect,
            M::Trace => Method::Trace,
            M::Other(m) => Method::Other(m),
        }
    }

    fn path_with_query(&self) -> String {
        self.0.path_with_query().unwrap_or_else(|| "/".into())
    }

    fn headers(&self) -> Headers {
        let mut headers = Headers::default();
        for (name, value) in self.0.headers().entries() {
            headers.push(&name, value);
        }
        headers
    }

    fn body(&self) -> Result<Vec<u8>, String> {
        let body = self
            .0
            .consume()
            .map_err(|()| "body already consumed".to_string())?;
        let mut bytes = Vec::new();
        {
            let stream = body
                .stream()
                .map_err(|()| "body stream unavailable".to_string())?;
            loop {
                match stream.blocking_read(READ_CHUNK) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
                }
            }
        }
        IncomingBody::finish(body);
        Ok(bytes)
    }
}

fn write_response(out: ResponseOutparam, response: Response) {
    let (status, mut headers, body) = response.into_parts();
    if !headers.contains("content-length") {
        headers.push("content-length", body.len().to_string().into_bytes());
    }
    // One host call for all headers; if the host refuses one (forbidden or invalid),
    // fall back to adding them one by one and dropping only the bad ones.
    let fields = Fields::from_list(headers.as_list()).unwrap_or_else(|_| {
        let fields = Fields::new();
        for (name, value) in headers.iter() {
            let _ = fields.append(name, value);
        }
        fields
    });
    let outgoing = OutgoingResponse::new(fields);
    // 200 is the default; setting it would be one more host call on most responses.
    if status != 200 && outgoing.set_status_code(status).is_err() {
        let _ = outgoing.set_status_code(500);
    }
    let Ok(outgoing_body) = outgoing.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(outgoing));
    {
        let Ok(stream) = outgoing_body.write() else {
            return;
        };
        for chunk in body.chunks(WRITE_CHUNK) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                // The client went away; nothing more to do.
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing_body, None);
}

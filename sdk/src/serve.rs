//! The bridge between `wasi:http` resources and [`Request`]/[`Response`].

use crate::{Method, Request, Response};
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

/// Largest write `blocking-write-and-flush` accepts.
const WRITE_CHUNK: usize = 4096;
/// Largest read asked for at once.
const READ_CHUNK: u64 = 64 * 1024;

/// Reads the request, runs `handler`, writes its response.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> Response,
) {
    let response = match read_request(request) {
        Ok(req) => handler(req),
        Err(e) => Response::text(format!("could not read request: {e}\n")).with_status(400),
    };
    write_response(out, response);
}

fn read_request(request: IncomingRequest) -> Result<Request, String> {
    use wasi::http::types::Method as M;
    let method = match request.method() {
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
    };
    let mut req = Request::new(
        method,
        request.path_with_query().unwrap_or_else(|| "/".into()),
    );
    for (name, value) in request.headers().entries() {
        req = req.with_header(&name, value);
    }
    // A request that announces no body has none; skipping the body resources saves
    // several host calls on every GET.
    let framed = req.header("content-length").is_some_and(|len| len != "0")
        || req.header("transfer-encoding").is_some();
    let bodiless = matches!(
        req.method(),
        Method::Get | Method::Head | Method::Delete | Method::Options
    );
    if bodiless && !framed {
        return Ok(req);
    }
    let body = request
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
    Ok(req.with_body(bytes))
}

fn write_response(out: ResponseOutparam, response: Response) {
    let (status, headers, body) = response.into_parts();
    let mut list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    if !headers.contains("content-length") {
        list.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    // One host call for all headers; if the host refuses one (forbidden or invalid),
    // fall back to adding them one by one and dropping only the bad ones.
    let fields = Fields::from_list(&list).unwrap_or_else(|_| {
        let fields = Fields::new();
        for (name, value) in &list {
            let _ = fields.append(name, value);
        }
        fields
    });
    let outgoing = OutgoingResponse::new(fields);
    if outgoing.set_status_code(status).is_err() {
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

//! A guest written straight against the `wasi` crate's bindings, without wharf-sdk.
//! Through Rust's std it also imports wasi:cli, wasi:filesystem and wasi:sockets, and it
//! exports wasi:cli/run besides the HTTP handler, as components from other toolchains do.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Raw;

impl wasi::exports::http::incoming_handler::Guest for Raw {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let body = match path.as_str() {
            "/raw/fs" => match std::fs::read_to_string("/etc/passwd") {
                Ok(_) => "fs: read a host file".to_string(),
                Err(e) => format!("fs: denied ({e})"),
            },
            p if p.starts_with("/raw/net?addr=") => {
                let addr = &p["/raw/net?addr=".len()..];
                match std::net::TcpStream::connect(addr) {
                    Ok(_) => "net: connected".to_string(),
                    Err(e) => format!("net: denied ({e})"),
                }
            }
            "/raw/url" => format!(
                "scheme={} authority={} path={path}",
                match request.scheme() {
                    Some(wasi::http::types::Scheme::Http) => "http".to_string(),
                    Some(wasi::http::types::Scheme::Https) => "https".to_string(),
                    Some(wasi::http::types::Scheme::Other(s)) => s,
                    None => "none".to_string(),
                },
                request.authority().unwrap_or_default()
            ),
            "/raw/env" => format!("env: {}", std::env::vars().count()),
            "/raw/body" => match read_body(&request) {
                Some(bytes) => format!("body: {bytes} bytes"),
                // The host refused the rest of the body; its answer replaces this one.
                None => return answer(out, 500, "body: the read failed"),
            },
            _ => format!("raw guest saw {} {path}", request.method_name()),
        };
        println!("raw guest handled {path}");
        answer(out, 200, &body);
    }
}

fn answer(out: ResponseOutparam, status: u16, body: &str) {
    let response = OutgoingResponse::new(Fields::new());
    response.set_status_code(status).unwrap();
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().unwrap();
    stream.blocking_write_and_flush(body.as_bytes()).unwrap();
    drop(stream);
    OutgoingBody::finish(outgoing, None).unwrap();
}

/// The request body's length, read whole; `None` when a read fails.
fn read_body(request: &IncomingRequest) -> Option<usize> {
    let body = request.consume().ok()?;
    let stream = body.stream().ok()?;
    let mut bytes = 0;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes += chunk.len(),
            Err(wasi::io::streams::StreamError::Closed) => return Some(bytes),
            Err(_) => return None,
        }
    }
}

trait MethodName {
    fn method_name(&self) -> String;
}

impl MethodName for IncomingRequest {
    fn method_name(&self) -> String {
        use wasi::http::types::Method;
        match self.method() {
            Method::Get => "GET".into(),
            Method::Post => "POST".into(),
            Method::Other(m) => m,
            other => format!("{other:?}"),
        }
    }
}

impl wasi::exports::cli::run::Guest for Raw {
    fn run() -> Result<(), ()> {
        println!("the raw guest also runs as a command");
        Ok(())
    }
}

wasi::http::proxy::export!(Raw);
wasi::cli::command::export!(Raw);

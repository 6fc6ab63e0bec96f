//! A guest that misbehaves on request, to test wharf's sandbox.

use std::sync::atomic::{AtomicU64, Ordering};
use wharf_sdk::{Request, Response, Router};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn app(req: Request) -> Response {
    Router::new()
        .get("/misbehave/ok", |_| "ok")
        .get("/misbehave/trap", |_| -> Response {
            core::arch::wasm32::unreachable()
        })
        .get("/misbehave/panic", |_| -> Response {
            panic!("guest panicked on purpose")
        })
        .get("/misbehave/loop", |_| -> Response {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        })
        .get("/misbehave/oom", |_| -> Response {
            let mut blocks = Vec::new();
            loop {
                blocks.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        })
        .get("/misbehave/stack", |_| {
            Response::text(format!("{}", recurse(0)))
        })
        .get("/misbehave/sleep", |req| {
            let ms = req
                .query_param("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            // Tells tests the request has reached the guest.
            println!("sleeping {ms} ms");
            std::thread::sleep(std::time::Duration::from_millis(ms));
            "slept"
        })
        .get("/misbehave/spin", |req| {
            let ms = req
                .query_param("ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            // Busy for `ms` without printing or sleeping, which would leave resources
            // (the stdout stream, a pollable) behind and keep the instance from reuse.
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_millis(ms) {
                std::hint::spin_loop();
            }
            "spun"
        })
        .get("/misbehave/env", |_| {
            Response::json(&std::env::vars().collect::<Vec<_>>())
        })
        .get("/misbehave/print", |req| {
            let marker = req.query_param("marker").unwrap_or_default();
            println!("stdout says {marker}");
            eprintln!("stderr says {marker}");
            "printed"
        })
        .get("/misbehave/spam", |req| {
            let lines: u64 = req
                .query_param("lines")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000);
            for i in 0..lines {
                println!("spam line {i:08} of a guest that prints in a loop");
            }
            "spammed"
        })
        .get("/misbehave/control", |req| {
            let marker = req.query_param("marker").unwrap_or_default();
            // A terminal escape, a carriage return and a NUL, as a hostile guest might
            // print to forge or hide log lines.
            println!("{marker} \x1b[2Jred\rforged\0end");
            "printed"
        })
        .get("/misbehave/count", |_| {
            Response::text(format!("{}", COUNTER.fetch_add(1, Ordering::Relaxed) + 1))
        })
        .get("/misbehave/outbound", outbound)
        .handle(req)
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    recurse(n + 1) + pad[0]
}

/// GETs `?url=` with wasi:http/outgoing-handler and reports what happened.
fn outbound(req: Request) -> Response {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let Some(url) = req.query_param("url") else {
        return Response::text("missing ?url=").with_status(400);
    };
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", &url));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return Response::text(format!("refused: {code:?}")).with_status(502),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => {
            let status = response.status();
            let body = response.consume().expect("body");
            let mut bytes = Vec::new();
            {
                let stream = body.stream().expect("stream");
                while let Ok(chunk) = stream.blocking_read(65536) {
                    bytes.extend_from_slice(&chunk);
                }
            }
            Response::text(format!(
                "upstream {status}: {}",
                String::from_utf8_lossy(&bytes)
            ))
        }
        Some(Ok(Err(code))) => Response::text(format!("refused: {code:?}")).with_status(502),
        other => Response::text(format!("failed: {other:?}")).with_status(502),
    }
}

wharf_sdk::export!(app);

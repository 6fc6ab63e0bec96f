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

/// GETs `?url=` with wasi:http/outgoing-handler and reports what happened. With
/// `?follow=1` a redirect's `Location` is requested next, as a client that follows
/// redirects does (wasi:http never follows them itself), for at most 5 hops.
fn outbound(req: Request) -> Response {
    let Some(mut url) = req.query_param("url") else {
        return Response::text("missing ?url=").with_status(400);
    };
    let follow = req.query_param("follow").is_some();
    let mut report = String::new();
    for _ in 0..5 {
        match get(&url) {
            Ok((status, Some(next), _)) if follow && (300..400).contains(&status) => {
                report.push_str(&format!("upstream {status} to {next}\n"));
                url = next;
            }
            Ok((status, _, body)) => {
                report.push_str(&format!("upstream {status}: {body}"));
                return Response::text(report);
            }
            Err(why) => {
                report.push_str(&why);
                return Response::text(report).with_status(502);
            }
        }
    }
    report.push_str("too many redirects");
    Response::text(report).with_status(502)
}

/// One GET: the status, the `Location` header and the body, or why there is none.
fn get(url: &str) -> Result<(u16, Option<String>, String), String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
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
    let future =
        outgoing_handler::handle(request, None).map_err(|code| format!("refused: {code:?}"))?;
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => {
            let status = response.status();
            let location = response
                .headers()
                .get("location")
                .first()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let body = response.consume().expect("body");
            let mut bytes = Vec::new();
            {
                let stream = body.stream().expect("stream");
                while let Ok(chunk) = stream.blocking_read(65536) {
                    bytes.extend_from_slice(&chunk);
                }
            }
            Ok((
                status,
                location,
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        }
        Some(Ok(Err(code))) => Err(format!("refused: {code:?}")),
        other => Err(format!("failed: {other:?}")),
    }
}

wharf_sdk::export!(app);

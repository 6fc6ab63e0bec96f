//! A guest whose code uses relaxed SIMD, which wasmtime's baseline compiler (Winch) does
//! not compile: wharf must serve it from the optimising compiler instead.

use core::arch::wasm32::{f32x4, f32x4_extract_lane, f32x4_relaxed_madd, f32x4_splat};
use wharf_sdk::{Request, Response, Router};

/// `a * b + c` in every lane, in one relaxed fused multiply-add where the CPU has one.
#[target_feature(enable = "relaxed-simd")]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    let lanes = f32x4_relaxed_madd(f32x4_splat(a), f32x4_splat(b), f32x4(c, c, c, c));
    f32x4_extract_lane::<0>(lanes)
}

fn app(req: Request) -> Response {
    Router::new()
        .get("/simd", |req| {
            let x: f32 = req
                .query_param("x")
                .and_then(|v| v.parse().ok())
                .unwrap_or(2.0);
            // Safe to call on wasm: an engine without relaxed SIMD refuses the whole
            // component when it validates it, so the code never runs half-supported.
            Response::text(format!("{}", madd(x, 3.0, 1.0)))
        })
        .handle(req)
}

wharf_sdk::export!(app);

//! The smallest useful HTTP component: every request gets 200 `hello`. The bench serves it
//! with the ticketing host and with `wasmtime serve` to measure the HTTP trigger's overhead.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn hello(_req: Request) -> anyhow::Result<impl IntoResponse> {
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("hello")
        .build())
}

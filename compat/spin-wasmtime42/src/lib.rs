//! Test-only crate: `tests/http_flows.rs` serves the HTTP components under the rules of
//! wasmtime 42 and wasmtime-wasi-http 42, what Spin 3.6.x embeds (the project's own host
//! runs a newer wasmtime, which is more lenient). The harness is in `tests/support/`.

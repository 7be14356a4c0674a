//! A test-only component for the host's integration tests (never part of the app's
//! spin.toml). Each route under `/testbed/` exercises one host behaviour: deadlines, traps,
//! memory limits, sleeping, and the key-value and variables interfaces the services import.
//!
//! - `GET /testbed/ok` → 200 `ok`
//! - `GET /testbed/loop` → spins forever (for epoch deadlines)
//! - `GET /testbed/trap` → panics, which traps the instance
//! - `GET /testbed/memory` → allocates and touches 1 MiB chunks until an allocation fails,
//!   which aborts (traps) the instance, whether the host's limit fails `memory.grow` or traps
//! - `GET /testbed/sleep?ms=N` → sleeps N ms of wall-clock time, answers 200 `slept N ms`
//! - `wasi:keyvalue` bucket `testbed`, raw keys (no label prefix):
//!   - `GET /testbed/kv/{key}` → 200 with the raw value, or 404
//!   - `PUT /testbed/kv/{key}` (body = raw value) → 200
//!   - `DELETE /testbed/kv/{key}` → 200
//!   - `POST /testbed/kv/{key}/increment?by=N` (default 1) → 200, the new value in decimal
//!   - `POST /testbed/kv/{key}/cas-increment` → 200 `{"value": v, "attempts": n}`: adds one
//!     to a decimal value (absent = 0) with `Cas::new` + `current` + `swap`, retrying on
//!     `cas-failed`; `attempts` counts the swaps tried
//!   - `GET /testbed/keys` → 200, JSON array of every key (`list-keys`, all pages)
//! - `fermyon:spin/key-value` store `testbed`: `GET|PUT /testbed/spin-kv/{key}` as above
//! - `GET /testbed/var/{name}` → 200 with the variable's value, or 404 with the error text
//!
//! Store errors answer 500 with their details: this component is only for tests.

use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::keyvalue::{
    atomics::{self, Cas, CasError},
    store::{self, Bucket},
};
use ticketing_common::http::path_segments;

/// The bucket (store label) every key-value probe uses.
const BUCKET: &str = "testbed";
const MIB: usize = 1024 * 1024;
/// A cas-increment that keeps losing this many races reports failure instead of spinning.
const MAX_CAS_ATTEMPTS: u32 = 10_000;

/// Takes the SDK's fully read `Request`: unlike the services, the testbed puts no limit on
/// bodies, so tests can store values of any size.
#[http_component]
fn handle_testbed(req: Request) -> Response {
    route(&req).unwrap_or_else(|message| text(500, message))
}

/// Every route answers its own status; `Err` is an unexpected host error (500).
fn route(req: &Request) -> Result<Response, String> {
    match (req.method(), path_segments(req.path()).as_slice()) {
        (Method::Get, ["testbed", "ok"]) => Ok(text(200, "ok")),
        (Method::Get, ["testbed", "loop"]) => spin_forever(),
        (Method::Get, ["testbed", "trap"]) => panic!("trap requested by /testbed/trap"),
        (Method::Get, ["testbed", "memory"]) => exhaust_memory(),
        (Method::Get, ["testbed", "sleep"]) => Ok(sleep(req)),
        (Method::Get, ["testbed", "kv", key]) => kv_get(key),
        (Method::Put, ["testbed", "kv", key]) => kv_put(key, req.body()),
        (Method::Delete, ["testbed", "kv", key]) => kv_delete(key),
        (Method::Post, ["testbed", "kv", key, "increment"]) => kv_increment(key, req),
        (Method::Post, ["testbed", "kv", key, "cas-increment"]) => kv_cas_increment(key),
        (Method::Get, ["testbed", "keys"]) => kv_keys(),
        (Method::Get, ["testbed", "spin-kv", key]) => spin_kv_get(key),
        (Method::Put, ["testbed", "spin-kv", key]) => spin_kv_put(key, req.body()),
        (Method::Get, ["testbed", "var", name]) => Ok(variable(name)),
        _ => Ok(text(404, "Not Found")),
    }
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .build()
}

fn json(value: serde_json::Value) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(value.to_string())
        .build()
}

/// A query parameter's raw value.
fn query_param<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.query().split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

fn spin_forever() -> ! {
    let mut counter = 0u64;
    loop {
        // black_box keeps the optimiser from proving the loop useless.
        counter = std::hint::black_box(counter.wrapping_add(1));
    }
}

fn exhaust_memory() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // A non-zero fill writes every byte, so the pages are real, not just reserved. When
        // an allocation fails, Rust's allocation-error handler aborts the instance.
        chunks.push(std::hint::black_box(vec![0xA5; MIB]));
    }
}

fn sleep(req: &Request) -> Response {
    let Some(ms) = query_param(req, "ms").and_then(|ms| ms.parse::<u64>().ok()) else {
        return text(400, "expected ?ms=<milliseconds>");
    };
    std::thread::sleep(std::time::Duration::from_millis(ms));
    text(200, format!("slept {ms} ms"))
}

fn open_bucket() -> Result<Bucket, String> {
    store::open(BUCKET).map_err(|e| format!("opening bucket {BUCKET}: {e:?}"))
}

fn kv_get(key: &str) -> Result<Response, String> {
    match open_bucket()?.get(key).map_err(|e| format!("get: {e:?}"))? {
        Some(value) => Ok(Response::new(200, value)),
        None => Ok(text(404, "Not Found")),
    }
}

fn kv_put(key: &str, value: &[u8]) -> Result<Response, String> {
    open_bucket()?
        .set(key, value)
        .map_err(|e| format!("set: {e:?}"))?;
    Ok(text(200, "ok"))
}

fn kv_delete(key: &str) -> Result<Response, String> {
    open_bucket()?
        .delete(key)
        .map_err(|e| format!("delete: {e:?}"))?;
    Ok(text(200, "ok"))
}

fn kv_increment(key: &str, req: &Request) -> Result<Response, String> {
    let by = match query_param(req, "by") {
        None => 1,
        Some(by) => match by.parse::<i64>() {
            Ok(by) => by,
            Err(_) => return Ok(text(400, "expected ?by=<integer>")),
        },
    };
    let value =
        atomics::increment(&open_bucket()?, key, by).map_err(|e| format!("increment: {e:?}"))?;
    Ok(text(200, value.to_string()))
}

fn kv_cas_increment(key: &str) -> Result<Response, String> {
    let bucket = open_bucket()?;
    for attempt in 1..=MAX_CAS_ATTEMPTS {
        let cas = Cas::new(&bucket, key).map_err(|e| format!("cas new: {e:?}"))?;
        let current = match cas.current().map_err(|e| format!("cas current: {e:?}"))? {
            None => 0,
            Some(bytes) => String::from_utf8_lossy(&bytes)
                .trim()
                .parse::<i64>()
                .map_err(|e| format!("the value of {key} is not a decimal integer: {e}"))?,
        };
        let value = current + 1;
        match atomics::swap(cas, value.to_string().as_bytes()) {
            Ok(()) => {
                return Ok(json(
                    serde_json::json!({ "value": value, "attempts": attempt }),
                ))
            }
            Err(CasError::CasFailed(_)) => continue,
            Err(CasError::StoreError(e)) => return Err(format!("cas swap: {e:?}")),
        }
    }
    Err(format!("{MAX_CAS_ATTEMPTS} cas attempts all conflicted"))
}

fn kv_keys() -> Result<Response, String> {
    let bucket = open_bucket()?;
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket
            .list_keys(cursor.as_deref())
            .map_err(|e| format!("list-keys: {e:?}"))?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(json(serde_json::json!(keys)))
}

fn open_spin_store() -> Result<spin_sdk::key_value::Store, String> {
    spin_sdk::key_value::Store::open(BUCKET).map_err(|e| format!("opening store {BUCKET}: {e}"))
}

fn spin_kv_get(key: &str) -> Result<Response, String> {
    match open_spin_store()?
        .get(key)
        .map_err(|e| format!("get: {e}"))?
    {
        Some(value) => Ok(Response::new(200, value)),
        None => Ok(text(404, "Not Found")),
    }
}

fn spin_kv_put(key: &str, value: &[u8]) -> Result<Response, String> {
    open_spin_store()?
        .set(key, value)
        .map_err(|e| format!("set: {e}"))?;
    Ok(text(200, "ok"))
}

fn variable(name: &str) -> Response {
    match spin_sdk::variables::get(name) {
        Ok(value) => text(200, value),
        Err(error) => text(404, error.to_string()),
    }
}

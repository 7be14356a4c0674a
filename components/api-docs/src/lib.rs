//! `GET /api/openapi.json`: the API's OpenAPI 3.1 document (docs/openapi.json, embedded at
//! build time), so that clients can be generated from the running app, under this host or
//! under Spin alike.

use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

#[http_component]
fn api_docs(req: Request) -> Response {
    match req.method() {
        Method::Get | Method::Head => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .header("cache-control", "no-cache")
            .body(DOCUMENT)
            .build(),
        // As every service answers a method it does not serve: the API's 404.
        _ => Response::builder()
            .status(404)
            .header("content-type", "application/json")
            .body(r#"{"errors":[{"message":"Not Found"}]}"#)
            .build(),
    }
}

//! The browser client, on the catch-all route (`/...` in spin.toml): the pages' HTML shell
//! (`pages`), the embedded static assets (`assets`), and the API's JSON 404 for any path
//! under `/api/` that no service serves (Spin's own answer would be an empty 404).
//!
//! The pages are rendered in the browser by plain ES modules (assets/) that talk to the
//! JSON API of docs/API.md with the HttpOnly session cookie, so this component needs no
//! store and no outbound requests.

mod assets;
mod pages;

use spin_sdk::http::{IncomingRequest, Method, Request, Response};
use spin_sdk::http_component;
use ticketing_common::{http::read_request, ApiError};

#[http_component]
async fn handle_web(incoming: IncomingRequest) -> Response {
    match read_request(incoming).await {
        Ok(req) => route(&req),
        Err(error) => error.into_response(),
    }
}

fn route(req: &Request) -> Response {
    let path = req.path();
    // However many slashes lead it (`//api/...`, which a proxy merging slashes would send to
    // the API), a path under /api is the API's, and its 404 is JSON.
    let api_path = path.trim_start_matches('/');
    if api_path == "api" || api_path.starts_with("api/") {
        return ApiError::NotFound.into_response();
    }
    let head = match req.method() {
        Method::Get => false,
        Method::Head => true,
        _ => return method_not_allowed(),
    };
    let response = match path.strip_prefix(assets::PREFIX) {
        Some(asset) => assets::serve(asset, req.header("if-none-match").and_then(|v| v.as_str())),
        None => pages::serve(path),
    };
    if head {
        without_body(response)
    } else {
        response
    }
}

/// Pages and assets are only read.
fn method_not_allowed() -> Response {
    Response::builder()
        .status(405)
        .header("allow", "GET, HEAD")
        .header("content-type", "text/plain; charset=utf-8")
        .body("Method Not Allowed")
        .build()
}

/// A HEAD answer: the GET answer's status and headers, no body.
fn without_body(response: Response) -> Response {
    let mut builder = Response::builder();
    builder.status(*response.status());
    for (name, value) in response.headers() {
        builder.header(name, value.as_str().unwrap_or_default());
    }
    builder.build()
}

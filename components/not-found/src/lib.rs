//! The catch-all route (`/...` in spin.toml): a path that no service serves is the API's
//! 404, `{"errors": [{"message": "Not Found"}]}`. Spin answers unrouted paths with an empty
//! 404 of its own, so without this the error shape of docs/API.md would hold only under
//! the ticketing host. The body is not read.

use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;
use ticketing_common::ApiError;

#[http_component]
fn not_found(_incoming: IncomingRequest) -> Response {
    ApiError::NotFound.into_response()
}

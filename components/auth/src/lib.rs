//! The auth service: sign up, sign in, sign out and "who am I" under `/api/users`.
//! Users live in the key-value store labelled `auth` (see `user`).

mod password;
mod routes;
mod user;

use spin_sdk::http::{IncomingRequest, Method, Request, Response};
use spin_sdk::http_component;
use ticketing_common::{
    http::{path_segments, read_request, respond},
    ApiError,
};

#[http_component]
async fn handle_auth(incoming: IncomingRequest) -> Response {
    match read_request(incoming).await {
        Ok(req) => respond(route(&req)),
        Err(error) => error.into_response(),
    }
}

/// The service's routes; anything else, a known path with another method included, is 404.
fn route(req: &Request) -> Result<Response, ApiError> {
    match (req.method(), path_segments(req.path()).as_slice()) {
        (Method::Post, ["api", "users", "signup"]) => routes::signup(req),
        (Method::Post, ["api", "users", "signin"]) => routes::signin(req),
        (Method::Post, ["api", "users", "signout"]) => routes::signout(),
        (Method::Get, ["api", "users", "currentuser"]) => routes::current_user(req),
        _ => Err(ApiError::NotFound),
    }
}

//! `GET /api/users/currentuser`

use serde::Serialize;
use spin_sdk::http::{Request, Response};
use ticketing_common::{auth, http::json_response, ApiError};

/// `currentUser` is the session's payload as the original app showed it, `{id, email, iat}`,
/// or `null` when anonymous.
#[derive(Serialize)]
struct CurrentUserBody {
    #[serde(rename = "currentUser")]
    current_user: Option<SessionView>,
}

#[derive(Serialize)]
struct SessionView {
    id: String,
    email: String,
    iat: u64,
}

pub fn current_user(req: &Request) -> Result<Response, ApiError> {
    let current_user = auth::current_user(req)?.map(|claims| SessionView {
        id: claims.id,
        email: claims.email,
        iat: claims.iat,
    });
    json_response(200, &CurrentUserBody { current_user })
}

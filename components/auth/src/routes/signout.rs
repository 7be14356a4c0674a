//! `POST /api/users/signout`

use spin_sdk::http::Response;
use ticketing_common::{auth, http::json_response, ApiError};

/// Expires the session cookie. Tokens are stateless, so a copied token stays valid until its
/// `exp`; signing out is the browser forgetting it.
pub fn signout() -> Result<Response, ApiError> {
    let mut response = json_response(200, &serde_json::json!({}))?;
    response.set_header("set-cookie", auth::signout_cookie_header()?);
    Ok(response)
}

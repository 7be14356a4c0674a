//! One module per route, as in the original app.

mod current_user;
mod signin;
mod signout;
mod signup;

pub use current_user::current_user;
pub use signin::signin;
pub use signout::signout;
pub use signup::signup;

use serde::Serialize;
use spin_sdk::http::Response;
use ticketing_common::{auth, http::json_response, ApiError};

use crate::user::User;

/// The body of signup and signin: the user, never the password hash.
#[derive(Serialize)]
struct UserView<'a> {
    id: &'a str,
    email: &'a str,
}

/// The answer to a successful signup or signin: `{id, email}` and a fresh session cookie.
fn signed_in(status: u16, user: &User) -> Result<Response, ApiError> {
    let token = auth::issue_token(&user.id, &user.email)?;
    let mut response = json_response(
        status,
        &UserView {
            id: &user.id,
            email: &user.email,
        },
    )?;
    response.set_header("set-cookie", auth::session_cookie_header(&token)?);
    Ok(response)
}

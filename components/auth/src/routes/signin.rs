//! `POST /api/users/signin`

use serde::Deserialize;
use spin_sdk::http::{Request, Response};
use ticketing_common::{
    errors::check_fields,
    http::{json_body, optional_field},
    validation::is_valid_email,
    ApiError, FieldError,
};

use crate::{password, user::Users};

#[derive(Deserialize)]
struct SigninBody {
    #[serde(default, deserialize_with = "optional_field")]
    email: Option<String>,
    #[serde(default, deserialize_with = "optional_field")]
    password: Option<String>,
}

pub fn signin(req: &Request) -> Result<Response, ApiError> {
    let body: SigninBody = json_body(req)?;
    let email = body.email.as_deref().unwrap_or_default().trim();
    let password = body.password.as_deref().unwrap_or_default().trim();

    let mut errors = Vec::new();
    if !is_valid_email(email) {
        errors.push(FieldError::new("email", "Email must be valid"));
    }
    if password.is_empty() {
        errors.push(FieldError::new("password", "You must supply a password"));
    }
    check_fields(errors)?;

    // The same answer, after the same work, for an unknown email and a wrong password: no
    // account probing, not even by timing.
    let invalid_credentials = || ApiError::bad_request("Invalid credentials");
    let Some(user) = Users::open()?.find_by_email(email)? else {
        password::verify_without_account(password)?;
        return Err(invalid_credentials());
    };
    if !password::verify(password, &user.password_hash)? {
        return Err(invalid_credentials());
    }
    super::signed_in(200, &user)
}

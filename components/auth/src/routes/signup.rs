//! `POST /api/users/signup`

use serde::Deserialize;
use spin_sdk::http::{Request, Response};
use ticketing_common::{
    errors::check_fields,
    http::{json_body, optional_field},
    validation::{has_length_between, is_valid_email},
    ApiError, FieldError,
};

use crate::{password, user::Users};

#[derive(Deserialize)]
struct SignupBody {
    #[serde(default, deserialize_with = "optional_field")]
    email: Option<String>,
    #[serde(default, deserialize_with = "optional_field")]
    password: Option<String>,
}

pub fn signup(req: &Request) -> Result<Response, ApiError> {
    let body: SignupBody = json_body(req)?;
    let email = body.email.as_deref().unwrap_or_default().trim();
    let password = body.password.as_deref().unwrap_or_default().trim();

    let mut errors = Vec::new();
    if !is_valid_email(email) {
        errors.push(FieldError::new("email", "Email must be valid"));
    }
    if !has_length_between(password, 4, 20) {
        errors.push(FieldError::new(
            "password",
            "Password must be between 4 and 20 characters",
        ));
    }
    check_fields(errors)?;

    let password_hash = password::hash(password)?;
    let user = Users::open()?
        .create(email, password_hash)?
        .ok_or_else(|| ApiError::bad_request("Email in use"))?;
    super::signed_in(201, &user)
}

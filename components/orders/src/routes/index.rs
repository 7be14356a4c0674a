//! `GET /api/orders`

use spin_sdk::http::{Request, Response};
use ticketing_common::{auth, http::json_response, store::Store, ApiError};

use crate::order::{Orders, STORE_LABEL};

/// The caller's orders, oldest first.
pub fn list(req: &Request) -> Result<Response, ApiError> {
    let user = auth::require_user(req)?;
    let store = Store::open(STORE_LABEL)?;
    json_response(200, &Orders::new(&store).of_user(&user.id)?)
}

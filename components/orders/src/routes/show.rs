//! `GET /api/orders/:id`

use spin_sdk::http::{Request, Response};
use ticketing_common::{auth, http::json_response, store::Store, ApiError};

use crate::order::{Orders, STORE_LABEL};

/// One of the caller's orders: unknown is 404, another user's is 401.
pub fn show(req: &Request, id: &str) -> Result<Response, ApiError> {
    let user = auth::require_user(req)?;
    let store = Store::open(STORE_LABEL)?;
    let order = Orders::new(&store)
        .find_placed(id)?
        .ok_or(ApiError::NotFound)?;
    super::owned_by(&order, &user)?;
    json_response(200, &order)
}

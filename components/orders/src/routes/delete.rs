//! `DELETE /api/orders/:id`

use spin_sdk::http::{Request, Response};
use ticketing_common::{auth, store::Store, ApiError};

use crate::{
    cancel::{cancel as cancel_order, Outcome},
    order::STORE_LABEL,
};

/// Cancels one of the caller's orders: unknown is 404, another user's 401, a complete one
/// 400; cancelling a cancelled order again is 204 without a new event.
pub fn cancel(req: &Request, id: &str) -> Result<Response, ApiError> {
    let user = auth::require_user(req)?;
    let store = Store::open(STORE_LABEL)?;
    match cancel_order(&store, id, |order| super::owned_by(order, &user))? {
        Outcome::Cancelled => Ok(Response::builder().status(204).build()),
        Outcome::Complete => Err(ApiError::bad_request("Cannot cancel a completed order")),
    }
}

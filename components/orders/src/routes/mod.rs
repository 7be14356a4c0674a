//! One module per route, as in the original app (`new`, `index`, `show`, `delete`).

mod delete;
mod index;
mod new;
mod show;

pub use delete::cancel;
pub use index::list;
pub use new::create;
pub use show::show;

use ticketing_common::{auth::Claims, ApiError};

use crate::order::Order;

/// The order if it belongs to `user`: another user's order is 401.
fn owned_by(order: &Order, user: &Claims) -> Result<(), ApiError> {
    if order.user_id == user.id {
        Ok(())
    } else {
        Err(ApiError::NotAuthorized)
    }
}

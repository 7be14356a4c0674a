//! `PUT /api/tickets/:id`

use spin_sdk::http::{Request, Response};
use ticketing_common::{auth, http::json_body, http::json_response, ApiError};

use crate::ticket::Tickets;

/// Checks in the contract's order: signed in (401), valid body (400), known ticket (404),
/// owner (401), not reserved (400). The owner and reserved checks run on the value the
/// compare-and-swap writes over, so a reservation that lands meanwhile is never overwritten.
/// The write publishes `ticket.updated` (through the outbox).
pub fn update(req: &Request, id: &str) -> Result<Response, ApiError> {
    let user = auth::require_user(req)?;
    let (title, price) = super::validate(&json_body(req)?)?;
    let ticket = Tickets::open()?.update(id, |mut ticket| {
        if ticket.user_id != user.id {
            return Err(ApiError::NotAuthorized);
        }
        if ticket.order_id.is_some() {
            return Err(ApiError::bad_request("Cannot edit a reserved ticket"));
        }
        ticket.title.clone_from(&title);
        ticket.price = price;
        ticket.version += 1;
        Ok(ticket)
    })?;
    json_response(200, &ticket)
}

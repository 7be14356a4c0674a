//! `POST /api/tickets`

use spin_sdk::http::{Request, Response};
use ticketing_common::{auth, http::json_body, http::json_response, ApiError};

use crate::ticket::Tickets;

/// Creates the ticket, which publishes `ticket.created` (now, or through the outbox relay
/// if the bus is out of reach: the ticket is stored either way).
pub fn create(req: &Request) -> Result<Response, ApiError> {
    let user = auth::require_user(req)?;
    let (title, price) = super::validate(&json_body(req)?)?;
    let ticket = Tickets::open()?.create(title, price, user.id)?;
    json_response(201, &ticket)
}

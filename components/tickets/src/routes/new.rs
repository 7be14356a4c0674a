//! `POST /api/tickets`

use spin_sdk::http::{Request, Response};
use ticketing_common::{auth, events, http::json_body, http::json_response, ApiError};

use crate::ticket::Tickets;

/// Creates the ticket and publishes `ticket.created`. A ticket whose event could not be
/// published is removed again (500): the orders service could never sell it.
pub fn create(req: &Request) -> Result<Response, ApiError> {
    let user = auth::require_user(req)?;
    let (title, price) = super::validate(&json_body(req)?)?;
    let tickets = Tickets::open()?;
    let ticket = tickets.create(title, price, user.id)?;
    if let Err(error) = events::publish(&ticket.created_event()) {
        if let Err(cleanup) = tickets.delete(&ticket.id) {
            eprintln!("removing unpublished ticket {}: {cleanup}", ticket.id);
        }
        return Err(error);
    }
    json_response(201, &ticket)
}

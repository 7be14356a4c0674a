//! `GET /api/tickets`

use spin_sdk::http::Response;
use ticketing_common::{http::json_response, ApiError};

use crate::ticket::Tickets;

/// The tickets still for sale (not reserved by an order), oldest first.
pub fn list() -> Result<Response, ApiError> {
    let available: Vec<_> = Tickets::open()?
        .all()?
        .into_iter()
        .filter(|ticket| ticket.order_id.is_none())
        .collect();
    json_response(200, &available)
}

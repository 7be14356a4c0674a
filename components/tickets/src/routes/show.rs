//! `GET /api/tickets/:id`

use spin_sdk::http::Response;
use ticketing_common::{http::json_response, ApiError};

use crate::ticket::Tickets;

/// Any ticket, reserved ones included (with their `orderId`).
pub fn show(id: &str) -> Result<Response, ApiError> {
    let ticket = Tickets::open()?.find(id)?.ok_or(ApiError::NotFound)?;
    json_response(200, &ticket)
}

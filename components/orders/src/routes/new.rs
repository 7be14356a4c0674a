//! `POST /api/orders`

use serde::Deserialize;
use spin_sdk::http::{Request, Response};
use ticketing_common::{
    auth,
    clock::now_ms,
    config,
    errors::check_fields,
    http::{json_body, json_response, optional_field},
    ids::{is_valid_id, new_id},
    store::Store,
    ApiError, FieldError,
};

use crate::{
    order::{expires_at, Order, Orders, STORE_LABEL},
    ticket,
};

/// How long an order holds its ticket when `expiration_window_seconds` is not set: 15 min.
const DEFAULT_EXPIRATION_WINDOW_SECONDS: u64 = 15 * 60;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrderBody {
    #[serde(default, deserialize_with = "optional_field")]
    ticket_id: Option<String>,
}

/// The ticket id of the body: required, and in the id format (as the original app's
/// validation had it: any other text is a 400, not a lookup).
fn validate(body: &NewOrderBody) -> Result<String, ApiError> {
    let ticket_id = body.ticket_id.as_deref().unwrap_or_default().trim();
    let mut errors = Vec::new();
    if !is_valid_id(ticket_id) {
        errors.push(FieldError::new("ticketId", "TicketId must be provided"));
    }
    check_fields(errors)?;
    Ok(ticket_id.to_owned())
}

/// Checks in the contract's order: signed in (401), valid body (400), known ticket (404),
/// the ticket's reservation won (400 "Ticket is already reserved"). Winning it records
/// `order.created`, published now or by the outbox relay.
pub fn create(req: &Request) -> Result<Response, ApiError> {
    let user = auth::require_user(req)?;
    let ticket_id = validate(&json_body(req)?)?;
    let store = Store::open(STORE_LABEL)?;
    let ticket = ticket::copies(&store)
        .find(&ticket_id)?
        .ok_or(ApiError::NotFound)?;

    let window = config::variable_or(
        "expiration_window_seconds",
        DEFAULT_EXPIRATION_WINDOW_SECONDS,
    )?;
    let order = Order::new(new_id()?, user.id, ticket, expires_at(now_ms()?, window)?);

    if !Orders::new(&store).place(&order)? {
        return Err(ApiError::bad_request("Ticket is already reserved"));
    }
    json_response(201, &order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketing_common::http::parse_json_body;

    fn validate_json(json: &str) -> Result<String, ApiError> {
        let body: NewOrderBody = parse_json_body(Some("application/json"), json.as_bytes())?;
        validate(&body)
    }

    #[test]
    fn the_ticket_id_is_required() {
        for json in [
            r#"{}"#,
            r#"{"ticketId": ""}"#,
            r#"{"ticketId": "  "}"#,
            r#"{"ticketId": 7}"#,
            r#"{"ticketId": "not-an-id"}"#,
            r#"{"ticketId": "507f1f77bcf86cd79943901"}"#,
        ] {
            match validate_json(json) {
                Err(ApiError::Validation(errors)) => {
                    assert_eq!(
                        errors,
                        [FieldError::new("ticketId", "TicketId must be provided")]
                    );
                }
                other => panic!("{json}: {other:?}"),
            }
        }
        assert_eq!(
            validate_json(r#"{"ticketId": "507f1f77bcf86cd799439011"}"#).unwrap(),
            "507f1f77bcf86cd799439011"
        );
    }
}

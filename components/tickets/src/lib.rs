//! The tickets service: create, list, show and edit tickets under `/api/tickets`, and keep
//! each ticket's reservation in step with the orders' events (see `listeners`).
//! Tickets live in the key-value store labelled `tickets` (see `ticket`), with the
//! catalogue's own view of them for paged listing (see `listing`).

mod listeners;
mod listing;
mod routes;
mod ticket;

use spin_sdk::http::{IncomingRequest, Method, Request, Response};
use spin_sdk::http_component;
use ticketing_common::{
    http::{path_segments, read_request, respond},
    ApiError,
};

ticketing_common::export_listener!(listeners::on_event);

#[http_component]
async fn handle_tickets(incoming: IncomingRequest) -> Response {
    match read_request(incoming).await {
        Ok(req) => respond(route(&req)),
        Err(error) => error.into_response(),
    }
}

/// The service's routes; anything else, a known path with another method included, is 404.
fn route(req: &Request) -> Result<Response, ApiError> {
    match (req.method(), path_segments(req.path()).as_slice()) {
        (Method::Post, ["api", "tickets"]) => routes::create(req),
        (Method::Get, ["api", "tickets"]) => routes::list(req),
        (Method::Get, ["api", "tickets", id]) => routes::show(id),
        (Method::Put, ["api", "tickets", id]) => routes::update(req, id),
        _ => Err(ApiError::NotFound),
    }
}

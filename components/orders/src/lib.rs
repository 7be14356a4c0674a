//! The orders service: place, list, show and cancel orders under `/api/orders`; each order
//! reserves its ticket until it expires, is cancelled or is paid. The service keeps a copy of
//! every ticket from the tickets service's events and follows the expiration and payment
//! events (see `listeners`). State lives in the key-value store labelled `orders` (see
//! `order` and `ticket`).

mod cancel;
mod listeners;
mod order;
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
async fn handle_orders(incoming: IncomingRequest) -> Response {
    match read_request(incoming).await {
        Ok(req) => respond(route(&req)),
        Err(error) => error.into_response(),
    }
}

/// The service's routes; anything else, a known path with another method included, is 404.
fn route(req: &Request) -> Result<Response, ApiError> {
    match (req.method(), path_segments(req.path()).as_slice()) {
        (Method::Post, ["api", "orders"]) => routes::create(req),
        (Method::Get, ["api", "orders"]) => routes::list(req),
        (Method::Get, ["api", "orders", id]) => routes::show(req, id),
        (Method::Delete, ["api", "orders", id]) => routes::cancel(req, id),
        _ => Err(ApiError::NotFound),
    }
}

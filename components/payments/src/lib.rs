//! The payments service: `POST /api/payments` charges an order's price through a
//! Stripe-compatible API (see `stripe`) and publishes `payment.created`. It keeps a copy of
//! every order from the orders service's events (see `listeners`). State lives in the
//! key-value store labelled `payments` (see `order` and `payment`).

mod charge;
mod listeners;
mod order;
mod payment;
mod routes;
mod stripe;

use spin_sdk::http::{IncomingRequest, Method, Request, Response};
use spin_sdk::http_component;
use ticketing_common::{
    http::{path_segments, read_request, respond},
    ApiError,
};

/// The label of the service's key-value store.
const STORE_LABEL: &str = "payments";

ticketing_common::export_listener!(listeners::on_event);

#[http_component]
async fn handle_payments(incoming: IncomingRequest) -> Response {
    match read_request(incoming).await {
        Ok(req) => respond(route(&req).await),
        Err(error) => error.into_response(),
    }
}

/// The service's routes; anything else, a known path with another method included, is 404.
async fn route(req: &Request) -> Result<Response, ApiError> {
    match (req.method(), path_segments(req.path()).as_slice()) {
        (Method::Post, ["api", "payments"]) => routes::create(req).await,
        _ => Err(ApiError::NotFound),
    }
}

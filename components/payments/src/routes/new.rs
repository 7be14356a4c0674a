//! `POST /api/payments`

use std::time::{Duration, Instant};

use serde::Deserialize;
use spin_sdk::http::{Request, Response};
use ticketing_common::{
    auth,
    clock::now_ms,
    config,
    errors::check_fields,
    http::{json_body, json_response, optional_field},
    ids,
    store::Store,
    ApiError, FieldError,
};

use crate::{
    charge::{charge_and_record, recover},
    order::{self, OrderCopy},
    payment::{Claim, Closure, Payments},
    stripe::Charger,
    STORE_LABEL,
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    #[serde(default, deserialize_with = "optional_field")]
    token: Option<String>,
    #[serde(default, deserialize_with = "optional_field")]
    order_id: Option<String>,
}

/// The card token and the order id of the body, both required and non-blank.
fn validate(body: &PaymentBody) -> Result<(String, String), ApiError> {
    let token = body.token.as_deref().unwrap_or_default().trim();
    let order_id = body.order_id.as_deref().unwrap_or_default().trim();
    let mut errors = Vec::new();
    if token.is_empty() {
        errors.push(FieldError::new("token", "Token must be provided"));
    }
    if order_id.is_empty() {
        errors.push(FieldError::new("orderId", "OrderId must be provided"));
    }
    check_fields(errors)?;
    Ok((token.to_owned(), order_id.to_owned()))
}

/// Checks in the contract's order: signed in (401), valid body (400), known order (404, or
/// 409 while it may still arrive, see `known_order`), the caller's (401), not cancelled,
/// not expired, not paid (400). The order's claim is taken before charging, so of
/// concurrent payments for one order exactly one charges, and of a payment and the order's
/// expiry the first to take the order wins; a failed charge gives the claim back.
pub async fn create(req: &Request) -> Result<Response, ApiError> {
    let charger = Charger::from_config()?;
    let user = auth::require_user(req)?;
    let (token, order_id) = validate(&json_body(req)?)?;
    let store = Store::open(STORE_LABEL)?;
    let order = known_order(&store, &order_id)?;
    if order.user_id != user.id {
        return Err(ApiError::NotAuthorized);
    }
    if order.has_expired(now_ms()?) {
        return Err(expired());
    }
    if !order.is_payable() {
        return Err(ApiError::bad_request("Cannot pay for a cancelled order"));
    }

    let payments = Payments::new(&store);
    if let Some(holder) = payments.claim(&order.id, &token)? {
        // A charge whose payer died is settled first; if it failed, the order is free.
        let Some(stale) = holder.stale_charge(now_ms()?) else {
            return Err(refusal(&holder));
        };
        let stale = stale.to_owned();
        if recover(&charger, &payments, &order.id, order.price, &stale)
            .await?
            .is_some()
        {
            return Err(refusal(&holder));
        }
        if let Some(holder) = payments.claim(&order.id, &token)? {
            return Err(refusal(&holder));
        }
    }
    // The order is ours, unless its time ran out meanwhile: a payment is taken strictly
    // before `expiresAt` (given back, the expiry closes the order).
    let outcome = if order.has_expired(now_ms()?) {
        Err(expired())
    } else {
        charge_and_record(&charger, &payments, &order.id, order.price, &token).await
    };
    match outcome {
        Ok(payment) => json_response(201, &serde_json::json!({ "id": payment.id })),
        Err(error) => {
            if let Err(cleanup) = payments.release_claim(&order.id) {
                eprintln!(
                    "releasing the payment claim of order {}: {cleanup}",
                    order.id
                );
            }
            Err(error)
        }
    }
}

fn expired() -> ApiError {
    ApiError::bad_request("Order has expired")
}

/// The answer to a payment for an order someone else has.
fn refusal(holder: &Claim) -> ApiError {
    match holder {
        Claim::Closed {
            closed: Closure::Expired,
        } => expired(),
        Claim::Closed {
            closed: Closure::Cancelled,
        } => ApiError::bad_request("Cannot pay for a cancelled order"),
        Claim::Paid(_) | Claim::Charging { .. } | Claim::ChargingUnknown => {
            ApiError::bad_request("Order already paid")
        }
    }
}

/// How long a payment waits for an order this service has not heard of yet.
const ORDER_WAIT: Duration = Duration::from_secs(2);
/// How often it looks while waiting, at most.
const ORDER_POLL_MAX: Duration = Duration::from_millis(100);

/// The service's copy of the order. The payments service learns of an order through its
/// `order.created`, a moment after the buyer got the order's 201: a payment for an order it
/// has not heard of waits for it a little, then is a 409 (try again) while the order may
/// still arrive (its id was made within the order expiration window), else a 404.
fn known_order(store: &Store, order_id: &str) -> Result<OrderCopy, ApiError> {
    let copies = order::copies(store);
    let deadline = Instant::now() + ORDER_WAIT;
    let mut wait = Duration::from_millis(5);
    loop {
        if let Some(order) = copies.find(order_id)? {
            return Ok(order);
        }
        if !may_arrive(order_id)? {
            return Err(ApiError::NotFound);
        }
        if Instant::now() + wait > deadline {
            return Err(ApiError::NotYet(
                "This order is not ready for payment yet, try again".to_owned(),
            ));
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(ORDER_POLL_MAX);
    }
}

/// Whether an order with this id may still be announced to this service: its id was made
/// no longer ago than an order lives (plus a minute for clocks and delivery).
fn may_arrive(order_id: &str) -> Result<bool, ApiError> {
    let Some(created) = ids::created_at(order_id) else {
        return Ok(false);
    };
    let window_ms: i64 = config::variable_or("expiration_window_seconds", 15 * 60)? * 1000;
    let age_ms = now_ms()?.abs_diff(i64::from(created) * 1000);
    Ok(age_ms <= window_ms.saturating_add(60_000).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticketing_common::http::parse_json_body;

    fn validate_json(json: &str) -> Result<(String, String), ApiError> {
        let body: PaymentBody = parse_json_body(Some("application/json"), json.as_bytes())?;
        validate(&body)
    }

    fn failed(json: &str) -> Vec<FieldError> {
        match validate_json(json) {
            Err(ApiError::Validation(errors)) => errors,
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn token_and_order_id_are_required() {
        assert_eq!(
            failed("{}"),
            [
                FieldError::new("token", "Token must be provided"),
                FieldError::new("orderId", "OrderId must be provided"),
            ]
        );
        assert_eq!(
            failed(r#"{"token": " ", "orderId": "6500000000000000000000aa"}"#),
            [FieldError::new("token", "Token must be provided")]
        );
        assert_eq!(
            failed(r#"{"token": "tok_visa", "orderId": 7}"#),
            [FieldError::new("orderId", "OrderId must be provided")]
        );
        assert_eq!(
            validate_json(r#"{"token": "tok_visa", "orderId": "6500000000000000000000aa"}"#)
                .unwrap(),
            ("tok_visa".to_owned(), "6500000000000000000000aa".to_owned())
        );
    }
}

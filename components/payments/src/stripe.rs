//! Charging a card through a Stripe-compatible API: `POST {stripe_api_base}/v1/charges`
//! with a form body, the amount in integer cents, and an idempotency key derived from the
//! order id and the card token, so a retried payment never charges twice.
//!
//! Without `stripe_secret_key` the service runs in an explicit test mode (logged on every
//! request): no charge is made, Stripe's test tokens (`tok_visa`, `tok_mastercard`, ...) are
//! accepted and `tok_chargeDeclined` (and anything that is not a test token) is declined.

use anyhow::anyhow;
use serde::Deserialize;
use spin_sdk::http::{Method, Request, Response};
use ticketing_common::{config, ids::random_hex, price, ApiError};

/// The API base when `stripe_api_base` is not set.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
/// The currency of every charge.
const CURRENCY: &str = "usd";
/// How much of an unexpected answer goes to the log.
const LOGGED_BODY_BYTES: usize = 512;

/// How the service charges.
pub enum Charger {
    /// Real charges with this secret key.
    Stripe {
        secret_key: String,
        api_base: String,
    },
    /// No key: nothing is charged.
    TestMode,
}

impl Charger {
    /// The charger the configuration asks for (`stripe_secret_key`, `stripe_api_base`); test
    /// mode says so in the log.
    pub fn from_config() -> Result<Self, ApiError> {
        let secret_key: String = config::variable_or("stripe_secret_key", String::new())?;
        if secret_key.is_empty() {
            eprintln!("payments: no stripe_secret_key, test mode: no real charge");
            return Ok(Self::TestMode);
        }
        let api_base = config::variable_or("stripe_api_base", DEFAULT_API_BASE.to_owned())?;
        Ok(Self::Stripe {
            secret_key,
            api_base,
        })
    }

    /// Charges `price` dollars for the order with the card `token`; the charge's id, or 400
    /// "Card declined", or a 500 for any other failure.
    pub async fn charge(
        &self,
        order_id: &str,
        price: f64,
        token: &str,
    ) -> Result<String, ApiError> {
        match self {
            Self::TestMode => test_mode_charge(token, &random_hex(12)?),
            Self::Stripe {
                secret_key,
                api_base,
            } => {
                let cents = price::to_cents(price)
                    .ok_or_else(|| anyhow!("order {order_id} has an invalid price {price}"))?;
                let form = charge_form(cents, token, order_id);
                let response = post_form(
                    &endpoint(api_base, "charges"),
                    secret_key,
                    &idempotency_key(order_id, token),
                    form,
                )
                .await
                .map_err(|e| anyhow!("sending the charge of order {order_id}: {e}"))?;
                charge_id(*response.status(), response.body())
            }
        }
    }

    /// Refunds the charge `stripe_id` of payment `payment_id` in full; the refund's id. The
    /// idempotency key is the payment's, so a refund tried again never refunds twice.
    pub async fn refund(&self, payment_id: &str, stripe_id: &str) -> Result<String, ApiError> {
        match self {
            Self::TestMode => Ok(format!("test_refund_{payment_id}")),
            Self::Stripe {
                secret_key,
                api_base,
            } => {
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("charge", stripe_id)
                    .finish();
                let response = post_form(
                    &endpoint(api_base, "refunds"),
                    secret_key,
                    &refund_idempotency_key(payment_id),
                    form,
                )
                .await
                .map_err(|e| anyhow!("sending the refund of payment {payment_id}: {e}"))?;
                refund_id(*response.status(), response.body())
            }
        }
    }
}

/// A form POST to the Stripe API. With a content-length the body is sent as is, not
/// chunked: servers that only read content-length bodies see the form too.
async fn post_form(
    url: &str,
    secret_key: &str,
    idempotency_key: &str,
    form: String,
) -> Result<Response, spin_sdk::http::SendError> {
    let request = Request::builder()
        .method(Method::Post)
        .uri(url)
        .header("authorization", format!("Bearer {secret_key}"))
        .header("idempotency-key", idempotency_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", form.len().to_string())
        .body(form)
        .build();
    spin_sdk::http::send(request).await
}

/// An endpoint (`charges`, `refunds`) under an API base, with or without a trailing slash.
pub fn endpoint(api_base: &str, resource: &str) -> String {
    format!("{}/v1/{resource}", api_base.trim_end_matches('/'))
}

/// The refund's idempotency key: one refund per payment.
pub fn refund_idempotency_key(payment_id: &str) -> String {
    format!("ticketing-refund-{payment_id}")
}

/// The refund id of a successful answer; anything else is a 500 (retried by the caller).
pub fn refund_id(status: u16, body: &[u8]) -> Result<String, ApiError> {
    if (200..300).contains(&status) {
        if let Ok(refund) = serde_json::from_slice::<Charge>(body) {
            return Ok(refund.id);
        }
    }
    let shown = &body[..body.len().min(LOGGED_BODY_BYTES)];
    Err(anyhow!(
        "the refunds API answered {status}: {}",
        String::from_utf8_lossy(shown)
    )
    .into())
}

/// The key that makes Stripe answer a repeated charge attempt with the first result. One
/// attempt is one order paid with one card token (Stripe tokens are single-use): a retry of
/// the attempt never charges twice, while a new card after a decline is a new attempt (Stripe
/// replays a stored decline for the key's lifetime). Two attempts can't both succeed: the
/// payment claim on the order admits one at a time.
pub fn idempotency_key(order_id: &str, token: &str) -> String {
    format!("ticketing-order-{order_id}-{token}")
}

/// The form body of a charge.
pub fn charge_form(amount_cents: u64, token: &str, order_id: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("amount", &amount_cents.to_string())
        .append_pair("currency", CURRENCY)
        .append_pair("source", token)
        .append_pair("description", &format!("Ticketing order {order_id}"))
        .finish()
}

/// A charge or a refund, as far as the service reads it.
#[derive(Deserialize)]
struct Charge {
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: StripeError,
}

#[derive(Deserialize)]
struct StripeError {
    #[serde(rename = "type")]
    kind: String,
}

/// The charge id of a successful answer; a card error (Stripe answers 402) is 400 "Card
/// declined"; any other answer is a 500 with the answer in the log.
pub fn charge_id(status: u16, body: &[u8]) -> Result<String, ApiError> {
    if (200..300).contains(&status) {
        if let Ok(charge) = serde_json::from_slice::<Charge>(body) {
            return Ok(charge.id);
        }
    } else if serde_json::from_slice::<ErrorBody>(body)
        .is_ok_and(|answer| answer.error.kind == "card_error")
    {
        return Err(card_declined());
    }
    let shown = &body[..body.len().min(LOGGED_BODY_BYTES)];
    Err(anyhow!(
        "the charges API answered {status}: {}",
        String::from_utf8_lossy(shown)
    )
    .into())
}

/// Test mode's answer to a token: a made-up charge id for a test token, declined otherwise
/// (`tok_chargeDeclined` and its variants such as `tok_chargeDeclinedExpiredCard` too).
pub fn test_mode_charge(token: &str, random_hex: &str) -> Result<String, ApiError> {
    if token.starts_with("tok_") && !token.starts_with("tok_chargeDeclined") {
        Ok(format!("test_{random_hex}"))
    } else {
        Err(card_declined())
    }
}

fn card_declined() -> ApiError {
    ApiError::bad_request("Card declined")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn is_declined(outcome: Result<String, ApiError>) -> bool {
        matches!(outcome, Err(ApiError::BadRequest(message)) if message == "Card declined")
    }

    fn is_internal(outcome: Result<String, ApiError>) -> bool {
        matches!(outcome, Err(ApiError::Internal(_)))
    }

    #[test]
    fn the_form_carries_integer_cents_in_usd_and_the_token() {
        let body = charge_form(2010, "tok_visa", "6500000000000000000000aa");
        assert_eq!(
            body,
            "amount=2010&currency=usd&source=tok_visa&description=Ticketing+order+6500000000000000000000aa"
        );
        let fields: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(fields["amount"], "2010");
    }

    #[test]
    fn form_values_are_escaped() {
        let body = charge_form(1, "tok_a&amount=0 b", "x");
        let fields: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(fields["source"], "tok_a&amount=0 b");
        assert_eq!(fields["amount"], "1");
    }

    #[test]
    fn the_endpoint_and_idempotency_key_are_fixed_by_the_order_and_card() {
        assert_eq!(
            endpoint("https://api.stripe.com", "charges"),
            "https://api.stripe.com/v1/charges"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:9999/", "refunds"),
            "http://127.0.0.1:9999/v1/refunds"
        );
        assert_eq!(
            refund_idempotency_key("66000000000000000000000b"),
            "ticketing-refund-66000000000000000000000b"
        );
        assert_eq!(
            idempotency_key("6500000000000000000000aa", "tok_visa"),
            "ticketing-order-6500000000000000000000aa-tok_visa"
        );
    }

    #[test]
    fn a_successful_charge_gives_its_id() {
        let body = br#"{"id": "ch_1", "object": "charge", "amount": 2010, "paid": true}"#;
        assert_eq!(charge_id(200, body).unwrap(), "ch_1");
        assert!(is_internal(charge_id(200, b"{}")));
        assert!(is_internal(charge_id(200, b"not json")));
    }

    #[test]
    fn a_refund_gives_its_id_and_anything_else_is_internal() {
        assert_eq!(
            refund_id(200, br#"{"id": "re_1", "object": "refund"}"#).unwrap(),
            "re_1"
        );
        assert!(is_internal(refund_id(
            400,
            br#"{"error": {"type": "invalid_request_error"}}"#
        )));
        assert!(is_internal(refund_id(200, b"{}")));
    }

    #[test]
    fn card_errors_are_declines_and_everything_else_is_internal() {
        let declined = br#"{"error": {"type": "card_error", "code": "card_declined"}}"#;
        assert!(is_declined(charge_id(402, declined)));
        let invalid =
            br#"{"error": {"type": "invalid_request_error", "message": "No such token"}}"#;
        assert!(is_internal(charge_id(400, invalid)));
        assert!(is_internal(charge_id(
            401,
            br#"{"error": {"type": "invalid_request_error"}}"#
        )));
        assert!(is_internal(charge_id(500, b"oops")));
        assert!(is_internal(charge_id(402, b"")));
    }

    #[test]
    fn test_mode_accepts_test_tokens_and_declines_the_rest() {
        for token in ["tok_visa", "tok_mastercard", "tok_amex"] {
            assert_eq!(test_mode_charge(token, "ab12").unwrap(), "test_ab12");
        }
        for token in [
            "tok_chargeDeclined",
            "tok_chargeDeclinedInsufficientFunds",
            "",
            "visa",
            "pm_card_visa",
        ] {
            assert!(is_declined(test_mode_charge(token, "ab12")), "{token:?}");
        }
    }
}

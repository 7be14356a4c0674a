//! Charging an order once it is taken (see `payment::Payments::claim`): the charge, then the
//! payment stored as the order's, which publishes `payment.created` (now, or through the
//! outbox relay). The same steps recover a charge whose payer died half-way (see
//! `listeners`): asked again with the same card token, Stripe answers with the first
//! charge's outcome (the idempotency key is the order's and the token's).

use ticketing_common::{ids::new_id, ApiError};

use crate::{
    payment::{Payment, Payments},
    stripe::Charger,
};

/// Charges `price` for the order with card `token` and records the payment. The caller
/// holds the order's claim, and gives it back if this fails.
pub async fn charge_and_record(
    charger: &Charger,
    payments: &Payments<'_>,
    order_id: &str,
    price: f64,
    token: &str,
) -> Result<Payment, ApiError> {
    let stripe_id = charger.charge(order_id, price, token).await?;
    let payment = Payment {
        id: new_id()?,
        order_id: order_id.to_owned(),
        stripe_id,
        refund_id: None,
    };
    payments.record(&payment)?;
    Ok(payment)
}

/// A charge whose payer died between charging and recording (see `payment::Claim`): asked
/// again with its token, Stripe answers with the first attempt's outcome. Paid: recorded now
/// (and announced); declined: the claim is given back (`None`).
pub async fn recover(
    charger: &Charger,
    payments: &Payments<'_>,
    order_id: &str,
    price: f64,
    token: &str,
) -> Result<Option<Payment>, ApiError> {
    match charge_and_record(charger, payments, order_id, price, token).await {
        Ok(payment) => {
            eprintln!(
                "payments: recovered the charge of order {order_id} whose payer stopped: paid \
                 ({})",
                payment.stripe_id
            );
            Ok(Some(payment))
        }
        Err(ApiError::BadRequest(reason)) => {
            eprintln!("payments: the interrupted charge of order {order_id} failed: {reason}");
            payments.release_claim(order_id)?;
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

//! The events the payments service consumes: its order copies follow the orders service,
//! and it decides between a payment and the order's end.
//!
//! Of a payment and the order's expiry (or its cancellation by its user), whichever takes
//! the order's claim (`payment-for:<orderId>`, see `payment`) first wins:
//! - on `expiration.complete` the service closes the order to payment and announces
//!   `payment.expired`, which is what lets the orders service cancel it; an order paid
//!   first stays paid, however late its `payment.created` arrives;
//! - on `order.cancelled` it closes the order too; a payment that got through first cannot
//!   stand (the order and its ticket are gone): it is refunded through Stripe, with an
//!   idempotency key, and `payment.refunded` tells the orders service.
//!
//! A charge under way makes either wait (retry later); one whose payer died is asked of
//! Stripe again with its own idempotency key, which answers with what really happened.

use ticketing_common::{
    clock::now_ms,
    events::{self, Event, ExpirationComplete, OrderCancelled, OrderCreated, PaymentExpired},
    listener::{self, decode, unknown_event, ListenerError},
    store::Store,
};

use crate::{
    charge,
    order::{self, OrderCopy},
    payment::{Claim, Closure, Payment, Payments},
    stripe::Charger,
    STORE_LABEL,
};

pub fn on_event(name: &str, payload: &[u8]) -> Result<(), ListenerError> {
    let store = Store::open(STORE_LABEL)?;
    let orders = order::copies(&store);
    match name {
        OrderCreated::NAME => {
            let order = OrderCopy::from(decode::<OrderCreated>(payload)?);
            Ok(orders.insert(&order.id, &order)?)
        }
        OrderCancelled::NAME => {
            let cancelled: OrderCancelled = decode(payload)?;
            orders.apply(&cancelled.id, cancelled.version, OrderCopy::cancelled)?;
            order_cancelled(&Payments::new(&store), &cancelled.id)
        }
        ExpirationComplete::NAME => expiration_complete(
            &Payments::new(&store),
            &decode::<ExpirationComplete>(payload)?.order_id,
        ),
        events::OUTBOX_RELAY => listener::relay_outbox(&store),
        other => Err(unknown_event(other)),
    }
}

/// The order's time is up: closed to payment, announced as `payment.expired`, unless a
/// payment has it.
fn expiration_complete(payments: &Payments, order_id: &str) -> Result<(), ListenerError> {
    let expired = events::outgoing(&PaymentExpired {
        order_id: order_id.to_owned(),
    })?;
    let Some(holder) = payments.close(order_id, Closure::Expired, vec![expired])? else {
        return Ok(());
    };
    match settle_charge(payments, order_id, holder)? {
        // Paid before its time was up: the payment wins.
        Settled::Paid(_) => Ok(()),
        // Closed already (a redelivery: its event is in the outbox), or cancelled.
        Settled::Closed => Ok(()),
        Settled::Free => Err(ListenerError::RetryLater(format!(
            "order {order_id}: its charge failed; closing it next time"
        ))),
    }
}

/// The order was cancelled by its user: closed to payment; a payment that got through
/// first is refunded.
fn order_cancelled(payments: &Payments, order_id: &str) -> Result<(), ListenerError> {
    let Some(holder) = payments.close(order_id, Closure::Cancelled, Vec::new())? else {
        return Ok(());
    };
    match settle_charge(payments, order_id, holder)? {
        Settled::Paid(payment_id) => refund(payments, &payment_id),
        Settled::Closed => Ok(()),
        Settled::Free => Err(ListenerError::RetryLater(format!(
            "order {order_id}: its charge failed; closing it next time"
        ))),
    }
}

/// Where an order's claim ends up once no charge is under way.
enum Settled {
    Paid(String),
    Closed,
    /// The claim was given back (a charge that failed): the order can be closed now.
    Free,
}

/// What `holder` comes to: a charge under way is waited for (retry later), one whose
/// payer died is recovered.
fn settle_charge(
    payments: &Payments,
    order_id: &str,
    holder: Claim,
) -> Result<Settled, ListenerError> {
    if let Some(token) = holder.stale_charge(now_ms()?) {
        return Ok(match recover_charge(payments, order_id, token)? {
            Some(payment) => Settled::Paid(payment.id),
            None => Settled::Free,
        });
    }
    match holder {
        Claim::Paid(payment_id) => Ok(Settled::Paid(payment_id)),
        Claim::Closed { .. } => Ok(Settled::Closed),
        Claim::Charging { .. } | Claim::ChargingUnknown => Err(ListenerError::RetryLater(format!(
            "order {order_id}: a charge is under way"
        ))),
    }
}

/// `charge::recover` for an order's claim whose payer died.
fn recover_charge(
    payments: &Payments,
    order_id: &str,
    token: &str,
) -> Result<Option<Payment>, ListenerError> {
    let Some(order) = order::copies(payments.store()).find(order_id)? else {
        return Err(ListenerError::RetryLater(format!(
            "order {order_id} is not known here yet"
        )));
    };
    let charger = Charger::from_config()?;
    let recovered = spin_sdk::http::run(charge::recover(
        &charger,
        payments,
        order_id,
        order.price,
        token,
    ))?;
    Ok(recovered)
}

/// Refunds a payment whose order was cancelled, once.
fn refund(payments: &Payments, payment_id: &str) -> Result<(), ListenerError> {
    let Some(payment) = payments.find(payment_id)? else {
        return Err(ListenerError::RetryLater(format!(
            "payment {payment_id} is not stored yet"
        )));
    };
    if payment.refund_id.is_some() {
        return Ok(());
    }
    let charger = Charger::from_config()?;
    let refund_id = spin_sdk::http::run(charger.refund(&payment.id, &payment.stripe_id))?;
    payments.record_refund(&payment, &refund_id)?;
    eprintln!(
        "payments: refunded payment {} (charge {}, refund {refund_id}): its order {} was \
         cancelled",
        payment.id, payment.stripe_id, payment.order_id
    );
    Ok(())
}

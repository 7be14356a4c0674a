//! Payment or expiry (docs/API.md): a payment accepted before the order's `expiresAt` gets
//! the ticket however late its event, a payment after it is refused and never charged, and
//! a payment that got through as its user cancelled the order is refunded. The races are
//! forced, not waited for: the host's test mode `TICKETING_TEST_HOLD_EVENTS` holds back
//! `payment.created` (as a bus outage would) past the order's expiry. On the embedded
//! default and on NATS + Redis; payments go to the local Stripe stand-in.
mod support;

use std::time::{Duration, Instant};

use support::stripe::StripeFake;
use support::*;

/// The order window of these tests, in seconds.
const WINDOW: u32 = 3;

fn held_payments(config: HostConfig, seconds: u32) -> HostConfig {
    let mut config = config;
    config.env.push((
        "TICKETING_TEST_HOLD_EVENTS".into(),
        format!("payment.created:{seconds}"),
    ));
    config
}

/// A seller's ticket and a buyer's order for it, the payments service knowing the order.
fn ordered(host: &Host) -> (Client, String, String) {
    let mut seller = host.client();
    seller.sign_up();
    let ticket = seller.post("/api/tickets", json!({"title": "Encore", "price": 42.5}));
    assert_eq!(ticket.status, 201, "{}", ticket.body);
    let ticket_id = ticket.json()["id"].as_str().unwrap().to_owned();
    let mut buyer = host.client();
    buyer.sign_up();
    let order = eventually("the orders service knows the ticket", || {
        let reply = buyer.post("/api/orders", json!({ "ticketId": ticket_id }));
        (reply.status == 201).then(|| reply.json())
    });
    (buyer, ticket_id, order["id"].as_str().unwrap().to_owned())
}

fn order_of(client: &mut Client, order_id: &str) -> Value {
    client.get(&format!("/api/orders/{order_id}")).json()
}

fn holder_of(client: &mut Client, ticket_id: &str) -> Value {
    client.get(&format!("/api/tickets/{ticket_id}")).json()["orderId"].clone()
}

fn a_payment_accepted_before_the_expiry_wins_however_late_its_event(platform: Platform) {
    let stripe = StripeFake::start();
    // payment.created is held back twice the order window from the payment on.
    let host = held_payments(platform.host(WINDOW, &stripe), 2 * WINDOW).start();
    let (mut buyer, ticket_id, order_id) = ordered(&host);
    let placed = Instant::now();
    let paid = buyer.post(
        "/api/payments",
        json!({"token": "tok_visa", "orderId": order_id}),
    );
    assert_eq!(paid.status, 201, "paid before the expiry: {}", paid.body);

    // The expiry comes and goes while the payment's event is held back: the order is not
    // cancelled and keeps its ticket.
    let after_expiry = placed + Duration::from_secs(u64::from(WINDOW) + 2);
    while Instant::now() < after_expiry {
        let order = order_of(&mut buyer, &order_id);
        assert_ne!(
            order["status"], "cancelled",
            "a paid order was cancelled: {order}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(holder_of(&mut buyer, &ticket_id), order_id.as_str());

    // Then the event gets through: complete, the ticket its own, one charge, no refund.
    eventually("the paid order is complete", || {
        (order_of(&mut buyer, &order_id)["status"] == "complete").then_some(())
    });
    assert_eq!(holder_of(&mut buyer, &ticket_id), order_id.as_str());
    let order = order_of(&mut buyer, &order_id);
    assert!(order.get("refunded").is_none(), "{order}");
    let requests = stripe.charges();
    assert_eq!(
        requests.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/v1/charges"],
        "{requests:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(order_of(&mut buyer, &order_id)["status"], "complete");
}

fn a_payment_after_the_expiry_is_refused_and_never_charged(platform: Platform) {
    let stripe = StripeFake::start();
    let host = platform.host(WINDOW, &stripe).start();
    let (mut buyer, ticket_id, order_id) = ordered(&host);
    let expires_at = order_of(&mut buyer, &order_id)["expiresAt"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_secs(u64::from(WINDOW)) + Duration::from_millis(300));
    buyer
        .post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order_id}),
        )
        .assert_error(400, &["Order has expired"]);
    assert!(
        stripe.charges().is_empty(),
        "nothing is charged after {expires_at}"
    );
    eventually("the expired order is cancelled", || {
        (order_of(&mut buyer, &order_id)["status"] == "cancelled").then_some(())
    });
    eventually("the ticket is on sale again", || {
        holder_of(&mut buyer, &ticket_id).is_null().then_some(())
    });
    buyer
        .post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order_id}),
        )
        .assert_error(400, &["Order has expired"]);
    assert!(stripe.charges().is_empty());
}

fn a_payment_that_got_through_as_its_order_was_cancelled_is_refunded(platform: Platform) {
    let stripe = StripeFake::start();
    // A long window: only the user's cancellation ends this order.
    let host = held_payments(platform.host(600, &stripe), 6).start();
    let (mut buyer, ticket_id, order_id) = ordered(&host);
    let paid = buyer.post(
        "/api/payments",
        json!({"token": "tok_visa", "orderId": order_id}),
    );
    assert_eq!(paid.status, 201, "{}", paid.body);
    let payment_id = paid.json()["id"].as_str().unwrap().to_owned();
    // The orders service has not heard of the payment: the user can still cancel.
    assert_eq!(buyer.delete(&format!("/api/orders/{order_id}")).status, 204);

    eventually("the order says its payment was refunded", || {
        let order = order_of(&mut buyer, &order_id);
        (order["refunded"] == true).then_some(order)
    });
    let requests = stripe.charges();
    let refunds: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/v1/refunds")
        .collect();
    assert_eq!(refunds.len(), 1, "{requests:?}");
    assert!(requests.iter().all(|r| r.problem.is_none()), "{requests:?}");
    assert_eq!(
        refunds[0].idempotency_key.as_deref(),
        Some(format!("ticketing-refund-{payment_id}").as_str())
    );
    assert!(refunds[0].form["charge"].starts_with("ch_fake"));
    eventually("the ticket is on sale again", || {
        holder_of(&mut buyer, &ticket_id).is_null().then_some(())
    });
    // The held payment.created arrives at last: the cancelled order stays so.
    std::thread::sleep(Duration::from_secs(7));
    let order = order_of(&mut buyer, &order_id);
    assert_eq!(order["status"], "cancelled", "{order}");
    assert_eq!(order["refunded"], true);
    assert_eq!(
        stripe
            .charges()
            .iter()
            .filter(|r| r.path == "/v1/refunds")
            .count(),
        1,
        "refunded once"
    );
}

mod embedded {
    use super::*;

    #[test]
    fn a_payment_accepted_before_the_expiry_wins_however_late_its_event() {
        super::a_payment_accepted_before_the_expiry_wins_however_late_its_event(Platform::Embedded);
    }

    #[test]
    fn a_payment_after_the_expiry_is_refused_and_never_charged() {
        super::a_payment_after_the_expiry_is_refused_and_never_charged(Platform::Embedded);
    }

    #[test]
    fn a_payment_that_got_through_as_its_order_was_cancelled_is_refunded() {
        super::a_payment_that_got_through_as_its_order_was_cancelled_is_refunded(
            Platform::Embedded,
        );
    }
}

mod servers {
    use super::*;

    #[test]
    fn a_payment_accepted_before_the_expiry_wins_however_late_its_event() {
        super::a_payment_accepted_before_the_expiry_wins_however_late_its_event(Platform::servers());
    }

    #[test]
    fn a_payment_after_the_expiry_is_refused_and_never_charged() {
        super::a_payment_after_the_expiry_is_refused_and_never_charged(Platform::servers());
    }

    #[test]
    fn a_payment_that_got_through_as_its_order_was_cancelled_is_refunded() {
        super::a_payment_that_got_through_as_its_order_was_cancelled_is_refunded(
            Platform::servers(),
        );
    }
}

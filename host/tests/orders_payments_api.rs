//! Every rule of API.md for orders and payments, over HTTP, on the embedded default.
mod support;

use std::time::Duration;
use support::stripe::StripeFake;
use support::*;

struct App {
    host: Host,
    stripe: StripeFake,
}

fn app() -> App {
    let stripe = StripeFake::start();
    let host = HostConfig::app(Backend::Embedded)
        .var("stripe_secret_key", support::stripe::SECRET_KEY)
        .var("stripe_api_base", &stripe.base_url())
        .start();
    App { host, stripe }
}

impl App {
    fn user(&self) -> Client {
        let mut c = self.host.client();
        c.sign_up();
        c
    }

    /// A ticket on sale that the orders service already knows about.
    fn ticket(&self) -> String {
        let mut seller = self.user();
        let t = seller
            .post("/api/tickets", json!({"title": "Show", "price": 10}))
            .json();
        t["id"].as_str().unwrap().to_string()
    }

    fn order(&self, buyer: &mut Client, ticket_id: &str) -> Value {
        eventually("orders knows the ticket", || {
            let r = buyer.post("/api/orders", json!({"ticketId": ticket_id}));
            match r.status {
                201 => Some(r.json()),
                404 => None,
                s => panic!("{s} {}", r.body),
            }
        })
    }

    /// Waits until payments knows the order (it answers something other than 404).
    fn payable(&self, buyer: &mut Client, order_id: &str, token: &str) -> Reply {
        eventually("payments knows the order", || {
            let r = buyer.post(
                "/api/payments",
                json!({"token": token, "orderId": order_id}),
            );
            (r.status != 404).then_some(r)
        })
    }
}

#[test]
fn order_rules() {
    let app = app();
    let ticket = app.ticket();
    let mut anon = app.host.client();
    anon.post("/api/orders", json!({"ticketId": ticket}))
        .assert_error(401, &["Not authorized"]);
    anon.post("/api/orders", json!({}))
        .assert_error(401, &["Not authorized"]);
    anon.get("/api/orders")
        .assert_error(401, &["Not authorized"]);

    let mut alice = app.user();
    alice
        .post("/api/orders", json!({}))
        .assert_fields(&[("ticketId", "TicketId must be provided")]);
    alice
        .post("/api/orders", json!({"ticketId": ""}))
        .assert_fields(&[("ticketId", "TicketId must be provided")]);
    alice
        .post(
            "/api/orders",
            json!({"ticketId": "5f0000000000000000000000"}),
        )
        .assert_error(404, &["Not Found"]);
    // Not in the id format: a validation error, as in the original app.
    alice
        .post("/api/orders", json!({"ticketId": "not-an-id"}))
        .assert_fields(&[("ticketId", "TicketId must be provided")]);

    let first = app.order(&mut alice, &ticket);
    let first_id = first["id"].as_str().unwrap();
    let other_ticket = app.ticket();
    let second = app.order(&mut alice, &other_ticket);

    let mut bob = app.user();
    assert_eq!(
        bob.get("/api/orders").json(),
        json!([]),
        "only the caller's orders"
    );
    bob.get(&format!("/api/orders/{first_id}"))
        .assert_error(401, &["Not authorized"]);
    bob.delete(&format!("/api/orders/{first_id}"))
        .assert_error(401, &["Not authorized"]);
    bob.get("/api/orders/5f0000000000000000000000")
        .assert_error(404, &["Not Found"]);
    bob.get("/api/orders/garbage")
        .assert_error(404, &["Not Found"]);
    bob.delete("/api/orders/garbage")
        .assert_error(404, &["Not Found"]);

    let mine = alice.get("/api/orders").json();
    let ids: Vec<&Value> = mine.as_array().unwrap().iter().map(|o| &o["id"]).collect();
    assert_eq!(ids, [&first["id"], &second["id"]], "oldest first");
    assert_eq!(alice.get(&format!("/api/orders/{first_id}")).json(), first);

    // Cancel: 204, cancelled, the ticket goes back on sale.
    let cancel = alice.delete(&format!("/api/orders/{first_id}"));
    assert_eq!(cancel.status, 204, "{}", cancel.body);
    let cancelled = alice.get(&format!("/api/orders/{first_id}")).json();
    assert_eq!(
        (&cancelled["status"], &cancelled["version"]),
        (&json!("cancelled"), &json!(1))
    );
    let ticket_path = format!("/api/tickets/{ticket}");
    eventually("the ticket is released", || {
        let t = anon.get(&ticket_path).json();
        (t.get("orderId").is_none() && t["version"] == 2).then_some(())
    });

    // Bob reserves it now; Alice cancelling her old order again changes nothing.
    let bobs = app.order(&mut bob, &ticket);
    eventually("the ticket shows Bob's order", || {
        (anon.get(&ticket_path).json()["orderId"] == bobs["id"]).then_some(())
    });
    assert_eq!(alice.delete(&format!("/api/orders/{first_id}")).status, 204);
    assert_eq!(
        alice.get(&format!("/api/orders/{first_id}")).json()["version"],
        1,
        "no second cancellation"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let t = anon.get(&ticket_path).json();
    assert_eq!(
        (&t["orderId"], &t["version"]),
        (&bobs["id"], &json!(3)),
        "Bob's reservation stands"
    );
    alice
        .post("/api/orders", json!({"ticketId": ticket}))
        .assert_error(400, &["Ticket is already reserved"]);
}

#[test]
fn payment_rules() {
    let app = app();
    let mut alice = app.user();
    let mut anon = app.host.client();
    anon.post(
        "/api/payments",
        json!({"token": "tok_visa", "orderId": "5f0000000000000000000000"}),
    )
    .assert_error(401, &["Not authorized"]);
    alice.post("/api/payments", json!({})).assert_fields(&[
        ("token", "Token must be provided"),
        ("orderId", "OrderId must be provided"),
    ]);
    alice
        .post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": "5f0000000000000000000000"}),
        )
        .assert_error(404, &["Not Found"]);
    alice
        .post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": "nope"}),
        )
        .assert_error(404, &["Not Found"]);

    let order = app.order(&mut alice, &app.ticket());
    let order_id = order["id"].as_str().unwrap();
    let mut bob = app.user();
    app.payable(&mut bob, order_id, "tok_visa")
        .assert_error(401, &["Not authorized"]);

    // A declined card charges nothing and leaves the order payable.
    app.payable(&mut alice, order_id, "tok_chargeDeclined")
        .assert_error(400, &["Card declined"]);
    assert_eq!(
        alice.get(&format!("/api/orders/{order_id}")).json()["status"],
        "created"
    );
    let paid = alice.post(
        "/api/payments",
        json!({"token": "tok_visa", "orderId": order_id}),
    );
    assert_eq!(paid.status, 201, "{}", paid.body);
    let charges = app.stripe.charges();
    assert!(charges.iter().all(|c| c.problem.is_none()), "{charges:?}");
    assert_eq!(charges.last().unwrap().form["amount"], "1000");
    alice
        .post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order_id}),
        )
        .assert_error(400, &["Order already paid"]);

    // A cancelled order can't be paid.
    let other = app.order(&mut alice, &app.ticket());
    let other_id = other["id"].as_str().unwrap();
    assert_eq!(alice.delete(&format!("/api/orders/{other_id}")).status, 204);
    eventually("payments hears of the cancellation", || {
        let r = alice.post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": other_id}),
        );
        (r.status == 400).then_some(r)
    })
    .assert_error(400, &["Cannot pay for a cancelled order"]);
}

#[test]
fn two_payments_for_one_order_charge_once() {
    let app = app();
    let mut alice = app.user();
    let order = app.order(&mut alice, &app.ticket());
    let order_id = order["id"].as_str().unwrap().to_string();
    // Wait until payments knows the order, with a request that charges nothing.
    let mut bob = app.user();
    app.payable(&mut bob, &order_id, "tok_visa")
        .assert_error(401, &["Not authorized"]);
    let client = alice.clone();
    let replies = at_once(8, move |_| {
        client.clone().post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order_id}),
        )
    });
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    for r in replies.iter().filter(|r| r.status != 201) {
        r.assert_error(400, &["Order already paid"]);
    }
    assert_eq!(app.stripe.charges().len(), 1);
}

#[test]
fn without_a_stripe_key_payments_run_in_an_explicit_test_mode() {
    let host = HostConfig::app(Backend::Embedded).start();
    let mut alice = host.client();
    alice.sign_up();
    let mut seller = host.client();
    seller.sign_up();
    let ticket = seller
        .post("/api/tickets", json!({"title": "Free", "price": 5}))
        .json();
    let order = eventually("orders knows the ticket", || {
        let r = alice.post("/api/orders", json!({"ticketId": ticket["id"]}));
        (r.status == 201).then(|| r.json())
    });
    let order_id = order["id"].as_str().unwrap();
    let declined = eventually("payments knows the order", || {
        let r = alice.post(
            "/api/payments",
            json!({"token": "tok_chargeDeclined", "orderId": order_id}),
        );
        (r.status != 404).then_some(r)
    });
    declined.assert_error(400, &["Card declined"]);
    assert_eq!(
        alice
            .post(
                "/api/payments",
                json!({"token": "tok_visa", "orderId": order_id})
            )
            .status,
        201
    );
    assert!(
        host.log().to_lowercase().contains("test mode"),
        "test mode is logged"
    );
}

//! The whole app over HTTP, events included: sell, order, pay or let the order expire, on
//! the embedded default (no servers) and on real NATS JetStream + Redis. Payments go to a
//! local Stripe stand-in that checks what it receives.
mod support;

use std::time::Duration;
use support::stripe::StripeFake;
use support::*;

/// Orders a ticket, waiting until the orders service has heard of it (ticket.created).
fn place_order(buyer: &mut Client, ticket_id: &str) -> Value {
    eventually("the orders service knows the ticket", || {
        let reply = buyer.post("/api/orders", json!({ "ticketId": ticket_id }));
        match reply.status {
            201 => Some(reply.json()),
            404 => None,
            _ => panic!("order: {} {}", reply.status, reply.body),
        }
    })
}

/// Pays an order, waiting until the payments service has heard of it (order.created).
fn pay(buyer: &mut Client, order_id: &str, token: &str) -> Reply {
    eventually("the payments service knows the order", || {
        let reply = buyer.post(
            "/api/payments",
            json!({ "token": token, "orderId": order_id }),
        );
        (reply.status != 404).then_some(reply)
    })
}

fn sell(host: &Host, title: &str, price: f64) -> (Client, Value) {
    let mut seller = host.client();
    seller.sign_up();
    let reply = seller.post("/api/tickets", json!({ "title": title, "price": price }));
    assert_eq!(reply.status, 201, "{}", reply.body);
    (seller, reply.json())
}

fn order_status(c: &mut Client, order_id: &str) -> String {
    c.get(&format!("/api/orders/{order_id}")).json()["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn buy_a_ticket(platform: Platform) {
    let stripe = StripeFake::start();
    let host = platform.host(4, &stripe).start();
    let (mut seller, ticket) = sell(&host, "Opera", 20.1);
    let ticket_id = ticket["id"].as_str().unwrap();
    let ticket_path = format!("/api/tickets/{ticket_id}");

    let mut buyer = host.client();
    let user = buyer.sign_up();
    let before = std::time::SystemTime::now();
    let order = place_order(&mut buyer, ticket_id);
    assert_eq!(order["status"], "created");
    assert_eq!(order["version"], 0);
    assert_eq!(order["userId"], user["id"]);
    assert_eq!(
        order["ticket"],
        json!({"id": ticket_id, "title": "Opera", "price": 20.1, "version": 0})
    );
    let expires = chrono_like_seconds(order["expiresAt"].as_str().unwrap());
    let now = before
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 3..=now + 6).contains(&expires),
        "expiresAt {} is about now + 4 s",
        order["expiresAt"]
    );
    let order_id = order["id"].as_str().unwrap();

    // The ticket service hears order.created: the ticket is reserved and leaves the list.
    let reserved = eventually("the ticket shows the order", || {
        let t = buyer.get(&ticket_path).json();
        (t["orderId"] == order["id"]).then_some(t)
    });
    assert_eq!(reserved["version"], 1);
    let listed = buyer.get("/api/tickets").json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["id"] != ticket["id"]),
        "reserved tickets are not listed"
    );
    seller
        .put(&ticket_path, json!({"title": "Opera", "price": 25}))
        .assert_error(400, &["Cannot edit a reserved ticket"]);
    let mut rival = host.client();
    rival.sign_up();
    rival
        .post("/api/orders", json!({"ticketId": ticket_id}))
        .assert_error(400, &["Ticket is already reserved"]);

    let paid = pay(&mut buyer, order_id, "tok_visa");
    assert_eq!(paid.status, 201, "{}", paid.body);
    assert!(paid.json()["id"].is_string());
    let charges = stripe.charges();
    assert_eq!(charges.len(), 1, "{charges:?}");
    let charge = &charges[0];
    assert_eq!(charge.problem, None);
    assert_eq!(charge.form["amount"], "2010", "20.10 USD in integer cents");
    assert!(
        charge
            .idempotency_key
            .as_deref()
            .unwrap()
            .contains(order_id),
        "{charge:?}"
    );

    eventually("the order is complete", || {
        (order_status(&mut buyer, order_id) == "complete").then_some(())
    });
    buyer
        .post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order_id}),
        )
        .assert_error(400, &["Order already paid"]);
    buyer
        .delete(&format!("/api/orders/{order_id}"))
        .assert_error(400, &["Cannot cancel a completed order"]);
    assert_eq!(stripe.charges().len(), 1, "no second charge");

    // The order's window passes: a paid order never expires.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(order_status(&mut buyer, order_id), "complete");
    assert_eq!(buyer.get(&ticket_path).json()["orderId"], order["id"]);
}

fn let_an_order_expire(platform: Platform) {
    let stripe = StripeFake::start();
    let host = platform.host(2, &stripe).start();
    let (_, ticket) = sell(&host, "Ballet", 30.0);
    let ticket_id = ticket["id"].as_str().unwrap();
    let mut buyer = host.client();
    buyer.sign_up();
    let order = place_order(&mut buyer, ticket_id);
    let order_id = order["id"].as_str().unwrap();

    eventually("the order expires", || {
        (order_status(&mut buyer, order_id) == "cancelled").then_some(())
    });
    let shown = buyer.get(&format!("/api/orders/{order_id}")).json();
    assert_eq!(shown["version"], 1);
    eventually("the ticket is back on sale", || {
        let listed = buyer.get("/api/tickets").json();
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == ticket["id"] && t.get("orderId").is_none())
            .then_some(())
    });
    let late = pay(&mut buyer, order_id, "tok_visa");
    late.assert_error(400, &["Order has expired"]);
    assert!(
        stripe.charges().is_empty(),
        "nothing charged for an expired order"
    );

    let mut second = host.client();
    second.sign_up();
    let again = second.post("/api/orders", json!({"ticketId": ticket_id}));
    assert_eq!(
        again.status, 201,
        "the ticket can be ordered again: {}",
        again.body
    );
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp like 2026-11-25T12:00:00Z or
/// 2026-11-25T12:00:00.123Z (days-from-civil arithmetic, to avoid a date crate in tests).
fn chrono_like_seconds(ts: &str) -> i64 {
    assert!(ts.ends_with('Z'), "UTC timestamp: {ts}");
    let (date, time) = ts.trim_end_matches('Z').split_once('T').expect("RFC 3339");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + t[0] as i64 * 3600 + t[1] as i64 * 60 + t[2] as i64
}

#[test]
fn buy_a_ticket_on_the_embedded_default() {
    buy_a_ticket(Platform::Embedded);
}

#[test]
fn buy_a_ticket_on_nats_and_redis() {
    buy_a_ticket(Platform::servers());
}

#[test]
fn an_unpaid_order_expires_on_the_embedded_default() {
    let_an_order_expire(Platform::Embedded);
}

#[test]
fn an_unpaid_order_expires_on_nats_and_redis() {
    let_an_order_expire(Platform::servers());
}

#[test]
fn fifty_buyers_one_ticket_one_order() {
    let platform = Platform::servers();
    let stripe = StripeFake::start();
    let host = platform.host(900, &stripe).start();
    let (_, ticket) = sell(&host, "Final", 99.0);
    let ticket_id = ticket["id"].as_str().unwrap().to_string();
    let mut buyers: Vec<Client> = (0..50)
        .map(|_| {
            let mut b = host.client();
            b.sign_up();
            b
        })
        .collect();
    // A canary ticket sold after the contested one: once orders knows the canary, it has
    // handled the earlier ticket.created too.
    let (_, canary) = sell(&host, "Canary", 1.0);
    let mut probe = host.client();
    probe.sign_up();
    place_order(&mut probe, canary["id"].as_str().unwrap());
    let contenders = buyers.clone();
    let replies = at_once(contenders.len(), move |i| {
        contenders[i]
            .clone()
            .post("/api/orders", json!({"ticketId": ticket_id}))
    });
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1, "exactly one buyer wins: {statuses:?}");
    for r in replies.iter().filter(|r| r.status != 201) {
        r.assert_error(400, &["Ticket is already reserved"]);
    }
    let live: usize = buyers
        .iter_mut()
        .map(|b| b.get("/api/orders").json().as_array().unwrap().len())
        .sum();
    assert_eq!(live, 1, "exactly one order exists");
}

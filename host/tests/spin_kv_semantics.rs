//! The platform's guarantees on the key-value stores Spin 3.6.3 really has, not only on this
//! host's: one account per email, exactly one winner of a ticket, each update applied once,
//! one charge per order, every ticket listed (and paged). The host runs with
//! `TICKETING_TEST_KV_SEMANTICS` (see `host/src/backends/key_value/spin_semantics.rs`):
//! `spin-redis` on a real Redis server (swaps always report a conflict, `get-many` fails the
//! request),
//! `spin-sqlite` on the embedded store (a swap from "absent" overwrites, `get-many` leaves
//! absent keys out).
mod support;

use support::scenarios::{
    a_sold_out_stretch_is_passed_over_and_comes_back,
    a_walk_during_a_rush_sees_every_ticket_that_stayed_on_sale_once,
    concurrent_signups_with_one_email_create_one_user,
    concurrent_updates_each_bump_the_version_once, the_catalogue_pages_in_creation_order,
};
use support::*;

macro_rules! on_spin_semantics {
    ($($name:ident),* $(,)?) => {
        mod spin_redis {
            $( #[test] fn $name() {
                let redis = $crate::support::Redis::start();
                let host = $crate::spin_host(Backend::Redis(redis.url()), "spin-redis");
                super::$name(&host)
            } )*
            use super::support::Backend;
        }
        mod spin_sqlite {
            $( #[test] fn $name() {
                super::$name(&$crate::spin_host(Backend::Embedded, "spin-sqlite"))
            } )*
            use super::support::Backend;
        }
    };
}

on_spin_semantics!(
    concurrent_signups_with_one_email_create_one_user,
    twenty_buyers_of_one_ticket_make_one_order,
    concurrent_updates_each_bump_the_version_once,
    concurrent_payments_for_one_order_pay_once,
    listings_show_every_ticket_and_order,
    the_catalogue_pages_in_creation_order,
    a_sold_out_stretch_is_passed_over_and_comes_back,
    a_walk_during_a_rush_sees_every_ticket_that_stayed_on_sale_once,
);

fn spin_host(backend: Backend, semantics: &str) -> Host {
    let mut config = HostConfig::app(backend);
    config
        .env
        .push(("TICKETING_TEST_KV_SEMANTICS".into(), semantics.into()));
    let host = config.start();
    assert!(
        host.log()
            .contains("test mode: key-value stores behave like Spin"),
        "the host says it emulates Spin's store:\n{}",
        host.log()
    );
    host
}

fn twenty_buyers_of_one_ticket_make_one_order(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    let ticket = seller
        .post("/api/tickets", json!({"title": "Last seat", "price": 30}))
        .json();
    let ticket_id = ticket["id"].as_str().unwrap().to_owned();
    let buyers: Vec<Client> = (0..20)
        .map(|_| {
            let mut buyer = host.client();
            buyer.sign_up();
            buyer
        })
        .collect();
    let id = ticket_id.clone();
    let replies = at_once(20, move |i| {
        let mut buyer = buyers[i].clone();
        // 404 only until the orders service has its copy of the ticket (ticket.created).
        eventually("a definite answer", || {
            let r = buyer.post("/api/orders", json!({"ticketId": id}));
            (r.status != 404).then_some(r)
        })
    });
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let winners: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(winners.len(), 1, "one order wins the ticket: {statuses:?}");
    for r in replies.iter().filter(|r| r.status != 201) {
        r.assert_error(400, &["Ticket is already reserved"]);
    }
    let order_id = winners[0].json()["id"].as_str().unwrap().to_owned();
    let reserved = eventually("the ticket shows the winning order", || {
        let t = seller.get(&format!("/api/tickets/{ticket_id}")).json();
        (!t["orderId"].is_null()).then_some(t)
    });
    assert_eq!(reserved["orderId"], order_id.as_str());
    assert_eq!(reserved["version"], 1, "reserved exactly once");
}

fn concurrent_payments_for_one_order_pay_once(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    let ticket = seller
        .post("/api/tickets", json!({"title": "Paid once", "price": 9}))
        .json();
    let mut buyer = host.client();
    buyer.sign_up();
    let order = eventually("orders knows the ticket", || {
        let r = buyer.post("/api/orders", json!({"ticketId": ticket["id"]}));
        (r.status == 201).then(|| r.json())
    });
    let order_id = order["id"].as_str().unwrap().to_owned();
    // A declined card charges nothing and gives the claim back; it also waits for payments
    // to know the order.
    eventually("payments knows the order", || {
        let r = buyer.post(
            "/api/payments",
            json!({"token": "tok_chargeDeclined", "orderId": order_id}),
        );
        (r.status != 404).then_some(r)
    })
    .assert_error(400, &["Card declined"]);
    let (client, id) = (buyer.clone(), order_id.clone());
    let replies = at_once(8, move |_| {
        client
            .clone()
            .post("/api/payments", json!({"token": "tok_visa", "orderId": id}))
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
    eventually("the order is complete", || {
        let o = buyer.get(&format!("/api/orders/{order_id}")).json();
        (o["status"] == "complete").then_some(())
    });
}

fn listings_show_every_ticket_and_order(host: &Host) {
    let mut seller = host.client();
    seller.sign_up();
    let created: Vec<String> = (0..5)
        .map(|k| {
            let r = seller.post(
                "/api/tickets",
                json!({"title": format!("t{k}"), "price": 3}),
            );
            assert_eq!(r.status, 201, "{}", r.body);
            r.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let listed: Vec<String> = host
        .client()
        .get("/api/tickets")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, created, "every ticket, in creation order");

    let mut buyer = host.client();
    buyer.sign_up();
    let ordered: Vec<String> = created[..3]
        .iter()
        .map(|id| {
            eventually("orders knows the ticket", || {
                let r = buyer.post("/api/orders", json!({"ticketId": id}));
                (r.status == 201).then(|| r.json()["id"].as_str().unwrap().to_owned())
            })
        })
        .collect();
    let mine: Vec<String> = buyer
        .get("/api/orders")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(mine, ordered, "every order of the user, oldest first");
}

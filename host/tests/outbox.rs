//! No dual write: a change and the events announcing it are one write (the outbox, see
//! docs/DESIGN.md). A host that dies after writing a change and before publishing its event
//! publishes the event after its restart, through the outbox relay; on the embedded default
//! and on NATS + Redis.
//!
//! The crash point is the host's own test hook: with `TICKETING_TEST_CRASH_BEFORE_PUBLISH`
//! set to an event name, the host aborts when a guest publishes that event, which is after
//! the guest's write and before the event reaches the bus.
mod support;

use std::time::{Duration, Instant};

use support::*;

const CRASH_ENV: &str = "TICKETING_TEST_CRASH_BEFORE_PUBLISH";

/// How long the effect of a relayed event may take after the restarted host listens: the
/// relay runs every 2 s; the rest is headroom for a loaded machine.
const AFTER_RESTART: Duration = Duration::from_secs(20);

/// The servers of one platform, kept alive for the test.
struct Servers {
    _nats: Option<Nats>,
    _redis: Option<Redis>,
}

fn embedded() -> (Servers, HostConfig) {
    let servers = Servers {
        _nats: None,
        _redis: None,
    };
    (servers, HostConfig::app(Backend::Embedded))
}

fn nats_and_redis() -> (Servers, HostConfig) {
    let (nats, redis) = (Nats::start(), Redis::start());
    let config = HostConfig::app(Backend::Redis(redis.url()))
        .var("nats_url", &nats.url())
        .var("timers_url", &redis.url());
    let servers = Servers {
        _nats: Some(nats),
        _redis: Some(redis),
    };
    (servers, config)
}

fn crashing_on(config: HostConfig, event: &str) -> HostConfig {
    let mut config = config;
    config.env.push((CRASH_ENV.into(), event.into()));
    config
}

/// The host died at its crash point; starts it again, without the crash point, on the same
/// state (and servers).
fn restart_after_crash(mut host: Host) -> Host {
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.is_running() {
        assert!(Instant::now() < deadline, "the host did not crash");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        host.log().contains(CRASH_ENV),
        "the host died, but not at its crash point:\n{}",
        host.log()
    );
    host.config.env.retain(|(name, _)| name != CRASH_ENV);
    host.restart()
}

fn same_session(host: &Host, client: &Client) -> Client {
    let mut again = host.client();
    again.cookie = client.cookie.clone();
    again
}

/// The host dies right after an order wins its ticket's reservation, before `order.created`
/// is out (the client gets no answer). After the restart the order is there and its event
/// arrives: the tickets service marks the ticket reserved by it.
fn an_order_is_announced_after_a_crash(config: HostConfig) {
    let host = crashing_on(config, "order.created").start();
    let mut seller = host.client();
    seller.sign_up();
    let ticket = seller
        .post("/api/tickets", json!({"title": "Outbox", "price": 7}))
        .json();
    let ticket_id = ticket["id"].as_str().unwrap().to_owned();
    let mut buyer = host.client();
    buyer.sign_up();
    // Orders learns of the ticket through ticket.created; then the order's write crashes
    // the host.
    eventually("the order crashes the host", || {
        match buyer.try_post("/api/orders", json!({"ticketId": ticket_id})) {
            Ok(reply) if reply.status == 404 => None,
            Ok(reply) => panic!("the order was answered: {} {}", reply.status, reply.body),
            Err(_) => Some(()),
        }
    });

    let host = restart_after_crash(host);
    let mut buyer = same_session(&host, &buyer);
    let orders = buyer.get("/api/orders").json();
    let orders = orders.as_array().unwrap();
    assert_eq!(orders.len(), 1, "the order was written: {orders:?}");
    let order_id = orders[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(orders[0]["status"], "created");

    let ticket_path = format!("/api/tickets/{ticket_id}");
    eventually_within(
        AFTER_RESTART,
        "the ticket shows the order that reserved it",
        || {
            let ticket = buyer.get(&ticket_path).json();
            (ticket["orderId"] == order_id.as_str()).then_some(())
        },
    );
    // And the order is a whole one: it can be paid.
    let paid = buyer.post(
        "/api/payments",
        json!({"orderId": order_id, "token": "tok_visa"}),
    );
    assert_eq!(paid.status, 201, "{}", paid.body);
    eventually_within(AFTER_RESTART, "the paid order completes", || {
        let order = buyer.get(&format!("/api/orders/{order_id}")).json();
        (order["status"] == "complete").then_some(())
    });
}

/// The host dies right after a ticket is stored, before `ticket.created` is out. After the
/// restart the ticket is listed and the orders service learns of it: it can be ordered.
fn a_ticket_is_announced_after_a_crash(config: HostConfig) {
    let host = crashing_on(config, "ticket.created").start();
    let mut seller = host.client();
    seller.sign_up();
    let answer = seller.try_post("/api/tickets", json!({"title": "Relayed", "price": 9}));
    assert!(answer.is_err(), "the create was answered: {answer:?}");

    let host = restart_after_crash(host);
    let listed = host.client().get("/api/tickets").json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "the ticket was written: {listed:?}");
    assert_eq!(listed[0]["title"], "Relayed");
    let ticket_id = listed[0]["id"].as_str().unwrap().to_owned();

    let mut buyer = host.client();
    buyer.sign_up();
    let order = eventually_within(AFTER_RESTART, "the orders service knows the ticket", || {
        let reply = buyer.post("/api/orders", json!({"ticketId": ticket_id}));
        (reply.status == 201).then(|| reply.json())
    });
    assert_eq!(order["ticket"]["title"], "Relayed");
}

#[test]
fn an_order_is_announced_after_a_crash_on_the_embedded_default() {
    let (_servers, config) = embedded();
    an_order_is_announced_after_a_crash(config);
}

#[test]
fn an_order_is_announced_after_a_crash_on_nats_and_redis() {
    let (_servers, config) = nats_and_redis();
    an_order_is_announced_after_a_crash(config);
}

#[test]
fn a_ticket_is_announced_after_a_crash_on_the_embedded_default() {
    let (_servers, config) = embedded();
    a_ticket_is_announced_after_a_crash(config);
}

#[test]
fn a_ticket_is_announced_after_a_crash_on_nats_and_redis() {
    let (_servers, config) = nats_and_redis();
    a_ticket_is_announced_after_a_crash(config);
}

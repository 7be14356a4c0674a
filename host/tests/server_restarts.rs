//! Fault injection: NATS and then Redis are SIGKILLed and restarted (same port, same data)
//! while buyers order and pay. The host reconnects by itself; during each outage requests
//! fail fast with a JSON 503 (never a 500, never a hang); and afterwards the books balance
//! (`support::traffic::audit`): every order a client saw created ends `complete` or
//! `cancelled`, every paid order is `complete`, no ticket is sold twice, a ticket whose
//! orders all ended cancelled is on sale again, and every order's events, its expiration
//! included, are in the stream once.
//!
//! Redis runs with `appendonly yes` + `appendfsync always`, as docs/DESIGN.md asks of a
//! deployment; NATS keeps its JetStream store on disk.
mod support;

use std::time::Duration;

use support::traffic::*;
use support::*;

const TICKETS: usize = 24;
const BUYERS: usize = 4;
/// Long enough that a payment made right after its order is applied before the order
/// expires, even when the outage holds `payment.created` back for a while.
const WINDOW_SECONDS: u64 = 25;

#[test]
fn nats_and_redis_restarts_lose_nothing_and_sell_nothing_twice() {
    let mut nats = Nats::start();
    let mut redis = Redis::start_persistent();
    let host = HostConfig::app(Backend::Redis(redis.url()))
        .var("nats_url", &nats.url())
        .var("timers_url", &redis.url())
        .var("expiration_window_seconds", &WINDOW_SECONDS.to_string())
        .start();

    let tickets = tickets_on_sale(&host, TICKETS, "Show");
    let buyers = buyers_on(&host, BUYERS);
    let window = Duration::from_secs(WINDOW_SECONDS);
    let traffic = Traffic::start(buyers, &tickets, window, Duration::ZERO);

    let pause = || std::thread::sleep(Duration::from_secs(3));
    pause();
    nats.kill();
    pause();
    nats.restart();
    pause();
    redis.kill();
    pause();
    redis.restart();
    pause();
    let (mut buyers, seen) = traffic.stop();

    println!(
        "orders placed: {}, paid: {}, cancelled: {}, answered 503 during the outages: {}",
        seen.created.len(),
        seen.paid.len(),
        seen.cancelled.len(),
        seen.unavailable
    );
    // The books, once every order has had its time (window, relay, redelivery).
    let books = Books {
        seen: &seen,
        tickets: &tickets,
        nats_url: Some(&nats.url()),
        stripe: None,
        settle: window + Duration::from_secs(60),
    };
    audit(&books, &mut buyers, &mut host.client(), &|| host.log());
    assert!(
        seen.unavailable > 0,
        "the Redis outage was never answered 503: was the traffic running?"
    );
}

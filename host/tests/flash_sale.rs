//! A flash sale: many buyers race for few tickets, each ordering, then paying for, cancelling
//! or leaving its order to expire, on the embedded default and on NATS + Redis. Then the
//! books are audited (`support::traffic::audit`): no ticket sold twice, every paid order
//! complete and charged once, every order ended, every ticket held by its buyer or on sale
//! again; and no payment for an order its buyer holds was answered 404 (API.md: 409 while the
//! order may still reach the payments service). The bench's `--only flash` measures the same
//! sale's speed; this test asserts only what buyers rely on.
mod support;

use std::time::Duration;

use support::stripe::StripeFake;
use support::traffic::*;
use support::*;

const TICKETS: usize = 6;
const BUYERS: usize = 24;
/// Short, so that orders left unpaid expire during the test and their tickets sell again.
const WINDOW_SECONDS: u32 = 8;
const SALE: Duration = Duration::from_secs(10);

fn flash_sale(platform: Platform) {
    let stripe = StripeFake::start();
    let host = platform.host(WINDOW_SECONDS, &stripe).start();
    let tickets = tickets_on_sale(&host, TICKETS, "Seat");
    let buyers = buyers_on(&host, BUYERS);
    let window = Duration::from_secs(WINDOW_SECONDS.into());
    let traffic = Traffic::start(buyers, &tickets, window, Duration::ZERO);
    std::thread::sleep(SALE);
    let (mut buyers, seen) = traffic.stop();

    assert!(
        seen.created.len() > TICKETS,
        "tickets given back (cancelled or expired) sold again: {} orders for {TICKETS} tickets",
        seen.created.len()
    );
    assert!(!seen.paid.is_empty(), "no payment was accepted");
    assert_eq!(
        seen.payment_not_found, 0,
        "payments answered 404 for orders their buyers held"
    );
    let nats_url = match &platform {
        Platform::Embedded => None,
        Platform::Servers { nats, .. } => Some(nats.url()),
    };
    let books = Books {
        seen: &seen,
        tickets: &tickets,
        nats_url: nats_url.as_deref(),
        stripe: Some(&stripe),
        settle: window + Duration::from_secs(30),
    };
    audit(&books, &mut buyers, &mut host.client(), &|| host.log());
}

#[test]
fn a_flash_sale_on_the_embedded_default_sells_each_ticket_once() {
    flash_sale(Platform::Embedded);
}

#[test]
fn a_flash_sale_on_nats_and_redis_sells_each_ticket_once() {
    flash_sale(Platform::servers());
}

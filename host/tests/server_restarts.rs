//! Fault injection: NATS and then Redis are SIGKILLed and restarted (same port, same data)
//! while buyers order and pay. The host reconnects by itself; during each outage requests
//! fail fast with a JSON 503 (never a 500, never a hang); and afterwards the books balance:
//! every order a client saw created ends `complete` or `cancelled`, every paid order is
//! `complete`, no ticket is sold twice, a ticket whose orders all ended cancelled is on sale
//! again, and every order's expiration fired exactly once.
//!
//! Redis runs with `appendonly yes` + `appendfsync always`, as docs/DESIGN.md asks of a
//! deployment; NATS keeps its JetStream store on disk.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use support::*;

const TICKETS: usize = 24;
const BUYERS: usize = 4;
/// Long enough that a payment made right after its order is applied before the order
/// expires, even when the outage holds `payment.created` back for a while.
const WINDOW_SECONDS: u64 = 25;
/// A request may take this long at most, outage or not: far below the host's 30 s request
/// timeout, which a request waiting on a dead server would run into.
const NO_HANG: Duration = Duration::from_secs(20);

/// What the buyers saw.
#[derive(Default)]
struct Seen {
    /// Orders answered 201: id → ticket id.
    created: BTreeMap<String, String>,
    /// Orders whose payment was answered 201.
    paid: BTreeSet<String>,
    /// Orders whose cancellation was answered 204.
    cancelled: BTreeSet<String>,
    /// How many answers were a 503 (outages).
    unavailable: usize,
    /// Answers that break the contract, with what was asked.
    wrong: Vec<String>,
}

/// Checks one answer: a status the route may give, a JSON body, no hang.
fn check(seen: &Mutex<Seen>, what: &str, answer: &Result<Reply, String>, took: Duration) {
    let mut seen = seen.lock().unwrap();
    if took > NO_HANG {
        seen.wrong.push(format!("{what}: took {took:?}"));
    }
    let reply = match answer {
        Ok(reply) => reply,
        Err(error) => {
            seen.wrong.push(format!("{what}: no answer: {error}"));
            return;
        }
    };
    if serde_json::from_str::<Value>(&reply.body).is_err() && reply.status != 204 {
        seen.wrong.push(format!(
            "{what}: {} with a body that is not JSON: {:?}",
            reply.status, reply.body
        ));
    }
    match reply.status {
        200..=499 => {}
        503 => {
            seen.unavailable += 1;
            if reply.header("content-type") != Some("application/json") {
                seen.wrong
                    .push(format!("{what}: 503 without a JSON content type"));
            }
        }
        status => seen.wrong.push(format!("{what}: {status} {}", reply.body)),
    }
}

/// One buyer's loop until `stop`: order a ticket (round robin), then pay, cancel or leave
/// the order in turn.
fn buy(
    mut buyer: Client,
    tickets: Vec<String>,
    turn: usize,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> Client {
    let mut n = turn;
    while !stop.load(Ordering::Relaxed) {
        let ticket_id = &tickets[n % tickets.len()];
        n += 1;
        let started = Instant::now();
        let answer = buyer.try_post("/api/orders", json!({"ticketId": ticket_id}));
        check(&seen, "POST /api/orders", &answer, started.elapsed());
        let Ok(reply) = answer else { continue };
        if reply.status != 201 {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
        let order_id = reply.json()["id"].as_str().unwrap().to_owned();
        seen.lock()
            .unwrap()
            .created
            .insert(order_id.clone(), ticket_id.clone());
        match n % 3 {
            // Left to expire.
            0 => continue,
            // Cancelled by its buyer, which gives the ticket back at once.
            1 => {
                let path = format!("/api/orders/{order_id}");
                let started = Instant::now();
                let answer = buyer.try_send("DELETE", &path, None, None);
                check(&seen, "DELETE /api/orders/:id", &answer, started.elapsed());
                if answer.is_ok_and(|reply| reply.status == 204) {
                    seen.lock().unwrap().cancelled.insert(order_id);
                }
                continue;
            }
            // Paid.
            _ => {}
        }
        // Paying needs the payments service's copy of the order (order.created): retry
        // until it has one, as a client would.
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let started = Instant::now();
            let answer = buyer.try_post(
                "/api/payments",
                json!({"orderId": order_id, "token": "tok_visa"}),
            );
            check(&seen, "POST /api/payments", &answer, started.elapsed());
            match answer {
                Ok(reply) if reply.status == 201 => {
                    seen.lock().unwrap().paid.insert(order_id.clone());
                    break;
                }
                // Not known to payments yet, or an outage: try again.
                Ok(reply) if reply.status == 404 || reply.status == 503 => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                _ => break,
            }
        }
    }
    buyer
}

/// Every `expiration.complete` in the stream, by order id.
fn expirations_in_stream(nats_url: &str) -> BTreeMap<String, usize> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(nats_url).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        let stream = jetstream.get_stream("TICKETING").await.unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                filter_subject: "ticketing.expiration.complete".into(),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut counts = BTreeMap::new();
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1000)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .unwrap();
            let mut got = 0;
            while let Some(message) = batch.next().await {
                let message = message.unwrap();
                let event: Value = serde_json::from_slice(&message.payload).unwrap();
                *counts
                    .entry(event["orderId"].as_str().unwrap().to_owned())
                    .or_insert(0) += 1;
                got += 1;
            }
            if got == 0 {
                break;
            }
        }
        counts
    })
}

#[test]
fn nats_and_redis_restarts_lose_nothing_and_sell_nothing_twice() {
    let mut nats = Nats::start();
    let mut redis = Redis::start_persistent();
    let host = HostConfig::app(Backend::Redis(redis.url()))
        .var("nats_url", &nats.url())
        .var("timers_url", &redis.url())
        .var("expiration_window_seconds", &WINDOW_SECONDS.to_string())
        .start();

    let mut seller = host.client();
    seller.sign_up();
    let tickets: Vec<String> = (0..TICKETS)
        .map(|n| {
            let ticket = seller
                .post(
                    "/api/tickets",
                    json!({"title": format!("Show {n}"), "price": 10 + n}),
                )
                .json();
            ticket["id"].as_str().unwrap().to_owned()
        })
        .collect();
    // Every ticket known to the orders service before the traffic starts.
    let mut probe = host.client();
    probe.sign_up();
    for ticket_id in &tickets {
        let order = eventually("orders knows the ticket", || {
            let reply = probe.post("/api/orders", json!({"ticketId": ticket_id}));
            (reply.status != 404).then(|| reply.json())
        });
        // The probe's order gives the ticket back at once.
        let cancelled = probe.delete(&format!("/api/orders/{}", order["id"].as_str().unwrap()));
        assert_eq!(cancelled.status, 204, "{}", cancelled.body);
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let buyers: Vec<_> = (0..BUYERS)
        .map(|turn| {
            let mut buyer = host.client();
            buyer.sign_up();
            let (tickets, seen, stop) = (tickets.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || buy(buyer, tickets, turn, seen, stop))
        })
        .collect();

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
    stop.store(true, Ordering::Relaxed);
    let buyers: Vec<Client> = buyers
        .into_iter()
        .map(|buyer| buyer.join().unwrap())
        .collect();

    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    assert!(
        seen.wrong.is_empty(),
        "answers that break the contract:\n{}\n--- host log:\n{}",
        seen.wrong.join("\n"),
        host.log()
    );
    println!(
        "orders placed: {}, paid: {}, cancelled: {}, answered 503 during the outages: {}",
        seen.created.len(),
        seen.paid.len(),
        seen.cancelled.len(),
        seen.unavailable
    );
    assert!(!seen.created.is_empty(), "no order was placed");
    assert!(
        seen.unavailable > 0,
        "the Redis outage was never answered 503: was the traffic running?"
    );

    // The books, once every order has had its time (window, relay, redelivery).
    let mut buyers: Vec<Client> = buyers;
    let deadline = Instant::now() + Duration::from_secs(WINDOW_SECONDS + 60);
    let orders: BTreeMap<String, Value> = loop {
        let orders: BTreeMap<String, Value> = buyers
            .iter_mut()
            .flat_map(|buyer| buyer.get("/api/orders").json().as_array().unwrap().clone())
            .map(|order| (order["id"].as_str().unwrap().to_owned(), order))
            .collect();
        let open: Vec<&String> = seen
            .created
            .keys()
            .filter(|id| {
                !orders.get(*id).is_some_and(|order| {
                    order["status"] == "complete" || order["status"] == "cancelled"
                })
            })
            .collect();
        if open.is_empty() {
            break orders;
        }
        assert!(
            Instant::now() < deadline,
            "orders seen created that never ended complete or cancelled: {open:?}\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for id in &seen.paid {
        assert_eq!(
            orders[id]["status"], "complete",
            "a paid order: {}",
            orders[id]
        );
    }
    let mut complete_by_ticket: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, order) in &orders {
        if order["status"] == "complete" {
            complete_by_ticket
                .entry(order["ticket"]["id"].as_str().unwrap())
                .or_default()
                .push(id);
        }
    }
    for (ticket, sold) in &complete_by_ticket {
        assert_eq!(
            sold.len(),
            1,
            "ticket {ticket} sold to several orders: {sold:?}"
        );
    }
    // Tickets: sold ones name their order; the others are on sale again.
    let mut reader = host.client();
    for ticket_id in &tickets {
        let sold_to = complete_by_ticket
            .get(ticket_id.as_str())
            .map(|sold| sold[0]);
        let path = format!("/api/tickets/{ticket_id}");
        let mut last = Value::Null;
        let settled = (0..120).any(|_| {
            last = reader.get(&path).json();
            let holder = last["orderId"].as_str();
            let ok = match sold_to {
                Some(order) => holder == Some(order),
                None => holder.is_none(),
            };
            if !ok {
                std::thread::sleep(Duration::from_millis(500));
            }
            ok
        });
        assert!(
            settled,
            "ticket {ticket_id} should be sold to {sold_to:?}: {last}"
        );
    }
    // The timer of every order left to expire fired, once; a paid or cancelled order's
    // timer is dropped by its event, or fired before that (and changed nothing). The stream
    // drops repeats by message id, so a timer firing twice would show as two events.
    let unpaid: Vec<&String> = seen
        .created
        .keys()
        .filter(|id| !seen.paid.contains(*id) && !seen.cancelled.contains(*id))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(WINDOW_SECONDS + 60);
    let expirations = loop {
        let expirations = expirations_in_stream(&nats.url());
        if unpaid.iter().all(|id| expirations.contains_key(*id)) {
            break expirations;
        }
        assert!(
            Instant::now() < deadline,
            "the timers of some unpaid orders never fired: {unpaid:?}, fired: {expirations:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    for (id, fired) in &expirations {
        assert_eq!(*fired, 1, "expiration.complete events of order {id}");
    }
}

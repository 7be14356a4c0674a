//! Traffic while servers fail, and the audit of the books afterwards. Buyers order tickets
//! and pay for, cancel or leave each order to expire, recording what every answer said; once
//! the orders have had their time, every order, ticket, event and charge is checked against
//! what the buyers were told. Shared by the tests that kill servers mid-traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use super::stripe::StripeFake;
use super::*;

/// A request may take this long at most, outage or not: far below the host's 30 s request
/// timeout, which a request waiting on a dead server would run into.
pub const NO_HANG: Duration = Duration::from_secs(20);

/// What the buyers saw.
#[derive(Default)]
pub struct Seen {
    /// Orders answered 201: id → ticket id.
    pub created: BTreeMap<String, String>,
    /// Orders whose payment was answered 201.
    pub paid: BTreeSet<String>,
    /// Orders whose cancellation was answered 204.
    pub cancelled: BTreeSet<String>,
    /// When each order was answered 201, in order.
    pub orders_at: Vec<Instant>,
    /// When each payment was answered 201, in order.
    pub payments_at: Vec<Instant>,
    /// How many answers were a 503 (a store did not answer).
    pub unavailable: usize,
    /// How many payments were a 409 (the order had not reached the payments service yet).
    pub not_ready: usize,
    /// Payments refused with 400 "Order has expired" (tried until the order's end).
    pub too_late: usize,
    /// Payments answered 404 for an order its buyer got a 201 for: API.md promises a 409
    /// instead while the order may still reach the payments service.
    pub payment_not_found: usize,
    /// Answers that break the contract, with what was asked.
    pub wrong: Vec<String>,
}

impl Seen {
    /// The longest stretch within `from..to` without one of `events` (e.g. `orders_at`):
    /// from `from` to the first, between two, from the last to `to`.
    pub fn longest_gap(events: &[Instant], from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut longest = Duration::ZERO;
        for &at in events.iter().filter(|&&at| at > from && at <= to) {
            longest = longest.max(at - last);
            last = at;
        }
        longest.max(to.saturating_duration_since(last))
    }
}

/// Checks one answer: a status the route may give, a JSON body, no hang.
pub fn check(seen: &Mutex<Seen>, what: &str, answer: &Result<Reply, String>, took: Duration) {
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

/// Ticket ids the orders service knows: an order for each (then cancelled, which gives the
/// ticket back at once) succeeds before the traffic starts.
pub fn wait_until_orderable(probe: &mut Client, tickets: &[String]) {
    for ticket_id in tickets {
        let order = eventually("orders knows the ticket", || {
            let reply = probe.post("/api/orders", json!({"ticketId": ticket_id}));
            (reply.status != 404).then(|| reply.json())
        });
        let cancelled = probe.delete(&format!("/api/orders/{}", order["id"].as_str().unwrap()));
        assert_eq!(cancelled.status, 204, "{}", cancelled.body);
    }
}

/// `n` tickets put on sale on `host` by a new seller, each known to the orders service.
pub fn tickets_on_sale(host: &Host, n: usize, title: &str) -> Vec<String> {
    let mut seller = host.client();
    seller.sign_up();
    let tickets = super::scenarios::create_tickets(&mut seller, n, title);
    let mut probe = host.client();
    probe.sign_up();
    wait_until_orderable(&mut probe, &tickets);
    tickets
}

/// `n` buyers signed up on `host`, one session each, as `Traffic::start` takes them.
pub fn buyers_on(host: &Host, n: usize) -> Vec<Vec<Client>> {
    (0..n)
        .map(|_| {
            let mut buyer = host.client();
            buyer.sign_up();
            vec![buyer]
        })
        .collect()
}

/// Buyers at work on threads until `stop`.
pub struct Traffic {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    buyers: Vec<JoinHandle<Vec<Client>>>,
}

impl Traffic {
    /// One thread per buyer. A buyer is one session on one or more hosts (the same cookie on
    /// each); it orders on one host and pays for or cancels the order on the next, round
    /// robin. `window` is the order window (payments are tried until it is over); `pace` is
    /// a pause between a buyer's orders.
    pub fn start(
        buyers: Vec<Vec<Client>>,
        tickets: &[String],
        window: Duration,
        pace: Duration,
    ) -> Traffic {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let buyers = buyers
            .into_iter()
            .enumerate()
            .map(|(turn, sessions)| {
                let (tickets, seen, stop) = (tickets.to_vec(), seen.clone(), stop.clone());
                std::thread::spawn(move || {
                    buy(sessions, &tickets, turn, window, pace, &seen, &stop)
                })
            })
            .collect();
        Traffic { seen, stop, buyers }
    }

    /// What the buyers have seen so far.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    /// Stops the buyers; their first sessions and what they saw.
    pub fn stop(self) -> (Vec<Client>, Seen) {
        self.stop.store(true, Ordering::Relaxed);
        let buyers = self
            .buyers
            .into_iter()
            .map(|buyer| buyer.join().unwrap().remove(0))
            .collect();
        let seen = Arc::try_unwrap(self.seen)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap();
        (buyers, seen)
    }
}

/// One buyer's loop until `stop`: order a ticket (round robin), then pay for, cancel or leave
/// the order in turn. A payment goes on a thread of its own (it may have to wait for its
/// order to reach the payments service), so the buyer goes on ordering meanwhile.
fn buy(
    mut sessions: Vec<Client>,
    tickets: &[String],
    turn: usize,
    window: Duration,
    pace: Duration,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) -> Vec<Client> {
    let hosts = sessions.len();
    let mut n = turn;
    // What becomes of an order goes by the buyer's count of orders, not by the ticket, so
    // that every ticket sees all three.
    let mut placed_orders = turn;
    std::thread::scope(|payers| {
        while !stop.load(Ordering::Relaxed) {
            let ticket_id = &tickets[n % tickets.len()];
            n += 1;
            std::thread::sleep(pace);
            let started = Instant::now();
            let answer =
                sessions[n % hosts].try_post("/api/orders", json!({"ticketId": ticket_id}));
            check(seen, "POST /api/orders", &answer, started.elapsed());
            let Ok(reply) = answer else { continue };
            if reply.status != 201 {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let placed = Instant::now();
            std::thread::sleep(Duration::from_millis(100));
            let order_id = reply.json()["id"].as_str().unwrap().to_owned();
            {
                let mut seen = seen.lock().unwrap();
                seen.created.insert(order_id.clone(), ticket_id.clone());
                seen.orders_at.push(placed);
            }
            let other = &mut sessions[(n + 1) % hosts];
            placed_orders += 1;
            match placed_orders % 3 {
                // Left to expire.
                0 => {}
                // Cancelled by its buyer, which gives the ticket back at once.
                1 => {
                    let path = format!("/api/orders/{order_id}");
                    let started = Instant::now();
                    let answer = other.try_send("DELETE", &path, None, None);
                    check(seen, "DELETE /api/orders/:id", &answer, started.elapsed());
                    if answer.is_ok_and(|reply| reply.status == 204) {
                        seen.lock().unwrap().cancelled.insert(order_id);
                    }
                }
                // Paid, until the order's time is up.
                _ => {
                    let mut payer = other.clone();
                    let deadline = placed + window + Duration::from_secs(5);
                    payers.spawn(move || pay(&mut payer, &order_id, deadline, seen, stop));
                }
            }
        }
    });
    sessions
}

/// Pays for an order. Paying needs the payments service's copy of the order
/// (order.created): retried while the answer says so, as a client would, until `deadline`
/// (past the order's end, the answer is "Order has expired").
fn pay(
    payer: &mut Client,
    order_id: &str,
    deadline: Instant,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) {
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let answer = payer.try_post(
            "/api/payments",
            json!({"orderId": order_id, "token": "tok_visa"}),
        );
        check(seen, "POST /api/payments", &answer, started.elapsed());
        match answer {
            Ok(reply) if reply.status == 201 => {
                let mut seen = seen.lock().unwrap();
                seen.paid.insert(order_id.to_owned());
                seen.payments_at.push(Instant::now());
                return;
            }
            // Not known to payments yet, or an outage: try again.
            Ok(reply) if [404, 409, 503].contains(&reply.status) => {
                match reply.status {
                    409 => seen.lock().unwrap().not_ready += 1,
                    404 => seen.lock().unwrap().payment_not_found += 1,
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(200))
            }
            Ok(reply) if reply.status == 400 && reply.body.contains("Order has expired") => {
                seen.lock().unwrap().too_late += 1;
                return;
            }
            _ => return,
        }
    }
}

/// The app's stream, through any of the comma-separated servers of `nats_url`.
pub async fn ticketing_stream(nats_url: &str) -> async_nats::jetstream::stream::Stream {
    let servers: Vec<&str> = nats_url.split(',').collect();
    let client = async_nats::connect(servers).await.unwrap();
    async_nats::jetstream::new(client)
        .get_stream("TICKETING")
        .await
        .expect("the stream")
}

/// The stream's messages, as (subject, JSON payload), read from any of the comma-separated
/// servers of `nats_url`.
pub fn stream_events(nats_url: &str) -> Vec<(String, Value)> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let stream = ticketing_stream(nats_url).await;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut events = Vec::new();
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
                let payload = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
                events.push((message.subject.to_string(), payload));
                got += 1;
            }
            if got == 0 {
                break events;
            }
        }
    })
}

/// How many events of each kind (the subject without its `ticketing.` prefix) the stream
/// has per entity: the order of order and payment events, the ticket of ticket events.
pub fn event_counts(events: &[(String, Value)]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for (subject, payload) in events {
        let kind = subject.strip_prefix("ticketing.").unwrap_or(subject);
        let entity = match kind {
            "expiration.complete" | "payment.created" | "payment.expired" | "payment.refunded" => {
                &payload["orderId"]
            }
            _ => &payload["id"],
        };
        let entity = entity.as_str().unwrap_or("?").to_owned();
        *counts.entry((kind.to_owned(), entity)).or_default() += 1;
    }
    counts
}

/// The events of one ticket in stream order, with the status each order ended in (for
/// failure messages).
fn ticket_history(
    events: &[(String, Value)],
    ticket_id: &str,
    orders: &BTreeMap<String, Value>,
) -> Vec<String> {
    events
        .iter()
        .filter(|(_, payload)| payload["id"] == ticket_id || payload["ticket"]["id"] == ticket_id)
        .map(|(subject, payload)| {
            let kind = subject.strip_prefix("ticketing.").unwrap_or(subject);
            if payload["ticket"]["id"] == ticket_id {
                let order = payload["id"].as_str().unwrap_or("?");
                let status = orders.get(order).map(|o| o["status"].clone());
                format!("{kind} order {order} (ended {status:?})")
            } else {
                format!(
                    "{kind} version {} orderId {}",
                    payload["version"], payload["orderId"]
                )
            }
        })
        .collect()
}

/// What the books are checked against.
pub struct Books<'a> {
    pub seen: &'a Seen,
    /// Every ticket the buyers ordered.
    pub tickets: &'a [String],
    /// The NATS server(s) the stream is on; none on the embedded bus, whose events are not
    /// read back.
    pub nats_url: Option<&'a str>,
    /// The Stripe stand-in the payments went to, if not the test mode.
    pub stripe: Option<&'a StripeFake>,
    /// How long the orders may take to end once the traffic has stopped (the order window
    /// plus whatever the outages held back).
    pub settle: Duration,
}

/// The audit, once the traffic has stopped: every answer kept the contract; every order seen
/// created ends `complete` or `cancelled` within `settle` (nothing lost or stuck); a paid
/// order is complete, a cancelled one cancelled; no ticket is sold twice, a sold ticket is
/// held by its order and every other one is on sale again; the stream has each order's
/// events once (created; paid, or cancelled; its expiry at most once, exactly once for an
/// order left to expire), no refund and nothing dead-lettered; with the Stripe stand-in,
/// every paid order was charged (under one idempotency key) and nothing else was.
#[track_caller]
pub fn audit(books: &Books, buyers: &mut [Client], reader: &mut Client, logs: &dyn Fn() -> String) {
    let seen = books.seen;
    assert!(
        seen.wrong.is_empty(),
        "answers that break the contract:\n{}\n{}",
        seen.wrong.join("\n"),
        logs()
    );
    assert!(!seen.created.is_empty(), "no order was placed");

    // Orders: all ended.
    let deadline = Instant::now() + books.settle;
    let orders: BTreeMap<String, Value> = loop {
        let orders: BTreeMap<String, Value> = buyers
            .iter_mut()
            .flat_map(|buyer| buyer.get_all("/api/orders?limit=100"))
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
            "orders seen created that never ended complete or cancelled within {:?}: \
             {open:?}\n{}",
            books.settle,
            logs()
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
    for id in &seen.cancelled {
        assert_eq!(
            orders[id]["status"], "cancelled",
            "an order its buyer cancelled: {}",
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
    let holder_wanted = |ticket_id: &str| {
        complete_by_ticket
            .get(ticket_id)
            .map(|sold| sold[0].to_owned())
    };
    let deadline = Instant::now() + books.settle;
    let unsettled: Vec<(String, Value)> = loop {
        let unsettled: Vec<(String, Value)> = books
            .tickets
            .iter()
            .filter_map(|ticket_id| {
                let shown = reader.get(&format!("/api/tickets/{ticket_id}")).json();
                let holder = shown["orderId"].as_str().map(str::to_owned);
                (holder != holder_wanted(ticket_id)).then(|| (ticket_id.clone(), shown))
            })
            .collect();
        if unsettled.is_empty() || Instant::now() > deadline {
            break unsettled;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !unsettled.is_empty() {
        let events = books.nats_url.map(stream_events).unwrap_or_default();
        let report: Vec<String> = unsettled
            .iter()
            .map(|(ticket_id, shown)| {
                format!(
                    "ticket {ticket_id} should be held by {:?}, shows {shown}; its events in \
                     stream order:\n  {}",
                    holder_wanted(ticket_id),
                    ticket_history(&events, ticket_id, &orders).join("\n  ")
                )
            })
            .collect();
        panic!("tickets not as their orders ended:\n{}", report.join("\n"));
    }

    // Events (the embedded bus keeps none to read back).
    if let Some(nats_url) = books.nats_url {
        each_event_once(&stream_events(nats_url), &orders, seen);
    }

    // Charges: one idempotency key per paid order, nothing else charged or refunded.
    if let Some(stripe) = books.stripe {
        let requests = stripe.charges();
        let problems: Vec<&String> = requests.iter().filter_map(|r| r.problem.as_ref()).collect();
        assert!(
            problems.is_empty(),
            "Stripe requests it would refuse: {problems:?}"
        );
        let refunds = requests.iter().filter(|r| r.path == "/v1/refunds").count();
        assert_eq!(refunds, 0, "no paid order was refunded");
        let mut charged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for request in requests.iter().filter(|r| r.path == "/v1/charges") {
            let key = request.idempotency_key.clone().unwrap_or_default();
            let order = key
                .strip_prefix("ticketing-order-")
                .and_then(|rest| rest.split('-').next())
                .unwrap_or_default()
                .to_owned();
            charged.entry(order).or_default().insert(key);
        }
        for id in &seen.paid {
            assert!(charged.contains_key(id), "paid order {id} was not charged");
        }
        for (order, keys) in &charged {
            assert_eq!(keys.len(), 1, "order {order} charged under {keys:?}");
            assert_eq!(
                orders.get(order).map(|o| o["status"].clone()),
                Some(json!("complete")),
                "order {order} was charged"
            );
        }
    }
}

/// Each order's events are in the stream once. The stream drops repeats within its
/// duplicate window by message id, so an event published twice later than that, or by two
/// writers with two ids, shows as two.
#[track_caller]
fn each_event_once(events: &[(String, Value)], orders: &BTreeMap<String, Value>, seen: &Seen) {
    let counts = event_counts(events);
    let count = |kind: &str, id: &str| {
        counts
            .get(&(kind.to_owned(), id.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    for (id, order) in orders {
        if !seen.created.contains_key(id) {
            continue;
        }
        let complete = order["status"] == "complete";
        let left_to_expire = !complete && !seen.cancelled.contains(id);
        let summary = format!(
            "order {id} ({}): created {}, payment.created {}, order.cancelled {}, \
             expiration.complete {}, payment.expired {}, payment.refunded {}",
            order["status"],
            count("order.created", id),
            count("payment.created", id),
            count("order.cancelled", id),
            count("expiration.complete", id),
            count("payment.expired", id),
            count("payment.refunded", id),
        );
        assert_eq!(count("order.created", id), 1, "{summary}");
        assert_eq!(
            count("payment.created", id),
            usize::from(complete),
            "{summary}"
        );
        assert_eq!(
            count("order.cancelled", id),
            usize::from(!complete),
            "{summary}"
        );
        assert_eq!(count("payment.refunded", id), 0, "{summary}");
        if left_to_expire {
            assert_eq!(count("expiration.complete", id), 1, "{summary}");
            assert_eq!(count("payment.expired", id), 1, "{summary}");
        } else {
            assert!(count("expiration.complete", id) <= 1, "{summary}");
            assert!(count("payment.expired", id) <= 1, "{summary}");
        }
    }
    let dead: Vec<&(String, Value)> = events
        .iter()
        .filter(|(subject, _)| subject.ends_with(".dead-letter"))
        .collect();
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
}

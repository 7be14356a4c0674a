//! Event handling through real NATS JetStream: ordering, redelivery, dead letters, timers
//! shared by two hosts, and a host killed mid-flow.
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// (subject, payload) of every message seen on a subscription, in arrival order.
type Recording = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A test's own NATS connection: JetStream publishes like a service would, and a core
/// subscription that sees every publish on a subject (duplicates included).
struct Bus {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
}

impl Bus {
    fn connect(nats: &Nats) -> Bus {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = runtime.block_on(async_nats::connect(nats.url())).unwrap();
        Bus { runtime, client }
    }

    fn jetstream(&self) -> async_nats::jetstream::Context {
        let _in_runtime = self.runtime.enter();
        async_nats::jetstream::new(self.client.clone())
    }

    fn publish(&self, subject: &str, payload: Value, message_id: &str) {
        let js = self.jetstream();
        self.runtime.block_on(async {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", message_id);
            js.publish_with_headers(subject.to_string(), headers, payload.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
    }

    fn publish_raw(&self, subject: &str, payload: &'static [u8]) {
        let js = self.jetstream();
        self.runtime.block_on(async {
            js.publish(subject.to_string(), payload.into())
                .await
                .unwrap()
                .await
                .unwrap()
        });
    }

    /// Every message published on `subject` from now on, as it arrives.
    fn record(&self, subject: &str) -> Recording {
        let seen: Recording = Arc::default();
        let mut sub = self
            .runtime
            .block_on(self.client.subscribe(subject.to_string()))
            .unwrap();
        self.runtime.block_on(self.client.flush()).unwrap();
        let sink = seen.clone();
        self.runtime.spawn(async move {
            use futures_util::StreamExt;
            while let Some(m) = sub.next().await {
                sink.lock()
                    .unwrap()
                    .push((m.subject.to_string(), m.payload.to_vec()));
            }
        });
        seen
    }
}

fn servers_host(nats: &Nats, redis: &Redis, window_secs: u32) -> HostConfig {
    HostConfig::app(Backend::Redis(redis.url()))
        .var("nats_url", &nats.url())
        .var("timers_url", &redis.url())
        .var("expiration_window_seconds", &window_secs.to_string())
}

fn new_id(n: u8) -> String {
    // A well-formed id the services have never seen.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    format!("{secs:08x}{:08x}{n:08x}", std::process::id())
}

fn ticket_event(id: &str, version: u32, title: &str, owner: &str) -> Value {
    json!({"id": id, "version": version, "title": title, "price": 10, "userId": owner})
}

/// Orders the ticket until the order shows the ticket at `version` (cancelling orders that
/// caught an older copy), and returns the ticket as the orders service has it.
fn ticket_copy_at(buyer: &mut Client, ticket_id: &str, version: u64) -> Value {
    eventually("the orders service's copy reaches the version", || {
        let r = buyer.post("/api/orders", json!({"ticketId": ticket_id}));
        if r.status != 201 {
            return None;
        }
        let order = r.json();
        if order["ticket"]["version"] == version {
            return Some(order["ticket"].clone());
        }
        assert!(
            order["ticket"]["version"].as_u64().unwrap() < version,
            "never ahead: {order}"
        );
        buyer.delete(&format!("/api/orders/{}", order["id"].as_str().unwrap()));
        None
    })
}

#[test]
fn ticket_updates_arriving_out_of_order_are_applied_in_order() {
    let (nats, redis) = (Nats::start(), Redis::start());
    let host = servers_host(&nats, &redis, 900).start();
    let bus = Bus::connect(&nats);
    let id = new_id(1);
    let owner = new_id(2);
    // Newest first: orders must hold back v2 and v1 until it has v0.
    bus.publish(
        "ticketing.ticket.updated",
        ticket_event(&id, 2, "third", &owner),
        &format!("t-{id}-2"),
    );
    bus.publish(
        "ticketing.ticket.updated",
        ticket_event(&id, 1, "second", &owner),
        &format!("t-{id}-1"),
    );
    bus.publish(
        "ticketing.ticket.created",
        ticket_event(&id, 0, "first", &owner),
        &format!("t-{id}-0"),
    );
    let mut buyer = host.client();
    buyer.sign_up();
    let copy = ticket_copy_at(&mut buyer, &id, 2);
    assert_eq!(copy["title"], "third");
}

#[test]
fn a_redelivered_event_changes_nothing_twice() {
    let (nats, redis) = (Nats::start(), Redis::start());
    let host = servers_host(&nats, &redis, 900).start();
    let bus = Bus::connect(&nats);
    let id = new_id(3);
    let owner = new_id(4);
    bus.publish(
        "ticketing.ticket.created",
        ticket_event(&id, 0, "first", &owner),
        &format!("a-{id}-0"),
    );
    bus.publish(
        "ticketing.ticket.updated",
        ticket_event(&id, 1, "second", &owner),
        &format!("a-{id}-1"),
    );
    // The same update again, as a redelivery would bring it (a new message id, so JetStream
    // stores it again and the consumer sees it twice).
    bus.publish(
        "ticketing.ticket.updated",
        ticket_event(&id, 1, "second", &owner),
        &format!("b-{id}-1"),
    );
    bus.publish(
        "ticketing.ticket.created",
        ticket_event(&id, 0, "first", &owner),
        &format!("b-{id}-0"),
    );
    let mut buyer = host.client();
    buyer.sign_up();
    let copy = ticket_copy_at(&mut buyer, &id, 1);
    assert_eq!(copy["title"], "second");
    std::thread::sleep(Duration::from_secs(1));
    let order = buyer.get("/api/orders").json();
    let last = order.as_array().unwrap().last().unwrap();
    assert_eq!(last["ticket"]["version"], 1, "still version 1");
}

#[test]
fn the_stream_keeps_events_for_a_week_by_default() {
    let (nats, redis) = (Nats::start(), Redis::start());
    let _host = servers_host(&nats, &redis, 900).start();
    let bus = Bus::connect(&nats);
    let js = bus.jetstream();
    let config = bus.runtime.block_on(async {
        let mut stream = js.get_stream("TICKETING").await.unwrap();
        stream.info().await.unwrap().config.clone()
    });
    assert_eq!(config.max_age, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(config.subjects, ["ticketing.>"]);
}

#[test]
fn a_custom_events_prefix_carries_the_events_end_to_end() {
    let (nats, redis) = (Nats::start(), Redis::start());
    let host = servers_host(&nats, &redis, 900)
        .var("events_prefix", "acme.prod")
        .start();
    let bus = Bus::connect(&nats);
    let (custom, default) = (bus.record("acme.prod.>"), bus.record("ticketing.>"));
    let mut seller = host.client();
    seller.sign_up();
    let ticket = seller
        .post("/api/tickets", json!({"title": "Prefixed", "price": 5}))
        .json();
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    let mut buyer = host.client();
    buyer.sign_up();
    // The orders service heard ticket.created, and the tickets service order.created.
    let order = eventually("the orders service knows the ticket", || {
        let r = buyer.post("/api/orders", json!({"ticketId": ticket["id"]}));
        (r.status == 201).then(|| r.json())
    });
    eventually("the ticket shows the order", || {
        (buyer.get(&ticket_path).json()["orderId"] == order["id"]).then_some(())
    });
    // The ticket shows the order once the tickets service has written it; its
    // ticket.updated goes out after that write, and reaches the recorder a moment later.
    let expected = [
        "acme.prod.ticket.created",
        "acme.prod.order.created",
        "acme.prod.ticket.updated",
    ];
    eventually("every event recorded under the custom prefix", || {
        let subjects: Vec<String> = custom.lock().unwrap().iter().map(|m| m.0.clone()).collect();
        expected
            .iter()
            .all(|expected| subjects.iter().any(|s| s == expected))
            .then_some(())
    });
    assert!(
        default.lock().unwrap().is_empty(),
        "nothing under the default prefix"
    );
}

#[test]
fn a_poison_message_ends_in_the_dead_letter_subject() {
    let (nats, redis) = (Nats::start(), Redis::start());
    let host = servers_host(&nats, &redis, 900).start();
    let bus = Bus::connect(&nats);
    let dead = bus.record("ticketing.dead-letter.>");
    bus.publish_raw("ticketing.ticket.created", b"{not json");
    let (subject, payload) = eventually("a dead letter", || dead.lock().unwrap().first().cloned());
    assert_eq!(subject, "ticketing.dead-letter.orders");
    assert_eq!(payload, b"{not json");
    assert!(host.log().contains("dead"), "the dead letter is logged");
    // The platform keeps working.
    let mut c = host.client();
    c.sign_up();
    assert_eq!(
        c.post("/api/tickets", json!({"title": "After", "price": 1}))
            .status,
        201
    );
}

#[test]
fn expirations_fire_once_with_two_hosts_sharing_nats_and_redis() {
    let (nats, redis) = (Nats::start(), Redis::start());
    let first = servers_host(&nats, &redis, 2).start();
    let second = servers_host(&nats, &redis, 2).start();
    let bus = Bus::connect(&nats);
    let fired = bus.record("ticketing.expiration.complete");
    let cancelled = bus.record("ticketing.order.cancelled");

    let mut order_ids = vec![];
    for (i, host) in [&first, &second, &first, &second, &first, &second]
        .into_iter()
        .enumerate()
    {
        let mut seller = host.client();
        seller.sign_up();
        let ticket = seller
            .post(
                "/api/tickets",
                json!({"title": format!("t{i}"), "price": 5}),
            )
            .json();
        let mut buyer = host.client();
        buyer.sign_up();
        let order = eventually("orders knows the ticket", || {
            let r = buyer.post("/api/orders", json!({"ticketId": ticket["id"]}));
            (r.status == 201).then(|| r.json())
        });
        order_ids.push(order["id"].as_str().unwrap().to_string());
    }
    eventually("every order is cancelled", || {
        let seen = cancelled.lock().unwrap();
        order_ids
            .iter()
            .all(|id| {
                seen.iter()
                    .any(|(_, p)| String::from_utf8_lossy(p).contains(id.as_str()))
            })
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut fires: HashMap<String, usize> = HashMap::new();
    for (_, payload) in fired.lock().unwrap().iter() {
        let v: Value = serde_json::from_slice(payload).unwrap();
        *fires
            .entry(v["orderId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for id in &order_ids {
        assert_eq!(
            fires.get(id),
            Some(&1),
            "order {id} expired exactly once: {fires:?}"
        );
    }
    let cancels = cancelled.lock().unwrap().len();
    assert_eq!(cancels, order_ids.len(), "one order.cancelled per order");
}

/// Kills the host (SIGKILL) right after an order is placed; after a restart the order, its
/// events and its timer are all still there: the order expires and the ticket is released.
fn killed_mid_flow(config: HostConfig) {
    let host = config.start();
    let mut seller = host.client();
    seller.sign_up();
    let ticket = seller
        .post("/api/tickets", json!({"title": "Crash", "price": 5}))
        .json();
    let mut buyer = host.client();
    buyer.sign_up();
    let order = eventually("orders knows the ticket", || {
        let r = buyer.post("/api/orders", json!({"ticketId": ticket["id"]}));
        (r.status == 201).then(|| r.json())
    });
    host.signal("KILL");
    let host = host.restart();
    let mut buyer_again = host.client();
    buyer_again.cookie = buyer.cookie.clone();
    let order_path = format!("/api/orders/{}", order["id"].as_str().unwrap());
    assert_eq!(
        buyer_again.get(&order_path).json()["id"],
        order["id"],
        "the order survived"
    );
    eventually("the order expires after the restart", || {
        (buyer_again.get(&order_path).json()["status"] == "cancelled").then_some(())
    });
    // The ticket is on sale again: reserved then released (version 2), or never reserved
    // (version 0) when the order's cancellation reached the tickets service before its
    // creation, which the kill may have left for redelivery.
    let ticket_path = format!("/api/tickets/{}", ticket["id"].as_str().unwrap());
    eventually("the ticket is on sale again", || {
        let t = buyer_again.get(&ticket_path).json();
        let version = t["version"].as_u64();
        (t.get("orderId").is_none() && matches!(version, Some(0 | 2))).then_some(())
    });
}

#[test]
fn a_host_killed_mid_flow_loses_nothing_on_nats_and_redis() {
    let (nats, redis) = (Nats::start(), Redis::start());
    killed_mid_flow(servers_host(&nats, &redis, 3));
}

#[test]
fn a_host_killed_mid_flow_loses_nothing_on_the_embedded_default() {
    killed_mid_flow(HostConfig::app(Backend::Embedded).var("expiration_window_seconds", "3"));
}

//! One conformance suite for both event buses: the embedded queue (a temp state file) and
//! NATS JetStream (a real `nats-server` each test starts on a free port and stops when done).
//!
//! Buses are built the way the host builds them, through `event_bus::open`.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::Nats;

use ticketing_host::backends::event_bus::{
    self, Consumer, ConsumerOptions, Delivery, Event, EventBus, StreamConfig,
};
use ticketing_host::backends::key_value::EmbeddedState;

/// How long a check waits for something that should arrive.
const ARRIVES: Duration = Duration::from_secs(10);
/// How long a check waits to be confident that nothing more arrives.
const QUIET: Duration = Duration::from_millis(700);

/// Keeps whatever a bus needs (temp dirs, a server process) alive for one test, and can
/// "restart the host": drop every handle and open the bus again on the same data.
struct Fixture {
    bus: Option<Arc<dyn EventBus>>,
    state: Option<EmbeddedState>,
    state_dir: tempfile::TempDir,
    nats: Option<Nats>,
}

impl Fixture {
    async fn embedded() -> Fixture {
        let mut fixture = Fixture {
            bus: None,
            state: None,
            state_dir: tempfile::tempdir().unwrap(),
            nats: None,
        };
        fixture.open().await;
        fixture
    }

    async fn nats() -> Fixture {
        let mut fixture = Fixture {
            bus: None,
            state: None,
            state_dir: tempfile::tempdir().unwrap(),
            nats: Some(Nats::start()),
        };
        fixture.open().await;
        fixture
    }

    async fn open(&mut self) {
        let state = EmbeddedState::open(self.state_dir.path().join("state.redb")).unwrap();
        let url = self.nats.as_ref().map(Nats::url).unwrap_or_default();
        let bus = event_bus::open(&url, &StreamConfig::default(), &state)
            .await
            .unwrap_or_else(|error| {
                let log = self.nats.as_ref().map(Nats::log).unwrap_or_default();
                panic!("opening the bus: {error:#}\n{log}")
            });
        self.bus = Some(bus);
        self.state = Some(state);
    }

    fn bus(&self) -> &dyn EventBus {
        self.bus.as_deref().unwrap()
    }

    /// Drops the bus (the caller must have dropped its consumers) and opens it again on the
    /// same state file or server, like a host restart.
    async fn restart(&mut self) {
        self.bus = None;
        self.state = None;
        self.open().await;
    }
}

fn options(max_deliver: u32, ack_wait: Duration) -> ConsumerOptions {
    ConsumerOptions {
        max_deliver,
        ack_wait,
    }
}

fn long_ack_wait() -> ConsumerOptions {
    options(5, Duration::from_secs(30))
}

fn event(subject: &str, body: &str) -> Event {
    Event {
        subject: subject.to_owned(),
        payload: body.as_bytes().to_vec(),
        message_id: format!("{subject}:{body}"),
    }
}

async fn next_within(consumer: &mut dyn Consumer, wait: Duration) -> Option<Delivery> {
    match tokio::time::timeout(wait, consumer.next()).await {
        Ok(delivery) => Some(delivery.expect("consumer error")),
        Err(_) => None,
    }
}

async fn expect_next(consumer: &mut dyn Consumer) -> Delivery {
    next_within(consumer, ARRIVES)
        .await
        .expect("no delivery within 10 s")
}

async fn expect_nothing(consumer: &mut dyn Consumer) {
    if let Some(delivery) = next_within(consumer, QUIET).await {
        panic!("unexpected delivery: {delivery:?}");
    }
}

fn text(delivery: &Delivery) -> &str {
    std::str::from_utf8(&delivery.payload).unwrap()
}

/// The conformance suite: each check runs against each bus.
macro_rules! conformance_suite {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;

            conformance_suite!(@tests $fixture;
                publish_consume_ack,
                events_arrive_in_publish_order,
                nak_redelivers_after_its_delay,
                acked_events_are_not_redelivered,
                ack_wait_expiry_redelivers,
                in_progress_keeps_a_delivery_past_ack_wait,
                duplicate_message_ids_are_dropped,
                every_consumer_gets_every_event,
                one_durable_consumer_shared_by_two_handles_handles_each_event_once,
                max_deliver_is_respected,
                term_stops_delivery,
                wildcard_filters,
                publishing_or_consuming_outside_the_stream_fails,
                events_wait_for_a_consumer_across_a_restart,
                unacked_deliveries_survive_a_restart,
            );
        }
    };
    (@tests $fixture:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let mut fixture = $fixture.await;
                checks::$check(&mut fixture).await;
            }
        )+
    };
}

conformance_suite!(embedded, Fixture::embedded());
conformance_suite!(nats, Fixture::nats());

mod checks {
    use super::*;

    pub async fn publish_consume_ack(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let mut consumer = bus
            .consume(
                "orders-ticket_created",
                "ticketing.ticket.created",
                &long_ack_wait(),
            )
            .await
            .unwrap();
        bus.publish(Event {
            subject: "ticketing.ticket.created".into(),
            payload: br#"{"id":"t1","version":0}"#.to_vec(),
            message_id: "ticketing.ticket.created:t1:0".into(),
        })
        .await
        .unwrap();

        let delivery = expect_next(&mut *consumer).await;
        assert_eq!(delivery.subject, "ticketing.ticket.created");
        assert_eq!(delivery.payload, br#"{"id":"t1","version":0}"#);
        assert_eq!(delivery.delivered, 1);
        delivery.ack().await.unwrap();
        expect_nothing(&mut *consumer).await;
    }

    pub async fn events_arrive_in_publish_order(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let mut consumer = bus
            .consume("c", "ticketing.>", &long_ack_wait())
            .await
            .unwrap();
        for i in 0..10 {
            bus.publish(event("ticketing.order.created", &i.to_string()))
                .await
                .unwrap();
        }
        let mut sequences = Vec::new();
        for i in 0..10 {
            let delivery = expect_next(&mut *consumer).await;
            assert_eq!(text(&delivery), i.to_string());
            sequences.push(delivery.sequence);
            delivery.ack().await.unwrap();
        }
        assert!(
            sequences.windows(2).all(|pair| pair[0] < pair[1]),
            "{sequences:?}"
        );
    }

    pub async fn nak_redelivers_after_its_delay(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let mut consumer = bus
            .consume("c", "ticketing.>", &long_ack_wait())
            .await
            .unwrap();
        bus.publish(event("ticketing.order.created", "o1"))
            .await
            .unwrap();

        let first = expect_next(&mut *consumer).await;
        assert_eq!(first.delivered, 1);
        let sequence = first.sequence;
        let delay = Duration::from_millis(500);
        let nak_at = Instant::now();
        first.nak(delay).await.unwrap();

        let second = expect_next(&mut *consumer).await;
        let waited = nak_at.elapsed();
        assert!(
            waited >= delay - Duration::from_millis(50),
            "redelivered after {waited:?}"
        );
        assert_eq!(second.delivered, 2);
        assert_eq!(second.sequence, sequence);
        assert_eq!(text(&second), "o1");
        second.ack().await.unwrap();
        expect_nothing(&mut *consumer).await;
    }

    pub async fn acked_events_are_not_redelivered(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let ack_wait = Duration::from_millis(500);
        let mut consumer = bus
            .consume("c", "ticketing.>", &options(5, ack_wait))
            .await
            .unwrap();
        bus.publish(event("ticketing.order.created", "o1"))
            .await
            .unwrap();
        expect_next(&mut *consumer).await.ack().await.unwrap();
        // Well past ack_wait: an acknowledged event stays acknowledged.
        tokio::time::sleep(ack_wait * 2).await;
        expect_nothing(&mut *consumer).await;
    }

    pub async fn ack_wait_expiry_redelivers(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let ack_wait = Duration::from_secs(1);
        let mut consumer = bus
            .consume("c", "ticketing.>", &options(5, ack_wait))
            .await
            .unwrap();
        bus.publish(event("ticketing.order.created", "o1"))
            .await
            .unwrap();

        let first = expect_next(&mut *consumer).await;
        let received_at = Instant::now();
        let sequence = first.sequence;
        drop(first); // never settled, like a handler that died

        let second = expect_next(&mut *consumer).await;
        let waited = received_at.elapsed();
        assert!(
            waited >= ack_wait - Duration::from_millis(100),
            "redelivered after {waited:?}"
        );
        assert_eq!((second.delivered, second.sequence), (2, sequence));
        second.ack().await.unwrap();
    }

    /// A handler that runs longer than `ack_wait` keeps its delivery with in-progress
    /// acknowledgements (the slack between them and `ack_wait` is seconds, for a loaded
    /// machine).
    pub async fn in_progress_keeps_a_delivery_past_ack_wait(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let ack_wait = Duration::from_secs(3);
        let mut consumer = bus
            .consume("c", "ticketing.>", &options(5, ack_wait))
            .await
            .unwrap();
        bus.publish(event("ticketing.order.created", "o1"))
            .await
            .unwrap();
        let delivery = expect_next(&mut *consumer).await;
        let started = Instant::now();
        while started.elapsed() < ack_wait * 2 {
            delivery.in_progress().await.unwrap();
            if let Some(again) = next_within(&mut *consumer, Duration::from_millis(300)).await {
                panic!("delivered again while in progress: {again:?}");
            }
        }
        delivery.ack().await.unwrap();
        expect_nothing(&mut *consumer).await;
    }

    pub async fn duplicate_message_ids_are_dropped(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let mut consumer = bus
            .consume("c", "ticketing.>", &long_ack_wait())
            .await
            .unwrap();
        let original = Event {
            subject: "ticketing.ticket.updated".into(),
            payload: b"first".to_vec(),
            message_id: "ticketing.ticket.updated:t1:1".into(),
        };
        bus.publish(original.clone()).await.unwrap();
        // A retried publish (same id, even with another body) is dropped, and still Ok.
        bus.publish(Event {
            payload: b"retried".to_vec(),
            ..original.clone()
        })
        .await
        .unwrap();
        // Another id is another event.
        bus.publish(Event {
            payload: b"next version".to_vec(),
            message_id: "ticketing.ticket.updated:t1:2".into(),
            ..original
        })
        .await
        .unwrap();

        let first = expect_next(&mut *consumer).await;
        assert_eq!(text(&first), "first");
        first.ack().await.unwrap();
        let second = expect_next(&mut *consumer).await;
        assert_eq!(text(&second), "next version");
        second.ack().await.unwrap();
        expect_nothing(&mut *consumer).await;
    }

    pub async fn every_consumer_gets_every_event(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let mut tickets = bus
            .consume(
                "tickets-order_created",
                "ticketing.order.created",
                &long_ack_wait(),
            )
            .await
            .unwrap();
        let mut payments = bus
            .consume(
                "payments-order_created",
                "ticketing.order.created",
                &long_ack_wait(),
            )
            .await
            .unwrap();
        for i in 0..5 {
            bus.publish(event("ticketing.order.created", &i.to_string()))
                .await
                .unwrap();
        }
        for consumer in [&mut tickets, &mut payments] {
            let mut seen = Vec::new();
            for _ in 0..5 {
                let delivery = expect_next(&mut **consumer).await;
                seen.push(text(&delivery).to_owned());
                delivery.ack().await.unwrap();
            }
            assert_eq!(seen, ["0", "1", "2", "3", "4"]);
            expect_nothing(&mut **consumer).await;
        }
    }

    pub async fn one_durable_consumer_shared_by_two_handles_handles_each_event_once(
        fixture: &mut Fixture,
    ) {
        const EVENTS: usize = 40;
        let bus = fixture.bus();
        // Two replicas of one component: two handles on one durable name.
        let handles = [
            bus.consume("orders-shared", "ticketing.>", &long_ack_wait())
                .await
                .unwrap(),
            bus.consume("orders-shared", "ticketing.>", &long_ack_wait())
                .await
                .unwrap(),
        ];
        for i in 0..EVENTS {
            bus.publish(event("ticketing.ticket.created", &i.to_string()))
                .await
                .unwrap();
        }
        let workers = handles.map(|mut consumer| {
            tokio::spawn(async move {
                let mut handled = Vec::new();
                while let Some(delivery) = next_within(&mut *consumer, QUIET * 2).await {
                    handled.push(text(&delivery).to_owned());
                    delivery.ack().await.unwrap();
                }
                handled
            })
        });
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.unwrap());
        }
        let distinct: BTreeSet<&String> = all.iter().collect();
        assert_eq!(
            all.len(),
            EVENTS,
            "each event handled exactly once: {all:?}"
        );
        assert_eq!(distinct.len(), EVENTS);
    }

    pub async fn max_deliver_is_respected(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let mut consumer = bus
            .consume("c", "ticketing.>", &options(3, Duration::from_secs(1)))
            .await
            .unwrap();
        bus.publish(event("ticketing.order.created", "poison"))
            .await
            .unwrap();

        // Two naks and one expired ack_wait: three deliveries in all, then no more.
        let first = expect_next(&mut *consumer).await;
        first.nak(Duration::ZERO).await.unwrap();
        let second = expect_next(&mut *consumer).await;
        second.nak(Duration::from_millis(100)).await.unwrap();
        let third = expect_next(&mut *consumer).await;
        assert_eq!(third.delivered, 3);
        drop(third);
        tokio::time::sleep(Duration::from_secs(1)).await;
        expect_nothing(&mut *consumer).await;

        // Later events still flow.
        bus.publish(event("ticketing.order.created", "fine"))
            .await
            .unwrap();
        let next = expect_next(&mut *consumer).await;
        assert_eq!((text(&next), next.delivered), ("fine", 1));
        next.ack().await.unwrap();
    }

    pub async fn term_stops_delivery(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let mut consumer = bus
            .consume("c", "ticketing.>", &options(5, Duration::from_millis(500)))
            .await
            .unwrap();
        bus.publish(event("ticketing.order.created", "bad"))
            .await
            .unwrap();
        expect_next(&mut *consumer).await.term().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        expect_nothing(&mut *consumer).await;
    }

    pub async fn wildcard_filters(fixture: &mut Fixture) {
        let bus = fixture.bus();
        let mut orders = bus
            .consume("orders-any", "ticketing.order.*", &long_ack_wait())
            .await
            .unwrap();
        let mut created = bus
            .consume("created-any", "ticketing.*.created", &long_ack_wait())
            .await
            .unwrap();
        let mut everything = bus
            .consume("all", "ticketing.>", &long_ack_wait())
            .await
            .unwrap();
        let subjects = [
            "ticketing.order.created",
            "ticketing.ticket.created",
            "ticketing.order.cancelled",
            "ticketing.order.created.v2",
        ];
        for subject in subjects {
            bus.publish(event(subject, "x")).await.unwrap();
        }

        async fn drain(consumer: &mut dyn Consumer) -> Vec<String> {
            let mut subjects = Vec::new();
            while let Some(delivery) = next_within(consumer, QUIET).await {
                subjects.push(delivery.subject.clone());
                delivery.ack().await.unwrap();
            }
            subjects
        }
        assert_eq!(
            drain(&mut *orders).await,
            ["ticketing.order.created", "ticketing.order.cancelled"]
        );
        assert_eq!(
            drain(&mut *created).await,
            ["ticketing.order.created", "ticketing.ticket.created"]
        );
        assert_eq!(drain(&mut *everything).await, subjects);
    }

    pub async fn publishing_or_consuming_outside_the_stream_fails(fixture: &mut Fixture) {
        let bus = fixture.bus();
        assert!(bus
            .publish(event("elsewhere.order.created", "x"))
            .await
            .is_err());
        assert!(bus.publish(event("ticketing.order.*", "x")).await.is_err());
        assert!(bus
            .consume("bad.name", "ticketing.>", &long_ack_wait())
            .await
            .is_err());
        // A filter the stream does not cover could never receive anything.
        assert!(bus
            .consume("elsewhere", "elsewhere.>", &long_ack_wait())
            .await
            .is_err());
        assert!(bus
            .consume("too-wide", ">", &long_ack_wait())
            .await
            .is_err());
    }

    pub async fn events_wait_for_a_consumer_across_a_restart(fixture: &mut Fixture) {
        // Registered once, then the host stops polling (and restarts): the consumer is
        // durable, so what is published meanwhile waits for it.
        drop(
            fixture
                .bus()
                .consume(
                    "expiration-order_created",
                    "ticketing.order.created",
                    &long_ack_wait(),
                )
                .await
                .unwrap(),
        );
        for i in 0..3 {
            fixture
                .bus()
                .publish(event("ticketing.order.created", &i.to_string()))
                .await
                .unwrap();
        }
        fixture.restart().await;

        let mut consumer = fixture
            .bus()
            .consume(
                "expiration-order_created",
                "ticketing.order.created",
                &long_ack_wait(),
            )
            .await
            .unwrap();
        for i in 0..3 {
            let delivery = expect_next(&mut *consumer).await;
            assert_eq!((text(&delivery), delivery.delivered), (&*i.to_string(), 1));
            delivery.ack().await.unwrap();
        }
        expect_nothing(&mut *consumer).await;
    }

    pub async fn unacked_deliveries_survive_a_restart(fixture: &mut Fixture) {
        let ack_wait = Duration::from_secs(2);
        let mut consumer = fixture
            .bus()
            .consume("c", "ticketing.>", &options(5, ack_wait))
            .await
            .unwrap();
        for body in ["acked", "in-flight", "never-delivered"] {
            fixture
                .bus()
                .publish(event("ticketing.order.created", body))
                .await
                .unwrap();
        }
        expect_next(&mut *consumer).await.ack().await.unwrap();
        let in_flight = expect_next(&mut *consumer).await;
        assert_eq!(text(&in_flight), "in-flight");
        // The host dies mid-handler: nothing is settled.
        drop(in_flight);
        drop(consumer);
        fixture.restart().await;

        let mut consumer = fixture
            .bus()
            .consume("c", "ticketing.>", &options(5, ack_wait))
            .await
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let delivery = expect_next(&mut *consumer).await;
            seen.push((text(&delivery).to_owned(), delivery.delivered));
            delivery.ack().await.unwrap();
        }
        seen.sort();
        assert_eq!(seen[0], ("in-flight".to_owned(), 2));
        // JetStream may have sent it to the old host already (pulled in a batch), which
        // counts as a delivery.
        assert_eq!(seen[1].0, "never-delivered");
        assert!((1..=2).contains(&seen[1].1), "{seen:?}");
        expect_nothing(&mut *consumer).await;
    }
}

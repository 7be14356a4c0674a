//! The events on a three-node NATS JetStream cluster (nats-server's own clustering, on
//! loopback), as deploy/ runs them: hosts on one Redis, `nats_url` naming all three servers
//! and `nats_stream_replicas` = 3. The stream's leader is SIGKILLed mid-traffic and later
//! restarted, twice. While a new leader is elected, publishing fails (the services' outboxes
//! keep the events, timers retry); afterwards the books balance (`support::traffic::audit`):
//! nothing lost, stuck or doubled, every accepted payment's order complete with its ticket,
//! every other order complete or cancelled with its ticket back on sale. A host also starts,
//! and fails over, with a server of its list down.
//!
//! Timing is reported, never asserted: the bounds below only catch a cluster or a host that
//! never recovers, on a machine that may be busy.
mod support;

use std::time::{Duration, Instant};

use support::nats_cluster::NatsCluster;
use support::stripe::{StripeFake, SECRET_KEY};
use support::traffic::*;
use support::*;

const STREAM: &str = "TICKETING";
const TICKETS: usize = 150;
const BUYERS: usize = 4;
const WINDOW_SECONDS: u64 = 30;
/// A pause before each of a buyer's orders: traffic enough to see each second of an outage,
/// and tickets enough that they do not sell out before the end.
const PACE: Duration = Duration::from_millis(400);
/// How long a leader election or a restarted node's catching up may take at most.
const CLUSTER_BOUND: Duration = Duration::from_secs(180);
/// The name the hosts' NATS connections carry (`/connz`).
const HOST_CONNECTION: &str = "ticketing-host";

/// A host of the app on `cluster` and `redis`, paying through `stripe`.
fn host_config(cluster: &NatsCluster, redis: &Redis, stripe: &StripeFake) -> HostConfig {
    HostConfig::app(Backend::Redis(redis.url()))
        .var("nats_url", &cluster.urls())
        .var("nats_stream_replicas", "3")
        .var("timers_url", &redis.url())
        .var("expiration_window_seconds", &WINDOW_SECONDS.to_string())
        .var("stripe_secret_key", SECRET_KEY)
        .var("stripe_api_base", &stripe.base_url())
}

/// Which node each host's connection is on, e.g. "nats-0: 1, nats-1: 0, nats-2: 1".
fn host_connections(cluster: &NatsCluster) -> String {
    (0..cluster.nodes.len())
        .map(|i| {
            format!(
                "{}: {}",
                cluster.nodes[i].name,
                cluster.connections(i, HOST_CONNECTION)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One kill of the stream's leader, as it went.
struct LeaderKill {
    node: String,
    killed_at: Instant,
    /// From the kill to a new leader.
    elected: Duration,
    new_leader: String,
    /// From the restart to every peer of the stream caught up.
    caught_up: Duration,
    /// The end of this round (the next kill, or the end of the traffic).
    ended_at: Instant,
    /// Where the hosts' connections were before the kill, and after it.
    connections: String,
    connections_after: String,
}

#[test]
fn killing_the_stream_leader_twice_loses_no_event_and_no_paid_order() {
    let mut cluster = NatsCluster::start(3);
    let redis = Redis::start_persistent();
    let stripe = StripeFake::start();
    let config = host_config(&cluster, &redis, &stripe);
    let host_a = config.clone().start();

    // The first host created the stream with three replicas, one on each node.
    let leader = cluster.wait_for_stream_leader(STREAM, None, CLUSTER_BOUND);
    let view = cluster.stream_view(leader, STREAM).unwrap();
    assert_eq!(view.num_replicas, 3, "{view:?}");
    let mut peers: Vec<String> = view.replicas.iter().map(|(name, _)| name.clone()).collect();
    peers.push(view.leader.clone());
    peers.sort();
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    assert_eq!(peers, nodes, "the stream's peers: {view:?}");
    let host_b = config.start();

    let mut seller = host_a.client();
    seller.sign_up();
    let tickets = scenarios::create_tickets(&mut seller, TICKETS, "Show");
    let mut probe = host_b.client();
    probe.sign_up();
    wait_until_orderable(&mut probe, &tickets);

    // Each buyer signs up on one host, orders on one and pays on the other.
    let buyers: Vec<Vec<Client>> = (0..BUYERS)
        .map(|i| {
            let (first, second) = if i % 2 == 0 {
                (&host_a, &host_b)
            } else {
                (&host_b, &host_a)
            };
            let mut buyer = first.client();
            buyer.sign_up();
            let other = buyer.on(second);
            vec![buyer, other]
        })
        .collect();
    let window = Duration::from_secs(WINDOW_SECONDS);
    let started = Instant::now();
    let traffic = Traffic::start(buyers, &tickets, window, PACE);
    let pause = || std::thread::sleep(Duration::from_secs(5));

    pause();
    let mut kills: Vec<LeaderKill> = Vec::new();
    for round in 0..2 {
        // The first time, the leader also holds host connections (leadership is moved there
        // if need be), so that hosts fail over while the stream elects a new leader; the
        // second time, whichever node leads then.
        for _ in 0..20 {
            let leader = cluster.wait_for_stream_leader(STREAM, None, CLUSTER_BOUND);
            if round > 0 || cluster.connections(leader, HOST_CONNECTION) > 0 {
                break;
            }
            cluster.step_down(STREAM);
        }
        let leader = cluster.wait_for_stream_leader(STREAM, None, CLUSTER_BOUND);
        let connections = host_connections(&cluster);
        let killed_at = Instant::now();
        if let Some(previous) = kills.last_mut() {
            previous.ended_at = killed_at;
        }
        cluster.kill(leader);
        let new_leader = cluster.wait_for_stream_leader(STREAM, Some(leader), CLUSTER_BOUND);
        let elected = killed_at.elapsed();
        // The traffic goes on with two nodes for a while, then the third comes back.
        pause();
        let connections_after = host_connections(&cluster);
        cluster.restart(leader);
        let restarted_at = Instant::now();
        cluster.wait_until_stream_current(STREAM, CLUSTER_BOUND);
        kills.push(LeaderKill {
            node: cluster.nodes[leader].name.clone(),
            killed_at,
            elected,
            new_leader: cluster.nodes[new_leader].name.clone(),
            caught_up: restarted_at.elapsed(),
            ended_at: Instant::now(),
            connections,
            connections_after,
        });
        pause();
    }
    let (mut buyers, seen) = traffic.stop();
    let stopped = Instant::now();
    if let Some(last) = kills.last_mut() {
        last.ended_at = stopped;
    }

    println!(
        "orders placed: {}, paid: {}, cancelled by their buyers: {}, payments answered 409 \
         (order not there yet): {}, payments too late: {}, 503s: {}",
        seen.created.len(),
        seen.paid.len(),
        seen.cancelled.len(),
        seen.not_ready,
        seen.too_late,
        seen.unavailable
    );
    for (n, kill) in kills.iter().enumerate() {
        let since = |at: Instant| format!("{:.1} s", (at - started).as_secs_f64());
        let first_order = seen
            .orders_at
            .iter()
            .find(|&&at| at > kill.killed_at)
            .map(|&at| format!("{:.2} s", (at - kill.killed_at).as_secs_f64()))
            .unwrap_or_else(|| "none".into());
        println!(
            "leader kill {}: {} SIGKILLed at {} (host connections before: {}; after: {}); new \
             leader {} after {:.1} s; the restarted node caught up in {:.1} s. From the kill to {}: \
             longest time without a successful order {:.2} s (first one {} after the kill), \
             without an accepted payment {:.2} s",
            n + 1,
            kill.node,
            since(kill.killed_at),
            kill.connections,
            kill.connections_after,
            kill.new_leader,
            kill.elected.as_secs_f64(),
            kill.caught_up.as_secs_f64(),
            since(kill.ended_at),
            Seen::longest_gap(&seen.orders_at, kill.killed_at, kill.ended_at).as_secs_f64(),
            first_order,
            Seen::longest_gap(&seen.payments_at, kill.killed_at, kill.ended_at).as_secs_f64(),
        );
    }
    println!(
        "whole run ({:.1} s): longest time without a successful order {:.2} s, without an \
         accepted payment {:.2} s",
        (stopped - started).as_secs_f64(),
        Seen::longest_gap(&seen.orders_at, started, stopped).as_secs_f64(),
        Seen::longest_gap(&seen.payments_at, started, stopped).as_secs_f64(),
    );
    assert!(!seen.paid.is_empty(), "no payment was accepted");

    let books = Books {
        seen: &seen,
        tickets: &tickets,
        nats_url: Some(&cluster.urls()),
        stripe: Some(&stripe),
        settle: window + Duration::from_secs(120),
    };
    let logs = || format!("{}\n{}\n{}", host_a.log(), host_b.log(), cluster.logs());
    audit(&books, &mut buyers, &mut host_a.client(), &logs);

    // What a copy of the stream takes, for sizing the servers' volumes.
    let leader = cluster.wait_for_stream_leader(STREAM, None, CLUSTER_BOUND);
    let view = cluster.stream_view(leader, STREAM).unwrap();
    println!(
        "the stream: {} events, {} bytes ({} per event)",
        view.messages,
        view.bytes,
        view.bytes / view.messages.max(1),
    );
}

/// Whether the host's readiness probe passes.
fn ready(admin: u16) -> bool {
    ureq::get(&format!("http://127.0.0.1:{admin}/readyz"))
        .call()
        .is_ok_and(|reply| reply.status() == 200)
}

/// A ticket sold on `host` from start to end: put on sale, ordered, paid, the order complete
/// and the ticket held by it.
fn purchase(host: &Host) {
    let bound = Duration::from_secs(120);
    let mut seller = host.client();
    seller.sign_up();
    let ticket = scenarios::create_tickets(&mut seller, 1, "Failover").remove(0);
    let mut buyer = host.client();
    buyer.sign_up();
    let order = eventually_within(bound, "an order for the ticket", || {
        let reply = buyer.post("/api/orders", json!({"ticketId": ticket}));
        assert!([201, 404].contains(&reply.status), "{}", reply.body);
        (reply.status == 201).then(|| reply.json()["id"].as_str().unwrap().to_owned())
    });
    eventually_within(bound, "the payment accepted", || {
        let reply = buyer.post(
            "/api/payments",
            json!({"orderId": order, "token": "tok_visa"}),
        );
        assert!([201, 404, 409].contains(&reply.status), "{}", reply.body);
        (reply.status == 201).then_some(())
    });
    eventually_within(bound, "the order complete", || {
        let shown = buyer.get(&format!("/api/orders/{order}")).json();
        (shown["status"] == "complete").then_some(())
    });
    // The tickets service reserves the ticket from the order's event, apart from the
    // payment's path.
    eventually_within(bound, "the ticket held by the order", || {
        let shown = buyer.get(&format!("/api/tickets/{ticket}")).json();
        (shown["orderId"] == order.as_str()).then_some(())
    });
}

#[test]
fn a_host_starts_and_fails_over_with_a_server_of_its_list_down() {
    let mut cluster = NatsCluster::start(3);
    let redis = Redis::start();
    let stripe = StripeFake::start();
    let config = host_config(&cluster, &redis, &stripe);
    // The stream is created while every node is up: JetStream places a stream of three
    // replicas on three running nodes, and refuses to create it with one down.
    let mut first = config.clone().start();
    cluster.wait_for_stream_leader(STREAM, None, CLUSTER_BOUND);
    first.stop();

    // The first server of the host's list is down when it starts. (Once the cluster has
    // recovered from the loss: a host that starts while the cluster's meta leader, the
    // stream's or a consumer's is being elected again exits, as its JetStream requests
    // time out.)
    assert!(cluster.urls().starts_with(&cluster.nodes[0].url()));
    cluster.kill(0);
    cluster.wait_for_meta_leader();
    cluster.wait_for_stream_leader(STREAM, Some(0), CLUSTER_BOUND);
    cluster.wait_for_consumer_leaders(STREAM, CLUSTER_BOUND);
    let admin = free_port();
    let host = config
        .arg("--admin-listen")
        .arg(&format!("127.0.0.1:{admin}"))
        .start();
    eventually_within(CLUSTER_BOUND, "the host ready with nats-0 down", || {
        ready(admin).then_some(())
    });
    purchase(&host);

    // The server the host is connected to goes away (the first one is back): it fails over.
    cluster.restart(0);
    let connected = eventually("the host's connection", || {
        (0..3).find(|&i| cluster.connections(i, HOST_CONNECTION) == 1)
    });
    println!("the host is connected to {}", cluster.nodes[connected].name);
    cluster.kill(connected);
    let moved = eventually_within(CLUSTER_BOUND, "the host connected elsewhere", || {
        (0..3).find(|&i| i != connected && cluster.connections(i, HOST_CONNECTION) == 1)
    });
    println!(
        "after {} went down it is connected to {}",
        cluster.nodes[connected].name, cluster.nodes[moved].name
    );
    eventually_within(CLUSTER_BOUND, "the host ready again", || {
        ready(admin).then_some(())
    });
    purchase(&host);
}

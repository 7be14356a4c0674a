//! Scale-out of the SpinKube deployment's NATS side: three trigger-nats replicas, started as
//! the Deployment in deploy/spinkube starts them (its arguments, environment and runtime
//! config, the readiness probe on the admin listener), from one lock file, against the NATS
//! cluster of deploy/spinkube (three servers from its nats.conf, on loopback) and one Redis,
//! with the HTTP side beside them as
//! the SpinApp configures it (the host with only its HTTP trigger standing in for the shim).
//! A workload of ten tickets and ten orders, half paid and half left to expire, is then
//! audited on the NATS stream and through the API: every event's effect happened once and
//! every timer fired once.
mod support;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use support::manifests::check_nats_cluster;
use support::nats_cluster::NatsCluster;
use support::spin::write_lock_file;
use support::spinkube::*;
use support::traffic::{event_counts, stream_events, ticketing_stream};
use support::*;

const REPLICAS: usize = 3;
const TICKETS: usize = 10;
const PAID: usize = 5;
/// Long enough to pay for an order on a loaded machine before it expires.
const WINDOW_SECS: u64 = 30;

/// Polls `f` until it returns Some, for up to `secs` seconds.
#[track_caller]
fn within<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out ({secs} s) waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One trigger-nats replica, run as the image's entrypoint runs it; SIGTERM on drop.
struct Replica {
    child: Child,
    log: PathBuf,
    /// Its admin listener's port (the Deployment's probes).
    admin: u16,
}

impl Replica {
    fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Waits until `/readyz`, the Deployment's readiness probe, answers 200.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        while !ureq::get(&url).call().is_ok_and(|r| r.status() == 200) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("replica exited ({status}) at start:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "replica not ready within 180 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        terminate(
            &mut self.child,
            Duration::from_secs(60),
            "replica",
            &self.log,
        )
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        end_process(
            &mut self.child,
            Duration::from_millis(200),
            "replica",
            &self.log,
        );
    }
}

/// Whether every durable consumer of the stream has delivered and had acked everything.
fn consumers_idle(nats_url: &str) -> bool {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let stream = ticketing_stream(nats_url).await;
        let mut names = stream.consumer_names();
        let mut count = 0;
        while let Some(name) = names.next().await {
            let info = stream.consumer_info(name.unwrap()).await.unwrap();
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                return false;
            }
            count += 1;
        }
        count > 0
    })
}

#[test]
fn three_trigger_replicas_handle_each_event_once_and_fire_each_timer_once() {
    let objects = objects();
    let conf = spinkube_dir().join("nats.conf");
    let servers = check_nats_cluster(&objects, &std::fs::read_to_string(&conf).unwrap()).servers;
    let nats = NatsCluster::from_deploy_conf(&conf, &servers);
    let redis = Redis::start();
    ensure_built();
    let dir = tempfile::tempdir().unwrap();
    // The deployment's addresses on this test's servers (MQTT through the client Service:
    // any server).
    let mqtt_port = nats.nodes[0].mqtt_port.expect("an MQTT listener");
    let local = |text: &str| {
        nats.localize(text)
            .replace("redis://redis:6379", &redis.url())
            .replace("mqtt://nats:1883", &format!("mqtt://127.0.0.1:{mqtt_port}"))
    };

    // The Deployment's runtime config and lock file, on this test's servers and paths.
    let rc = dir.path().join("runtime-config.toml");
    let text = std::fs::read_to_string(spinkube_dir().join("runtime-config.toml")).unwrap();
    std::fs::write(&rc, local(&text)).unwrap();
    let locked_url = write_lock_file(&app_manifest(), dir.path());
    let args: Vec<String> = trigger_args(&objects)
        .iter()
        .map(|a| {
            if a.ends_with("/runtime-config.toml") {
                rc.to_str().unwrap().to_owned()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let log = dir.path().join(format!("replica-{i}.log"));
        let admin = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_trigger-nats"));
        command.args(&args).env_remove("RUNTIME_CONFIG_FILE");
        for (name, source) in trigger_env(&objects) {
            // Secrets stay out: the test sets its own jwt_secret, the rest are optional.
            if let Source::Value(value) = source {
                command.env(name, local(&value));
            }
        }
        command
            .env("SPIN_LOCKED_URL", &locked_url)
            .env("SPIN_WORKING_DIR", dir.path().join(format!("work-{i}")))
            .env("TICKETING_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("SPIN_VARIABLE_JWT_SECRET", JWT_SECRET)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
        let mut replica = Replica {
            child: command.spawn().expect("trigger-nats"),
            log,
            admin,
        };
        replica.wait_ready();
        replicas.push(replica);
    }

    // The HTTP side with the SpinApp's variables (publishing to the same NATS).
    let mut http = HostConfig::app(Backend::Embedded);
    http.manifest = dir.path().join("spin.lock");
    http.args = vec![
        "--triggers".into(),
        "http".into(),
        "--runtime-config-file".into(),
        rc.to_str().unwrap().into(),
    ];
    for (name, source) in spin_app_variables(&objects) {
        if let Source::Value(value) = source {
            http = http.var(&name, &local(&value));
        }
    }
    let http = http
        .var("nats_url", &nats.urls())
        .var("timers_url", &redis.url())
        .var("expiration_window_seconds", &WINDOW_SECS.to_string());
    let mut http = http;
    http.env
        .push(("TICKETING_TEST_KV_SEMANTICS".into(), "spin-redis".into()));
    let http = http.start();

    // The workload: ten tickets, an order for each, half of them paid.
    let mut seller = http.client();
    seller.sign_up();
    let tickets: Vec<String> = (0..TICKETS)
        .map(|i| {
            let reply = seller.post(
                "/api/tickets",
                json!({ "title": format!("Show {i}"), "price": 10 + i }),
            );
            assert_eq!(reply.status, 201, "{}", reply.body);
            reply.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut buyer = http.client();
    buyer.sign_up();
    let orders: Vec<String> = tickets
        .iter()
        .map(|ticket| {
            within(120, "the orders service knows the ticket", || {
                let reply = buyer.post("/api/orders", json!({ "ticketId": ticket }));
                match reply.status {
                    201 => Some(reply.json()["id"].as_str().unwrap().to_owned()),
                    404 => None,
                    _ => panic!("order: {} {}", reply.status, reply.body),
                }
            })
        })
        .collect();
    for order in &orders[..PAID] {
        let paid = within(120, "the payments service knows the order", || {
            let reply = buyer.post(
                "/api/payments",
                json!({ "token": "tok_visa", "orderId": order }),
            );
            (reply.status != 404).then_some(reply)
        });
        assert_eq!(paid.status, 201, "{}", paid.body);
    }

    // Everything settles: orders final, consumers idle, no timer left.
    for (i, order) in orders.iter().enumerate() {
        let expected = if i < PAID { "complete" } else { "cancelled" };
        within(WINDOW_SECS + 180, &format!("order {i} {expected}"), || {
            let shown = buyer.get(&format!("/api/orders/{order}")).json();
            (shown["status"] == expected).then_some(())
        });
    }
    within(180, "every consumer idle and no timer left", || {
        let timers_left = redis.command("ZCARD ticketing:timers:due") != ":0"
            || redis.command("ZCARD ticketing:timers:leases") != ":0";
        (!timers_left && consumers_idle(&nats.urls())).then_some(())
    });

    // The audit, on the stream: how many of each event, per entity.
    let events = stream_events(&nats.urls());
    let counts = event_counts(&events);
    let count = |kind: &str, id: &str| {
        counts
            .get(&(kind.to_owned(), id.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let mut reader = http.client();
    for (i, (ticket, order)) in tickets.iter().zip(&orders).enumerate() {
        let paid = i < PAID;
        let summary = format!(
            "ticket {i} ({}): {counts:?}",
            if paid { "paid" } else { "expired" }
        );
        assert_eq!(count("ticket.created", ticket), 1, "{summary}");
        assert_eq!(count("order.created", order), 1, "{summary}");
        // Reserved once; released once if the order expired.
        assert_eq!(
            count("ticket.updated", ticket),
            if paid { 1 } else { 2 },
            "{summary}"
        );
        assert_eq!(
            count("payment.created", order),
            usize::from(paid),
            "{summary}"
        );
        assert_eq!(
            count("order.cancelled", order),
            usize::from(!paid),
            "{summary}"
        );
        // The timer fired once for an expired order; a payment cancelled it.
        assert_eq!(
            count("expiration.complete", order),
            usize::from(!paid),
            "{summary}"
        );

        let shown = reader.get(&format!("/api/tickets/{ticket}")).json();
        let shown_order = buyer.get(&format!("/api/orders/{order}")).json();
        assert_eq!(shown_order["version"], 1, "{shown_order}");
        if paid {
            assert_eq!(shown["version"], 1, "{shown}");
            assert_eq!(shown["orderId"], order.as_str(), "{shown}");
        } else {
            assert_eq!(shown["version"], 2, "{shown}");
            assert!(shown.get("orderId").is_none(), "{shown}");
        }
    }
    assert!(
        !events.iter().any(|(s, _)| s.ends_with(".dead-letter")),
        "nothing dead-lettered: {counts:?}"
    );

    // The replicas drain and exit cleanly on SIGTERM, as a rolling update stops them.
    for replica in &mut replicas {
        let status = replica.stop();
        assert!(status.success(), "exit {status}:\n{}", replica.log());
    }
    drop(http);
}

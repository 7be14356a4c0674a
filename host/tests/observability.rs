//! The admin listener (`--admin-listen`): `/healthz` and `/readyz` follow the backends as a
//! Kubernetes probe sees them, and `/metrics` counts a scripted purchase as Prometheus reads
//! it (parsed, not grepped).
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value as Metric};
use support::stripe::StripeFake;
use support::*;

/// A host with an admin listener on a port of its own.
fn with_admin(config: HostConfig) -> (Host, u16) {
    let admin = free_port();
    let host = config
        .arg("--admin-listen")
        .arg(&format!("127.0.0.1:{admin}"))
        .start();
    (host, admin)
}

/// `GET http://127.0.0.1:<admin><path>`: status and body (any status).
fn admin_get(admin: u16, path: &str) -> (u16, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    match agent.get(&format!("http://127.0.0.1:{admin}{path}")).call() {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap()),
        Err(error) => panic!("GET {path} on the admin listener: {error}"),
    }
}

/// Waits until `/readyz` answers `status`; returns its body.
fn readyz_becomes(admin: u16, status: u16, what: &str) -> Value {
    eventually(what, || {
        let (got, body) = admin_get(admin, "/readyz");
        (got == status).then(|| serde_json::from_str(&body).expect("/readyz is JSON"))
    })
}

/// The names of the checks that are (not) ready.
fn checks(readiness: &Value, ready: bool) -> Vec<String> {
    readiness["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|check| check["ready"] == ready)
        .map(|check| check["name"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_live(admin: u16) {
    let (status, body) = admin_get(admin, "/healthz");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
}

#[test]
fn readiness_follows_redis_and_nats_while_liveness_stays() {
    let (nats, redis) = (Nats::start(), Redis::start());
    let (host, admin) = with_admin(
        HostConfig::app(Backend::Redis(redis.url()))
            .var("nats_url", &nats.url())
            .var("timers_url", &redis.url()),
    );

    let ready = readyz_becomes(admin, 200, "the host is ready");
    assert_eq!(ready["ready"], true);
    let names = checks(&ready, true);
    for expected in ["components", "event bus", "timer store"] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {ready}");
    }
    assert!(
        names.iter().any(|n| n.contains("Redis at")),
        "a Redis key-value check: {ready}"
    );
    let consumers: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("event consumer "))
        .collect();
    assert!(consumers.len() >= 4, "one check per listener: {ready}");
    assert!(checks(&ready, false).is_empty(), "{ready}");

    // The consumers' lag is on /metrics, one series per durable consumer, none pending.
    let scrape = scrape(admin);
    let lags: Vec<&Sample> = series(&scrape, "ticketing_event_consumer_pending_messages").collect();
    assert_eq!(lags.len(), consumers.len(), "{lags:?}");
    assert!(lags.iter().all(|lag| value(lag) == 0.0), "{lags:?}");

    // Redis hangs: the stores and the timers (on the same Redis) are unready, not the bus.
    redis.signal("STOP");
    let unready = readyz_becomes(admin, 503, "unready while Redis hangs");
    assert_eq!(unready["ready"], false);
    let failing = checks(&unready, false);
    assert!(failing.iter().any(|n| n.contains("Redis at")), "{unready}");
    assert!(failing.iter().any(|n| n == "timer store"), "{unready}");
    assert!(!failing.iter().any(|n| n == "event bus"), "{unready}");
    let error = unready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ready"] == false)
        .unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("no answer within"), "{error}");
    assert_live(admin);
    redis.signal("CONT");
    readyz_becomes(admin, 200, "ready again once Redis answers");

    // NATS hangs: the bus and every consumer are unready.
    nats.signal("STOP");
    let unready = readyz_becomes(admin, 503, "unready while NATS hangs");
    let failing = checks(&unready, false);
    assert!(failing.iter().any(|n| n == "event bus"), "{unready}");
    assert!(
        failing.iter().any(|n| n.starts_with("event consumer ")),
        "{unready}"
    );
    assert!(!failing.iter().any(|n| n.contains("Redis at")), "{unready}");
    assert_live(admin);
    nats.signal("CONT");
    readyz_becomes(admin, 200, "ready again once NATS answers");

    // The app itself still works after both came back.
    let mut client = host.client();
    client.sign_up();
    assert_eq!(client.get("/api/users/currentuser").status, 200);
}

fn scrape(admin: u16) -> Scrape {
    let (status, body) = admin_get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text format")
}

fn series<'a>(scrape: &'a Scrape, metric: &'a str) -> impl Iterator<Item = &'a Sample> {
    scrape.samples.iter().filter(move |s| s.metric == metric)
}

/// A counter's or gauge's value; a histogram's count of observations.
fn value(sample: &Sample) -> f64 {
    match &sample.value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
        Metric::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .unwrap_or(0.0),
        Metric::Summary(_) => panic!("no summaries here: {sample:?}"),
    }
}

/// The sum of `metric` over the series whose labels include `labels`.
fn total(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    series(scrape, metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

#[test]
fn a_purchase_is_counted_in_the_metrics() {
    let stripe = StripeFake::start();
    let (host, admin) = with_admin(
        HostConfig::app(Backend::Embedded)
            .var("expiration_window_seconds", "3")
            .var("stripe_secret_key", support::stripe::SECRET_KEY)
            .var("stripe_api_base", &stripe.base_url()),
    );
    readyz_becomes(admin, 200, "the host is ready");

    // Two tickets sold and ordered: one order paid, the other left to expire (its timer
    // fires 3 s later; the paid one's timer is cancelled by payment.created).
    let mut seller = host.client();
    seller.sign_up();
    let mut buyer = host.client();
    buyer.sign_up();
    let mut order_ids = Vec::new();
    for title in ["Opera", "Ballet"] {
        let ticket = seller.post("/api/tickets", json!({"title": title, "price": 20}));
        assert_eq!(ticket.status, 201, "{}", ticket.body);
        let ticket_id = ticket.json()["id"].as_str().unwrap().to_owned();
        let order = eventually("the orders service knows the ticket", || {
            let reply = buyer.post("/api/orders", json!({ "ticketId": ticket_id }));
            (reply.status == 201).then(|| reply.json())
        });
        order_ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let paid = eventually("the payments service knows the order", || {
        let reply = buyer.post(
            "/api/payments",
            json!({"token": "tok_visa", "orderId": order_ids[0]}),
        );
        (reply.status == 201).then_some(reply)
    });
    assert_eq!(paid.status, 201, "{}", paid.body);
    let missing = buyer.get("/api/tickets/0123456789abcdef01234567");
    assert_eq!(missing.status, 404);

    // Wait for the second order to expire and every event delivery to be settled.
    let expired = format!("/api/orders/{}", order_ids[1]);
    let scrape = eventually("the order expired and every event was settled", || {
        if buyer.get(&expired).json()["status"] != "cancelled" {
            return None;
        }
        let scrape = scrape(admin);
        let delivered = total(&scrape, "ticketing_event_deliveries_total", &[]);
        let settled = total(&scrape, "ticketing_event_settlements_total", &[]);
        (delivered > 0.0 && settled == delivered).then_some(scrape)
    });

    // HTTP requests: by component, route pattern, method and status.
    let http = "ticketing_http_requests_total";
    let count = |component: &str, route: &str, method: &str, status: &str| {
        total(
            &scrape,
            http,
            &[
                ("component", component),
                ("route", route),
                ("method", method),
                ("status", status),
            ],
        )
    };
    assert_eq!(count("auth", "/api/users/...", "POST", "201"), 2.0);
    assert_eq!(count("tickets", "/api/tickets/...", "POST", "201"), 2.0);
    assert_eq!(count("tickets", "/api/tickets/...", "GET", "404"), 1.0);
    assert_eq!(count("orders", "/api/orders/...", "POST", "201"), 2.0);
    assert_eq!(count("payments", "/api/payments/...", "POST", "201"), 1.0);
    // Labels are spin.toml's route patterns, never request paths (no ids).
    let routes: BTreeSet<&str> = series(&scrape, http)
        .map(|s| s.labels.get("route").unwrap())
        .collect();
    let patterns = [
        "/api/users/...",
        "/api/tickets/...",
        "/api/orders/...",
        "/api/payments/...",
    ];
    for route in &routes {
        assert!(
            patterns.contains(route) || *route == "/..." || *route == "-",
            "route label {route:?} is not a route pattern"
        );
    }
    // Every answered request has a latency observation, in the same series.
    let latency = "ticketing_http_request_duration_seconds";
    assert_eq!(
        total(&scrape, latency, &[]),
        total(&scrape, http, &[]),
        "one latency observation per request"
    );
    assert_eq!(
        total(
            &scrape,
            latency,
            &[("component", "payments"), ("method", "POST")]
        ),
        1.0
    );

    // Guest runs: every HTTP request and event handler ended well.
    let runs = "ticketing_guest_runs_total";
    assert!(total(&scrape, runs, &[("trigger", "http"), ("outcome", "ok")]) >= 8.0);
    assert!(
        total(
            &scrape,
            runs,
            &[("component", "tickets"), ("trigger", "nats")]
        ) >= 2.0
    );
    for outcome in ["trap", "timeout", "memory_limit"] {
        assert_eq!(
            total(&scrape, runs, &[("outcome", outcome)]),
            0.0,
            "{outcome}"
        );
    }

    // Events: each delivery taken was settled, and timed.
    let created = [
        ("component", "tickets"),
        ("subject", "ticketing.order.created"),
    ];
    assert!(total(&scrape, "ticketing_event_deliveries_total", &created) >= 1.0);
    assert!(
        total(
            &scrape,
            "ticketing_event_settlements_total",
            &[created[0], created[1], ("outcome", "acked")]
        ) >= 1.0
    );
    assert_eq!(
        total(&scrape, "ticketing_event_handler_duration_seconds", &[]),
        total(&scrape, "ticketing_event_deliveries_total", &[]),
        "one handler duration per delivery"
    );
    assert_eq!(
        total(
            &scrape,
            "ticketing_event_settlements_total",
            &[("outcome", "dead_lettered")]
        ),
        0.0
    );

    // Timers: the unpaid order's expiration fired, the paid one's was cancelled: none left.
    assert_eq!(total(&scrape, "ticketing_timers_fired_total", &[]), 1.0);
    assert_eq!(total(&scrape, "ticketing_timer_lateness_seconds", &[]), 1.0);
    assert_eq!(total(&scrape, "ticketing_timers_pending", &[]), 0.0);

    // Outbound HTTP: one charge at the payment provider.
    assert_eq!(
        total(
            &scrape,
            "ticketing_outbound_http_requests_total",
            &[("component", "payments"), ("outcome", "2xx")]
        ),
        1.0
    );

    // Instances and build info.
    assert_eq!(total(&scrape, "ticketing_instances_max", &[]), 256.0);
    let in_use = total(&scrape, "ticketing_instances_in_use", &[]);
    assert!((0.0..=256.0).contains(&in_use), "{in_use}");
    let build: Vec<&Sample> = series(&scrape, "ticketing_build_info").collect();
    assert_eq!(build.len(), 1);
    assert_eq!(
        build[0].labels.get("version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(value(build[0]), 1.0);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let host = HostConfig::app(Backend::Embedded)
        .arg("--log-format")
        .arg("json")
        .start();
    assert_eq!(host.client().get("/api/tickets").status, 200);
    let access = eventually("the request's access log line", || {
        let lines: Vec<Value> = host
            .log()
            .lines()
            .filter(|line| line.starts_with('{'))
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect();
        lines
            .into_iter()
            .find(|line| line["target"] == "ticketing::access")
    });
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["fields"]["method"], "GET");
    assert_eq!(access["fields"]["path"], "/api/tickets");
    assert_eq!(access["fields"]["status"], 200);
    assert_eq!(access["fields"]["component"], "tickets");
    // Every line the host itself logged is JSON (component output is the components' own).
    let host_lines = host.log();
    let text_lines: Vec<&str> = host_lines
        .lines()
        .filter(|line| line.contains(" INFO ") || line.contains(" WARN "))
        .collect();
    assert!(text_lines.is_empty(), "text log lines: {text_lines:?}");
}

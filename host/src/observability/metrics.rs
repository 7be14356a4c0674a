//! Prometheus metrics: one registry per process, filled by small hooks where things happen
//! (the HTTP and NATS triggers, the timer driver, outbound HTTP) and by gauges read from the
//! backends when `/metrics` is scraped (instances in use, consumer lag, timers pending).
//!
//! Metrics are recorded only when the admin listener serves them ([`enable`]); until then
//! every hook is one atomic load. Labels stay few and bounded: component ids, route
//! patterns and subject filters come from spin.toml, never from requests (no raw paths, ids
//! or hosts), methods outside the usual ones are `other`, and outcomes are fixed words.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Latency buckets in seconds, from a warm instance (~100 µs) to the request deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Timer lateness buckets in seconds (the driver polls at least every second).
const LATENESS_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

/// Every series this host exports.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    guest_outcomes: IntCounterVec,
    pub(crate) instances_in_use: IntGauge,
    pub(crate) instances_max: IntGauge,
    event_deliveries: IntCounterVec,
    event_settlements: IntCounterVec,
    event_handler_duration: HistogramVec,
    pub(crate) consumer_pending: IntGaugeVec,
    pub(crate) consumer_ack_pending: IntGaugeVec,
    pub(crate) timers_pending: IntGauge,
    timers_fired: IntCounter,
    timer_lateness: Histogram,
    outbound_http: IntCounterVec,
}

/// Which trigger ran a guest.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Http,
    Nats,
}

/// How a guest run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestOutcome {
    /// It returned (an HTTP response of any status, or a listener result of any kind).
    Ok,
    /// It trapped or failed in the host (other than the two below).
    Trap,
    /// Stopped by the request or handler deadline.
    Timeout,
    /// It tried to grow its memory past the per-instance cap.
    MemoryLimit,
    /// Stopped by the host, which answered its request itself (the client's request body
    /// failed: malformed, too large or too slow).
    Cancelled,
}

impl GuestOutcome {
    /// Classifies a guest failure: the deadline's epoch interrupt, a refused memory growth,
    /// or any other trap.
    pub fn of_error(error: &anyhow::Error) -> GuestOutcome {
        if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            return GuestOutcome::Timeout;
        }
        // With `trap_on_grow_failure` the store limiter's refusal ends the guest with
        // "forcing trap when growing memory to N bytes".
        if error
            .chain()
            .any(|cause| cause.to_string().contains("growing memory"))
        {
            return GuestOutcome::MemoryLimit;
        }
        GuestOutcome::Trap
    }

    fn label(self) -> &'static str {
        match self {
            GuestOutcome::Ok => "ok",
            GuestOutcome::Trap => "trap",
            GuestOutcome::Timeout => "timeout",
            GuestOutcome::MemoryLimit => "memory_limit",
            GuestOutcome::Cancelled => "cancelled",
        }
    }
}

/// How one delivery of an event was settled.
#[derive(Debug, Clone, Copy)]
pub enum Settlement {
    Acked,
    /// Nak'ed, to be delivered again later.
    Retried,
    DeadLettered,
}

impl Settlement {
    fn label(self) -> &'static str {
        match self {
            Settlement::Acked => "acked",
            Settlement::Retried => "retried",
            Settlement::DeadLettered => "dead_lettered",
        }
    }
}

/// Turns metrics on for this process (idempotent) and returns them.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new().expect("the metric definitions are valid"))
}

/// The metrics, if enabled.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let metric = HistogramVec::new(opts, labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok::<_, prometheus::Error>(metric)
        };

        let build_info = gauge(
            "ticketing_build_info",
            "The running host's version (the value is always 1).",
            &["version", "wasmtime"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), WASMTIME_VERSION])
            .set(1);

        Ok(Metrics {
            http_requests: counter(
                "ticketing_http_requests_total",
                "HTTP requests answered, by component, route pattern, method and status.",
                &["component", "route", "method", "status"],
            )?,
            http_duration: histogram(
                "ticketing_http_request_duration_seconds",
                "Time from a request's arrival to its response headers.",
                &["component", "route", "method"],
                LATENCY_BUCKETS,
            )?,
            guest_outcomes: counter(
                "ticketing_guest_runs_total",
                "Guest runs by how they ended: ok, trap, timeout, memory_limit or cancelled.",
                &["component", "trigger", "outcome"],
            )?,
            instances_in_use: gauge(
                "ticketing_instances_in_use",
                "Component instances alive now (HTTP requests and event handlers).",
                &[],
            )?
            .with_label_values(&[] as &[&str]),
            instances_max: gauge(
                "ticketing_instances_max",
                "Instances that may be alive at once (--max-instances); more requests wait.",
                &[],
            )?
            .with_label_values(&[] as &[&str]),
            event_deliveries: counter(
                "ticketing_event_deliveries_total",
                "Event deliveries taken by a listener, by component and subscribed subject.",
                &["component", "subject"],
            )?,
            event_settlements: counter(
                "ticketing_event_settlements_total",
                "Event deliveries settled: acked, retried (nak) or dead_lettered.",
                &["component", "subject", "outcome"],
            )?,
            event_handler_duration: histogram(
                "ticketing_event_handler_duration_seconds",
                "Time one event handler ran, by component and subscribed subject.",
                &["component", "subject"],
                LATENCY_BUCKETS,
            )?,
            consumer_pending: gauge(
                "ticketing_event_consumer_pending_messages",
                "Events a durable consumer has not been delivered yet (its lag).",
                &["consumer"],
            )?,
            consumer_ack_pending: gauge(
                "ticketing_event_consumer_ack_pending_messages",
                "Events delivered to a durable consumer and not settled yet.",
                &["consumer"],
            )?,
            timers_pending: gauge(
                "ticketing_timers_pending",
                "Timers scheduled and not fired yet (waiting or being fired).",
                &[],
            )?
            .with_label_values(&[] as &[&str]),
            timers_fired: counter(
                "ticketing_timers_fired_total",
                "Timers published onto the event bus by this host.",
                &[],
            )?
            .with_label_values(&[] as &[&str]),
            timer_lateness: histogram(
                "ticketing_timer_lateness_seconds",
                "How long after its due time a timer was published.",
                &[],
                LATENESS_BUCKETS,
            )?
            .with_label_values(&[] as &[&str]),
            outbound_http: counter(
                "ticketing_outbound_http_requests_total",
                "Outbound HTTP requests from guests, by component and outcome (status class, \
                 error, or denied by allowed_outbound_hosts).",
                &["component", "outcome"],
            )?,
            registry,
        })
    }

    /// The text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("encoding into memory does not fail");
        text
    }
}

/// The wasmtime version this host embeds (see the workspace Cargo.toml).
const WASMTIME_VERSION: &str = "48";

/// One HTTP request answered. `route` is the spin.toml pattern (`-` when nothing matched).
pub fn http_request(
    component: &str,
    route: &str,
    method: &http::Method,
    status: u16,
    took: Duration,
) {
    let Some(metrics) = get() else { return };
    let method = method_label(method);
    let status = status_label(status);
    metrics
        .http_requests
        .with_label_values(&[component, route, method, status])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[component, route, method])
        .observe(took.as_secs_f64());
}

/// One guest run ended.
pub fn guest_run(component: &str, trigger: Trigger, outcome: GuestOutcome) {
    let Some(metrics) = get() else { return };
    let trigger = match trigger {
        Trigger::Http => "http",
        Trigger::Nats => "nats",
    };
    metrics
        .guest_outcomes
        .with_label_values(&[component, trigger, outcome.label()])
        .inc();
}

/// Counts one guest run when it ends: with the outcome given to [`ended`](Self::ended), or
/// as a timeout if it is dropped first (its task aborted at the deadline).
pub struct GuestRun {
    component: Option<String>,
    trigger: Trigger,
}

impl GuestRun {
    pub fn new(component: &str, trigger: Trigger) -> GuestRun {
        GuestRun {
            // Only allocates when metrics are on.
            component: get().map(|_| component.to_owned()),
            trigger,
        }
    }

    pub fn ended(&mut self, outcome: GuestOutcome) {
        if let Some(component) = self.component.take() {
            guest_run(&component, self.trigger, outcome);
        }
    }
}

impl Drop for GuestRun {
    fn drop(&mut self) {
        self.ended(GuestOutcome::Timeout);
    }
}

/// A listener took a delivery of an event on `subject` (its subscription).
pub fn event_delivered(component: &str, subject: &str) {
    let Some(metrics) = get() else { return };
    metrics
        .event_deliveries
        .with_label_values(&[component, subject])
        .inc();
}

/// A listener's handler ran for `took`.
pub fn event_handled(component: &str, subject: &str, took: Duration) {
    let Some(metrics) = get() else { return };
    metrics
        .event_handler_duration
        .with_label_values(&[component, subject])
        .observe(took.as_secs_f64());
}

/// A delivery was settled.
pub fn event_settled(component: &str, subject: &str, settlement: Settlement) {
    let Some(metrics) = get() else { return };
    metrics
        .event_settlements
        .with_label_values(&[component, subject, settlement.label()])
        .inc();
}

/// A timer was published `late` after its due time.
pub fn timer_fired(late: Duration) {
    let Some(metrics) = get() else { return };
    metrics.timers_fired.inc();
    metrics.timer_lateness.observe(late.as_secs_f64());
}

/// How an outbound HTTP request from a guest went.
#[derive(Debug, Clone, Copy)]
pub enum OutboundOutcome {
    Status(u16),
    Error,
    Denied,
}

pub fn outbound_http(component: &str, outcome: OutboundOutcome) {
    let Some(metrics) = get() else { return };
    let outcome = match outcome {
        OutboundOutcome::Status(status) => match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        OutboundOutcome::Error => "error",
        OutboundOutcome::Denied => "denied",
    };
    metrics
        .outbound_http
        .with_label_values(&[component, outcome])
        .inc();
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A status code as a label: the usual ones as themselves, any other as its class.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_deadline_failures_are_told_apart() {
        let memory = anyhow::anyhow!("forcing trap when growing memory to 1048576 bytes")
            .context("error while executing at wasm backtrace");
        assert_eq!(GuestOutcome::of_error(&memory), GuestOutcome::MemoryLimit);
        let interrupt = anyhow::Error::from(wasmtime::Trap::Interrupt);
        assert_eq!(GuestOutcome::of_error(&interrupt), GuestOutcome::Timeout);
        let unreachable = anyhow::Error::from(wasmtime::Trap::UnreachableCodeReached);
        assert_eq!(GuestOutcome::of_error(&unreachable), GuestOutcome::Trap);
    }

    #[test]
    fn unusual_statuses_and_methods_share_a_label() {
        assert_eq!(status_label(404), "404");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        let brew = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&brew), "other");
    }
}

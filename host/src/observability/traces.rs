//! Traces: OpenTelemetry OTLP/HTTP export when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, as Spin does. The host's spans are
//! `tracing` spans, bridged by `tracing-opentelemetry`: one per HTTP request (parented on
//! the request's W3C `traceparent`, if any) and one per event delivery (parented on the
//! `traceparent` the event was published with). A guest's MQTT publish carries the current
//! span's context as the event's `traceparent` (a NATS header), so one purchase is one trace
//! across the services on the NATS event bus. The embedded queue stores no headers, and the
//! expiration timers none either: there an event starts a trace of its own.
//!
//! Without the variable nothing is exported and no span is made ([`enabled`] is false), so
//! the request path pays one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (and so worth making).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and stops the exporter when dropped (at the end of `main`).
pub struct TracesGuard(SdkTracerProvider);

impl Drop for TracesGuard {
    fn drop(&mut self) {
        if let Err(error) = self.0.shutdown() {
            eprintln!("traces: flushing the last spans failed: {error}");
        }
    }
}

/// The OTLP export layer for the subscriber, if the environment asks for one.
pub fn otlp_layer<S>(
    service: &str,
) -> anyhow::Result<Option<(impl tracing_subscriber::Layer<S>, TracesGuard)>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let wanted = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !wanted {
        return Ok(None);
    }
    // OTLP over HTTP (protobuf), at the endpoint the OTEL_* variables give.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter")?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("ticketing-host"));
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((layer, TracesGuard(provider))))
}

/// Makes `span` a child of the trace context in `traceparent` (W3C), when there is one.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let context = TraceContextPropagator::new().extract(&Traceparent(Some(traceparent.into())));
    let _ = span.set_parent(context);
}

/// The W3C `traceparent` of the current span, to carry on an event published now.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    let mut carrier = Traceparent(None);
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.0
}

/// A carrier holding only `traceparent` (the one header this host propagates).
struct Traceparent(Option<String>);

impl Extractor for Traceparent {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent")
            .then_some(self.0.as_deref())
            .flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

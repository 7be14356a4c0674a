//! What an operator asks of a running host, answered on its admin listener
//! (`--admin-listen`, see [`admin`]): is it alive, is it ready ([`health`]), how is it doing
//! ([`metrics`], Prometheus). The triggers, the timer driver and outbound HTTP report to
//! [`metrics`] through one-line hooks. With `OTEL_EXPORTER_OTLP_ENDPOINT` the host also
//! exports [`traces`].

pub mod admin;
pub mod health;
pub mod metrics;
pub mod traces;

//! Crash recovery: how long the platform takes to finish an order's work when the host dies
//! right after accepting it.
//!
//! Per sample: `POST /api/orders` for a fresh ticket (201), SIGKILL of the host at once, a
//! new host on the same state (and servers), then `GET /api/tickets/:id` every millisecond
//! until the ticket shows the order's id (the `order.created` event, handled by the tickets
//! service). Reported apart: the restart (SIGKILL until the new host listens) and the
//! redelivery (listening until the ticket shows the order).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::load::{self, Conn};
use crate::procs::{self, Service};
use crate::{create_tickets, place_order, sign_up, Ctx};

#[derive(Debug, Clone, Copy)]
pub enum Platform {
    /// The default: store, event queue and timers in the host's state file.
    Embedded,
    /// Redis store and timers, NATS JetStream bus.
    Servers,
}

impl Platform {
    pub fn label(self) -> &'static str {
        match self {
            Platform::Embedded => "embedded",
            Platform::Servers => "Redis + NATS",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoveryResult {
    pub platform: String,
    pub samples: usize,
    /// SIGKILL → the new host accepts connections, per sample (ms).
    pub restart_ms: Vec<f64>,
    /// New host listening → the ticket shows the order, per sample (ms).
    pub redelivery_ms: Vec<f64>,
    /// Samples whose ticket already showed the order at the first read after the restart
    /// (handled before the kill, or while the new host started).
    pub shown_at_first_read: usize,
}

impl RecoveryResult {
    pub fn total_ms(&self) -> Vec<f64> {
        self.restart_ms
            .iter()
            .zip(&self.redelivery_ms)
            .map(|(restart, redelivery)| restart + redelivery)
            .collect()
    }
}

/// The median and the maximum of `values`.
pub fn median_max(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    (median, sorted.last().copied().unwrap_or(0.0))
}

pub async fn measure(
    ctx: &Ctx,
    platform: Platform,
    samples: usize,
) -> anyhow::Result<RecoveryResult> {
    eprintln!(
        "- crash recovery, {} ({samples} SIGKILLs right after an order)",
        platform.label()
    );
    let state = ctx.dir.path().join(format!("recovery-{platform:?}"));
    std::fs::create_dir_all(&state)?;
    // The servers outlive every host of the measurement.
    let (servers, redis_url, vars) = match platform {
        Platform::Embedded => (None, None, vec![]),
        Platform::Servers => {
            let nats = procs::nats(ctx.dir.path())?;
            let redis = procs::redis(ctx.dir.path())?;
            let redis_url = format!("redis://127.0.0.1:{}", redis.port);
            let vars = vec![
                ("nats_url", format!("nats://127.0.0.1:{}", nats.port)),
                ("timers_url", redis_url.clone()),
            ];
            (Some((nats, redis)), Some(redis_url), vars)
        }
    };
    let start = |ctx: &Ctx| ctx.host_at(Some(&state), redis_url.clone(), vars.clone());

    let mut host = start(ctx)?;
    let seller = sign_up(host.addr(), "recovery-seller@example.com").await?;
    let buyer = sign_up(host.addr(), "recovery-buyer@example.com").await?;
    let tickets = create_tickets(host.addr(), &seller, samples).await?;

    let mut result = RecoveryResult {
        platform: platform.label().into(),
        samples,
        restart_ms: Vec::new(),
        redelivery_ms: Vec::new(),
        shown_at_first_read: 0,
    };
    for ticket in &tickets {
        let id = ticket["id"].as_str().context("ticket without id")?;
        let order = {
            let mut conn = Conn::open(host.addr()).await?;
            let patience = Duration::from_secs(60);
            let (_, order) = place_order(&mut conn, host.addr(), &buyer, id, patience).await?;
            order["id"].clone()
        };

        let killed = Instant::now();
        host.kill()?;
        host = start(ctx)?;
        let listening = Instant::now();
        let (first_read_done, shown) = until_ticket_shows(&host, id, &order).await?;
        result
            .restart_ms
            .push(millis(listening.duration_since(killed)));
        result
            .redelivery_ms
            .push(millis(shown.duration_since(listening)));
        result.shown_at_first_read += usize::from(first_read_done);
    }
    drop(host);
    drop(servers);
    eprintln!("  {result:?}");
    Ok(result)
}

/// Polls the ticket every millisecond until it shows `order`; returns whether the first
/// read already did, and when it showed.
async fn until_ticket_shows(
    host: &Service,
    id: &str,
    order: &serde_json::Value,
) -> anyhow::Result<(bool, Instant)> {
    let addr = host.addr();
    let mut conn = Conn::open(addr).await?;
    let path = format!("/api/tickets/{id}");
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut first = true;
    loop {
        let reply = conn
            .send(load::request("GET", addr, &path, &[], None))
            .await?;
        if reply.json()?["orderId"] == *order {
            return Ok((first, Instant::now()));
        }
        first = false;
        if Instant::now() > give_up {
            bail!("ticket {id} never showed order {order} after the restart");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

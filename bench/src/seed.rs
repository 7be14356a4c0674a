//! Putting many tickets on sale quickly: `POST /api/tickets` over a few keep-alive
//! connections at once, each taking the next ticket number until all are created.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;

use crate::load::{self, Conn};

/// What a seeding made.
pub struct Created {
    /// The ids of the tickets, in the order of their numbers (not quite creation order:
    /// the connections' requests interleave).
    pub ids: Vec<String>,
    pub elapsed: Duration,
    /// Creates that failed once (a 503, a dropped connection) and were sent again.
    pub retried: u64,
}

impl Created {
    pub fn per_second(&self) -> f64 {
        self.ids.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A failed create is sent again this many times before the seeding gives up.
const ATTEMPTS: usize = 5;

/// Creates `n` tickets titled `"{title} {i}"` as the user of `cookie` over `connections`
/// connections.
pub async fn create_tickets(
    addr: SocketAddr,
    cookie: &str,
    n: usize,
    connections: usize,
    title: &str,
) -> anyhow::Result<Created> {
    let next = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections.clamp(1, n.max(1)) {
        let (next, retried) = (next.clone(), retried.clone());
        let (cookie, title) = (cookie.to_owned(), title.to_owned());
        workers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            let mut conn: Option<Conn> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(made);
                }
                let body = json!({"title": format!("{title} {i}"), "price": 10 + i % 90});
                let mut last_error = String::new();
                let mut id = None;
                for attempt in 0..ATTEMPTS {
                    if attempt > 0 {
                        retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => conn.insert(Conn::open(addr).await?),
                    };
                    let request = load::request(
                        "POST",
                        addr,
                        "/api/tickets",
                        &[("cookie", &cookie)],
                        Some(&body),
                    );
                    match c.send(request).await {
                        Ok(reply) if reply.status == 201 => {
                            let ticket = reply.json()?;
                            id = Some(ticket["id"].as_str().context("no id")?.to_owned());
                            break;
                        }
                        Ok(reply) => {
                            last_error =
                                format!("{} {}", reply.status, String::from_utf8_lossy(&reply.body))
                        }
                        Err(e) => {
                            last_error = format!("{e:#}");
                            conn = None;
                        }
                    }
                }
                match id {
                    Some(id) => made.push((i, id)),
                    None => bail!("create ticket {i}: {last_error} ({ATTEMPTS} attempts)"),
                }
            }
        }));
    }
    let mut ids = vec![String::new(); n];
    for worker in workers {
        for (i, id) in worker.await?? {
            ids[i] = id;
        }
    }
    Ok(Created {
        ids,
        elapsed: started.elapsed(),
        retried: retried.load(Ordering::Relaxed),
    })
}

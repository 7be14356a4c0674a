//! Part `catalogue`: whether `GET /api/tickets` costs more as the catalogue grows. For each
//! size (ascending, the same host growing from one to the next): create the tickets over 16
//! connections, walk the whole catalogue along its `next` links (`limit=100`) at once, time
//! the first page (one connection, then the bench's concurrency), wait until the tickets
//! service's sweep has brought the new tickets into its listing blocks (the last page's
//! cost comes down), and walk again.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::load::{self, next_link, Conn};
use crate::recovery::Platform;
use crate::stats::{self, Latency};
use crate::{get, seed, sign_up, Ctx};

/// One walk from the first page to the last.
#[derive(Debug, Clone, Serialize)]
pub struct Walk {
    /// From the last create to the walk's first request.
    pub started_after_last_create_s: f64,
    pub pages: u64,
    pub tickets: usize,
    /// Tickets seen twice (a walk sees each ticket on sale once).
    pub duplicates: usize,
    pub total_s: f64,
    pub ms_per_page: f64,
    /// Per page request.
    pub page: Latency,
    /// The last page's path (its cursor), to time it again later.
    #[serde(skip)]
    pub last_page: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CatalogueResult {
    pub platform: String,
    pub size: usize,
    /// Tickets created for this size (the catalogue grows from the size before).
    pub created: usize,
    pub creates_per_s: f64,
    pub create_retries: u64,
    /// `GET /api/tickets` (default limit), one after the other at one connection.
    pub first_page: Latency,
    /// The same at the bench's concurrency (its run is also in the runs table).
    pub first_page_rps: f64,
    pub first_page_concurrency: usize,
    /// Right after the creates.
    pub walk_fresh: Walk,
    /// From the last create until the last page cost about what the first does (the sweep
    /// has reached the end), or `None` if that did not happen within the bound.
    pub settled_after_s: Option<f64>,
    pub settle_bound_s: f64,
    /// The last page (`limit=100`) p50 when the walk ran and once settled, and the first
    /// page at `limit=100` for comparison, in ms.
    pub last_page_fresh_ms: f64,
    pub last_page_settled_ms: f64,
    pub first_page_100_ms: f64,
    pub walk_settled: Walk,
}

async fn page(conn: &mut Conn, addr: SocketAddr, path: &str) -> anyhow::Result<load::Reply> {
    let reply = conn
        .send(load::request("GET", addr, path, &[], None))
        .await?;
    if reply.status != 200 {
        bail!(
            "GET {path}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    Ok(reply)
}

/// Follows `next` from `/api/tickets?limit=100` to the last page.
async fn walk(addr: SocketAddr, last_create: Instant) -> anyhow::Result<Walk> {
    let mut conn = Conn::open(addr).await?;
    let mut hist = stats::histogram();
    let mut seen = HashSet::new();
    let (mut tickets, mut duplicates, mut pages) = (0, 0, 0u64);
    let started = Instant::now();
    let mut path = "/api/tickets?limit=100".to_owned();
    loop {
        let sent = Instant::now();
        let reply = page(&mut conn, addr, &path).await?;
        stats::record(&mut hist, sent.elapsed());
        pages += 1;
        let body: Vec<serde_json::Value> = serde_json::from_slice(&reply.body)?;
        for ticket in &body {
            tickets += 1;
            if !seen.insert(ticket["id"].as_str().unwrap_or_default().to_owned()) {
                duplicates += 1;
            }
        }
        match next_link(&reply.headers) {
            Some(next) => path = next,
            None => break,
        }
    }
    let total = started.elapsed();
    Ok(Walk {
        started_after_last_create_s: started.duration_since(last_create).as_secs_f64(),
        pages,
        tickets,
        duplicates,
        total_s: total.as_secs_f64(),
        ms_per_page: total.as_secs_f64() * 1000.0 / pages as f64,
        page: Latency::of(&hist),
        last_page: path,
    })
}

/// The median time of `times` GETs of `path` one after the other, in ms.
async fn median_ms(
    conn: &mut Conn,
    addr: SocketAddr,
    path: &str,
    times: usize,
) -> anyhow::Result<f64> {
    let mut took = Vec::with_capacity(times);
    for _ in 0..times {
        let sent = Instant::now();
        page(conn, addr, path).await?;
        took.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    Ok(took[took.len() / 2])
}

/// The sweep brings new tickets into their blocks at about 4,096 positions per 2 s tick.
const SWEEP_POSITIONS_PER_S: f64 = 2048.0;

/// Times the last page of the walk (a median of 5) every second until it costs at most
/// twice the first page's at the same limit, or `bound`; returns when (from `last_create`)
/// and the last page's settled cost.
async fn wait_settled(
    addr: SocketAddr,
    last_page: &str,
    first_page_ms: f64,
    last_create: Instant,
    bound: Duration,
) -> anyhow::Result<(Option<f64>, f64)> {
    let mut conn = Conn::open(addr).await?;
    loop {
        let last_ms = median_ms(&mut conn, addr, last_page, 5).await?;
        if last_ms <= 2.0 * first_page_ms {
            return Ok((Some(last_create.elapsed().as_secs_f64()), last_ms));
        }
        if last_create.elapsed() > bound {
            return Ok((None, last_ms));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The catalogue at each of `sizes` on one platform (a fresh host, growing).
pub async fn measure(
    ctx: &mut Ctx,
    platform: Platform,
    sizes: &[usize],
) -> anyhow::Result<Vec<CatalogueResult>> {
    let (addr, _app): (SocketAddr, Box<dyn std::any::Any>) = match platform {
        Platform::Embedded => {
            let host = ctx.host(None, vec![])?;
            (host.addr(), Box::new(host))
        }
        Platform::Servers => {
            let servers = ctx.host_on_servers()?;
            (servers.host.addr(), Box::new(servers))
        }
    };
    let label = platform.label();
    let seller = sign_up(addr, "catalogue-seller@example.com").await?;
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let sequential = if ctx.args.smoke { 30 } else { 300 };
    let mut results = Vec::new();
    let mut have = 0;
    for size in sorted {
        let more = size - have.min(size);
        eprintln!("- catalogue on {label}: {size} tickets (creating {more})");
        let created =
            seed::create_tickets(addr, &seller, more, 16, &format!("Catalogue {size}")).await?;
        let last_create = Instant::now();
        have = size;
        eprintln!(
            "  created {more} in {:.1} s ({:.0}/s)",
            created.elapsed.as_secs_f64(),
            created.per_second()
        );
        let walk_fresh = walk(addr, last_create).await?;
        eprintln!(
            "  walk right after: {} pages, {} tickets, {:.2} s, {:.2} ms/page",
            walk_fresh.pages, walk_fresh.tickets, walk_fresh.total_s, walk_fresh.ms_per_page
        );
        let mut conn = Conn::open(addr).await?;
        let last_page_fresh_ms = median_ms(&mut conn, addr, &walk_fresh.last_page, 5).await?;

        let mut hist = stats::histogram();
        for _ in 0..sequential {
            let sent = Instant::now();
            page(&mut conn, addr, "/api/tickets").await?;
            stats::record(&mut hist, sent.elapsed());
        }
        let first_page = Latency::of(&hist);
        let c = ctx.args.concurrency;
        let load = ctx
            .load(
                &format!("catalogue first page (GET /api/tickets), {size} tickets"),
                &format!("host, {label}"),
                addr,
                ctx.spec(c, 200),
                get(addr, "/api/tickets"),
            )
            .await?;

        let first_page_100_ms = median_ms(&mut conn, addr, "/api/tickets?limit=100", 5).await?;
        let bound = Duration::from_secs_f64(2.0 * size as f64 / SWEEP_POSITIONS_PER_S + 30.0);
        let (settled_after_s, last_page_settled_ms) = wait_settled(
            addr,
            &walk_fresh.last_page,
            first_page_100_ms,
            last_create,
            bound,
        )
        .await?;
        let walk_settled = walk(addr, last_create).await?;
        eprintln!(
            "  first page p50 {} µs p99 {} µs, {:.0} req/s; settled after {}; walk then {:.2} ms/page",
            first_page.p50_us,
            first_page.p99_us,
            load.rps,
            settled_after_s.map_or("-".into(), |s| format!("{s:.1} s")),
            walk_settled.ms_per_page
        );
        for w in [&walk_fresh, &walk_settled] {
            if w.tickets != size || w.duplicates != 0 {
                eprintln!(
                    "  !!! the walk saw {} tickets ({} twice), the catalogue has {size}",
                    w.tickets, w.duplicates
                );
            }
        }
        results.push(CatalogueResult {
            platform: label.into(),
            size,
            created: more,
            creates_per_s: created.per_second(),
            create_retries: created.retried,
            first_page,
            first_page_rps: load.rps,
            first_page_concurrency: c,
            walk_fresh,
            settled_after_s,
            settle_bound_s: bound.as_secs_f64(),
            last_page_fresh_ms,
            last_page_settled_ms,
            first_page_100_ms,
            walk_settled,
        });
    }
    Ok(results)
}

/// How the largest size compares with the smallest on one platform: the figures that say
/// whether a page costs more in a bigger catalogue.
pub fn push_ratios(ratios: &mut Vec<(String, f64)>, results: &[CatalogueResult]) {
    let (Some(small), Some(large)) = (results.first(), results.last()) else {
        return;
    };
    if small.size == large.size {
        return;
    }
    let sizes = format!(
        "{} / {} tickets ({})",
        large.size, small.size, small.platform
    );
    let ratio = |f: fn(&CatalogueResult) -> f64| f(large) / f(small).max(1e-9);
    ratios.push((
        format!("catalogue first page p50, {sizes}"),
        ratio(|r| r.first_page.p50_us as f64),
    ));
    ratios.push((
        format!("catalogue first page p99, {sizes}"),
        ratio(|r| r.first_page.p99_us as f64),
    ));
    ratios.push((
        format!("catalogue first page req/s, {sizes}"),
        ratio(|r| r.first_page_rps),
    ));
    ratios.push((
        format!("catalogue walk time per page (settled), {sizes}"),
        ratio(|r| r.walk_settled.ms_per_page),
    ));
    ratios.push((
        format!("catalogue walk time per page (right after creating), {sizes}"),
        ratio(|r| r.walk_fresh.ms_per_page),
    ));
}

/// The catalogue's table for the Markdown report.
pub fn markdown(results: &[CatalogueResult]) -> String {
    let mut s = String::from(
        "\nCatalogue (`GET /api/tickets`): first page (default limit 20) one at a time and at the bench's concurrency; a walk along `next` links at `limit=100` right after the creates and again once the sweep has the new tickets in their blocks:\n\n\
         | platform | tickets | created/s | first page p50 / p99 µs | first page req/s (c) | walk right after: pages, s, ms/page | settled after s | walk settled: s, ms/page | last page ms: right after → settled (first page at 100: ms) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let seen = |w: &Walk| {
            if w.tickets == r.size && w.duplicates == 0 {
                String::new()
            } else {
                format!(" (**saw {} tickets, {} twice**)", w.tickets, w.duplicates)
            }
        };
        s += &format!(
            "| {} | {} | {:.0} | {} / {} | {:.0} ({}) | {}, {:.2}, {:.2}{} | {} | {:.2}, {:.2}{} | {:.2} → {:.2} ({:.2}) |\n",
            r.platform,
            r.size,
            r.creates_per_s,
            r.first_page.p50_us,
            r.first_page.p99_us,
            r.first_page_rps,
            r.first_page_concurrency,
            r.walk_fresh.pages,
            r.walk_fresh.total_s,
            r.walk_fresh.ms_per_page,
            seen(&r.walk_fresh),
            r.settled_after_s.map_or(
                format!("not within {:.0}", r.settle_bound_s),
                |t| format!("{t:.1}")
            ),
            r.walk_settled.total_s,
            r.walk_settled.ms_per_page,
            seen(&r.walk_settled),
            r.last_page_fresh_ms,
            r.last_page_settled_ms,
            r.first_page_100_ms,
        );
    }
    s
}

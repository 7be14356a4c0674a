//! Part `catalogue`: whether `GET /api/tickets` costs more as the catalogue grows. Each
//! size gets an app of its own, so that all sizes can be measured in interleaved rounds
//! (this machine's speed drifts within minutes; a ratio of one round is what holds).
//!
//! Per size: 100 reference tickets first, given time to reach the tickets service's
//! listing blocks (its sweep brings new tickets in on a 2 s tick); then the rest at once
//! over 16 connections. Right after the last create, a walk along the `next` links
//! (`limit=100`) from the first page to the last, whose tail is still read ticket by ticket;
//! then the last page is timed against the first (the settled reference) until it costs at
//! most twice as much and the server is idle: how long after the last create the sweep had
//! the new tickets in.
//! Once every size is there, rounds over the sizes: the first page (default limit) one at a
//! time, and walks; then the first page at the bench's concurrency.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{self, next_link, Conn};
use crate::recovery::Platform;
use crate::stats::{self, Latency};
use crate::{get, seed, sign_up, Ctx};

/// Walks from the first page to the last (one, or several in a row for a small catalogue).
#[derive(Debug, Clone, Serialize)]
pub struct Walk {
    /// From the last create to the first walk's first request.
    pub started_after_last_create_s: f64,
    pub walks: usize,
    pub pages: u64,
    /// Tickets per walk (a walk sees each ticket on sale once), and any seen twice.
    pub tickets: usize,
    pub duplicates: usize,
    pub total_s: f64,
    pub ms_per_page: f64,
    /// Per page request.
    pub page: Latency,
    /// The last page's path (its cursor), to time it again later.
    #[serde(skip)]
    pub last_page: String,
    #[serde(skip)]
    pub page_hist: Histogram<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CatalogueResult {
    pub platform: String,
    pub size: usize,
    pub creates_per_s: f64,
    pub create_retries: u64,
    /// `GET /api/tickets` (default limit), one after the other at one connection, over the
    /// rounds.
    pub first_page: Latency,
    /// The same at the bench's concurrency (its run is also in the runs table).
    pub first_page_rps: f64,
    pub first_page_concurrency: usize,
    /// Right after the creates.
    pub walk_fresh: Walk,
    /// From the last create until the last page cost at most twice the first (the sweep
    /// had reached the end), or `None` if that did not happen within the bound.
    pub settled_after_s: Option<f64>,
    pub settle_bound_s: f64,
    /// The last and the first page at `limit=100` (medians, ms): right after the creates,
    /// and when settled.
    pub last_page_fresh_ms: f64,
    pub first_page_100_fresh_ms: f64,
    pub last_page_settled_ms: f64,
    pub first_page_100_settled_ms: f64,
    /// The walks of the rounds, together.
    pub walk_settled: Walk,
}

async fn page(conn: &mut Conn, addr: SocketAddr, path: &str) -> anyhow::Result<load::Reply> {
    conn.send(load::request("GET", addr, path, &[], None))
        .await?
        .expect_status(200, &format!("GET {path}"))
}

/// Follows `next` from `/api/tickets?limit=100` to the last page, `times` times in a row.
async fn walk(addr: SocketAddr, last_create: Instant, times: usize) -> anyhow::Result<Walk> {
    let mut conn = Conn::open(addr).await?;
    let mut hist = stats::histogram();
    let (mut tickets, mut duplicates, mut pages) = (0, 0, 0u64);
    let mut path = String::new();
    let started = Instant::now();
    for _ in 0..times.max(1) {
        let mut seen = HashSet::new();
        path = "/api/tickets?limit=100".to_owned();
        loop {
            let sent = Instant::now();
            let reply = page(&mut conn, addr, &path).await?;
            stats::record(&mut hist, sent.elapsed());
            pages += 1;
            let body: Vec<serde_json::Value> = serde_json::from_slice(&reply.body)?;
            for ticket in &body {
                if !seen.insert(ticket["id"].as_str().unwrap_or_default().to_owned()) {
                    duplicates += 1;
                }
            }
            match next_link(&reply.headers) {
                Some(next) => path = next,
                None => break,
            }
        }
        tickets = seen.len();
    }
    let total = started.elapsed();
    Ok(Walk {
        started_after_last_create_s: started.duration_since(last_create).as_secs_f64(),
        walks: times.max(1),
        pages,
        tickets,
        duplicates,
        total_s: total.as_secs_f64(),
        ms_per_page: total.as_secs_f64() * 1000.0 / pages as f64,
        page: Latency::of(&hist),
        last_page: path,
        page_hist: hist,
    })
}

/// Walks of the rounds taken together.
fn combine(walks: &[Walk]) -> Walk {
    let mut hist = stats::histogram();
    for w in walks {
        hist.add(&w.page_hist).expect("same bounds");
    }
    let pages: u64 = walks.iter().map(|w| w.pages).sum();
    let total_s: f64 = walks.iter().map(|w| w.total_s).sum();
    Walk {
        started_after_last_create_s: walks[0].started_after_last_create_s,
        walks: walks.iter().map(|w| w.walks).sum(),
        pages,
        tickets: walks.iter().map(|w| w.tickets).min().unwrap_or(0),
        duplicates: walks.iter().map(|w| w.duplicates).sum(),
        total_s,
        ms_per_page: total_s * 1000.0 / pages.max(1) as f64,
        page: Latency::of(&hist),
        last_page: walks[0].last_page.clone(),
        page_hist: hist,
    }
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

/// The first and the last page at `limit=100`, medians of 5 each, in ms.
async fn first_and_last_ms(
    conn: &mut Conn,
    addr: SocketAddr,
    last_page: &str,
) -> anyhow::Result<(f64, f64)> {
    let first = median_ms(conn, addr, FIRST_PAGE_100, 5).await?;
    let last = median_ms(conn, addr, last_page, 5).await?;
    Ok((first, last))
}

const FIRST_PAGE_100: &str = "/api/tickets?limit=100";

/// Tickets created first, and given time to reach their listing blocks: the first page at
/// `limit=100`, a settled reference for the last.
const REFERENCE_TICKETS: usize = 100;
/// Two ticks of the sweep and a margin.
const REFERENCE_SETTLES: Duration = Duration::from_millis(4_500);
/// The sweep brings new tickets into their blocks at about 4,096 positions per 2 s tick.
const SWEEP_POSITIONS_PER_S: f64 = 2048.0;
/// The share of one core under which a server counts as idle (its relay's tick and the
/// bench's own two page reads stay under it).
const IDLE_CPU_SHARE: f64 = 0.1;

/// Times the first and the last page every half second until the last costs at most twice
/// the first and the server is idle (its sweep done), or `bound` after the last create;
/// returns when that was (from `last_create`) and the last medians of both.
async fn wait_settled(
    addr: SocketAddr,
    last_page: &str,
    last_create: Instant,
    bound: Duration,
) -> anyhow::Result<(Option<f64>, (f64, f64))> {
    let mut conn = Conn::open(addr).await?;
    // The sweep's work shows as the server's CPU: settled also means idle, so that the
    // rounds do not time one size's pages beside its own sweep.
    let server = crate::procs::listener_pid(addr.port());
    let cpu = || server.and_then(crate::procs::tree_cpu_time_us);
    let mut before = (Instant::now(), cpu());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (first, last) = first_and_last_ms(&mut conn, addr, last_page).await?;
        let now = (Instant::now(), cpu());
        let busy = match (before.1, now.1) {
            (Some(a), Some(b)) => {
                b.saturating_sub(a) as f64 / (now.0 - before.0).as_micros() as f64
            }
            _ => 0.0,
        };
        before = now;
        if last <= 2.0 * first && busy < IDLE_CPU_SHARE {
            return Ok((Some(last_create.elapsed().as_secs_f64()), (first, last)));
        }
        if last_create.elapsed() > bound {
            return Ok((None, (first, last)));
        }
    }
}

/// One size's app, created and settled, before the rounds.
struct Sized {
    size: usize,
    addr: SocketAddr,
    _app: Box<dyn std::any::Any>,
    last_create: Instant,
    created: seed::Created,
    walk_fresh: Walk,
    settled_after_s: Option<f64>,
    settle_bound_s: f64,
    fresh_ms: (f64, f64),
    settled_ms: (f64, f64),
}

/// A fresh app on `platform` with `size` tickets, walked right after the creates and
/// followed until settled.
async fn grow(ctx: &Ctx, platform: Platform, size: usize) -> anyhow::Result<Sized> {
    let (addr, app) = ctx.fresh_app(platform)?;
    let label = platform.label();
    eprintln!("- catalogue on {label}: {size} tickets");
    let seller = sign_up(addr, "catalogue-seller@example.com").await?;
    let reference = REFERENCE_TICKETS.min(size);
    seed::create_tickets(addr, &seller, reference, 16, "Reference").await?;
    tokio::time::sleep(REFERENCE_SETTLES).await;
    let created = seed::create_tickets(addr, &seller, size - reference, 16, "Catalogue").await?;
    let last_create = Instant::now();
    let walk_fresh = walk(addr, last_create, 1).await?;
    let mut conn = Conn::open(addr).await?;
    let fresh_ms = first_and_last_ms(&mut conn, addr, &walk_fresh.last_page).await?;
    eprintln!(
        "  created {} in {:.1} s ({:.0}/s); walk right after: {} pages, {:.2} s, {:.2} ms/page",
        size - reference,
        created.elapsed.as_secs_f64(),
        created.per_second(),
        walk_fresh.pages,
        walk_fresh.total_s,
        walk_fresh.ms_per_page
    );
    // Twice the sweep's nominal time: it runs slower on a busy machine.
    let bound = Duration::from_secs_f64(2.0 * size as f64 / SWEEP_POSITIONS_PER_S + 30.0);
    let (settled_after_s, settled_ms) =
        wait_settled(addr, &walk_fresh.last_page, last_create, bound).await?;
    eprintln!(
        "  last page {:.2} ms right after, settled after {}: {:.2} ms (first page {:.2} ms)",
        fresh_ms.1,
        settled_after_s.map_or(format!("NOT within {:.0} s", bound.as_secs_f64()), |s| {
            format!("{s:.1} s")
        }),
        settled_ms.1,
        settled_ms.0
    );
    Ok(Sized {
        size,
        addr,
        _app: app,
        last_create,
        created,
        walk_fresh,
        settled_after_s,
        settle_bound_s: bound.as_secs_f64(),
        fresh_ms,
        settled_ms,
    })
}

/// The catalogue at each of `sizes` on one platform (an app per size, all kept until the
/// rounds are done).
pub async fn measure(
    ctx: &mut Ctx,
    platform: Platform,
    sizes: &[usize],
) -> anyhow::Result<Vec<CatalogueResult>> {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut apps = Vec::new();
    for size in sorted {
        apps.push(grow(ctx, platform, size).await?);
    }

    let rounds = if ctx.args.smoke { 1 } else { 3 };
    let sequential = if ctx.args.smoke { 30 } else { 100 };
    // Enough pages per round that a small catalogue's walk is not a handful of requests.
    let pages_per_round: usize = if ctx.args.smoke { 20 } else { 200 };
    let label = platform.label();
    eprintln!("- catalogue on {label}: {rounds} rounds over the sizes");
    let mut first_pages: Vec<Histogram<u64>> = apps.iter().map(|_| stats::histogram()).collect();
    let mut walks: Vec<Vec<Walk>> = apps.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, app) in apps.iter().enumerate() {
            let mut conn = Conn::open(app.addr).await?;
            for _ in 0..sequential {
                let sent = Instant::now();
                page(&mut conn, app.addr, "/api/tickets").await?;
                stats::record(&mut first_pages[i], sent.elapsed());
            }
            let pages_per_walk = app.size.div_ceil(100).max(1);
            let times = pages_per_round.div_ceil(pages_per_walk);
            walks[i].push(walk(app.addr, app.last_create, times).await?);
        }
    }
    let c = ctx.args.concurrency;
    let mut results = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let load = ctx
            .load(
                &format!(
                    "catalogue first page (GET /api/tickets), {} tickets",
                    app.size
                ),
                &format!("host, {label}"),
                app.addr,
                ctx.spec(c, 200),
                get(app.addr, "/api/tickets"),
            )
            .await?;
        let walk_settled = combine(&walks[i]);
        let first_page = Latency::of(&first_pages[i]);
        eprintln!(
            "  {} tickets: first page p50 {} µs p99 {} µs, {:.0} req/s; walk {:.2} ms/page (p50 {} µs)",
            app.size,
            first_page.p50_us,
            first_page.p99_us,
            load.rps,
            walk_settled.ms_per_page,
            walk_settled.page.p50_us
        );
        for w in [&app.walk_fresh, &walk_settled] {
            if w.tickets != app.size || w.duplicates != 0 {
                eprintln!(
                    "  !!! a walk saw {} tickets ({} twice), the catalogue has {}",
                    w.tickets, w.duplicates, app.size
                );
            }
        }
        results.push(CatalogueResult {
            platform: label.into(),
            size: app.size,
            creates_per_s: app.created.per_second(),
            create_retries: app.created.retried,
            first_page,
            first_page_rps: load.rps,
            first_page_concurrency: c,
            walk_fresh: app.walk_fresh.clone(),
            settled_after_s: app.settled_after_s,
            settle_bound_s: app.settle_bound_s,
            last_page_fresh_ms: app.fresh_ms.1,
            first_page_100_fresh_ms: app.fresh_ms.0,
            last_page_settled_ms: app.settled_ms.1,
            first_page_100_settled_ms: app.settled_ms.0,
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
        format!("catalogue walk time per page (rounds, settled), {sizes}"),
        ratio(|r| r.walk_settled.ms_per_page),
    ));
    ratios.push((
        format!("catalogue walk page p50 (rounds, settled), {sizes}"),
        ratio(|r| r.walk_settled.page.p50_us as f64),
    ));
    ratios.push((
        format!("catalogue walk time per page (right after creating), {sizes}"),
        ratio(|r| r.walk_fresh.ms_per_page),
    ));
}

/// The catalogue's table for the Markdown report.
pub fn markdown(results: &[CatalogueResult]) -> String {
    let mut s = String::from(
        "\nCatalogue (`GET /api/tickets`), an app per size (100 reference tickets settled first, the rest created over 16 connections): a walk along `next` links at `limit=100` right after the last create; how long after it the last page cost at most twice the first (the sweep had the new tickets in its blocks); then rounds over the sizes of the first page (default limit 20) one at a time and of walks, and the first page at the bench's concurrency:\n\n\
         | platform | tickets | created/s | first page p50 / p99 µs | first page req/s (c) | walk right after: pages, s, ms/page | settled after s | walks in the rounds: pages, ms/page, page p50 / p99 µs | last / first page at limit 100, ms: right after → settled |\n\
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
            "| {} | {} | {:.0} | {} / {} | {:.0} ({}) | {}, {:.2}, {:.2}{} | {} | {}, {:.2}, {} / {}{} | {:.2} / {:.2} → {:.2} / {:.2} |\n",
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
                format!("**not within {:.0}**", r.settle_bound_s),
                |t| format!("{t:.1}")
            ),
            r.walk_settled.pages,
            r.walk_settled.ms_per_page,
            r.walk_settled.page.p50_us,
            r.walk_settled.page.p99_us,
            seen(&r.walk_settled),
            r.last_page_fresh_ms,
            r.first_page_100_fresh_ms,
            r.last_page_settled_ms,
            r.first_page_100_settled_ms,
        );
    }
    s
}

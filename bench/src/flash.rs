//! Part `flash`: a flash sale. One seller puts N tickets on sale; M buyers, each a user of
//! its own on a keep-alive connection of its own, start at the same moment and loop: pick
//! one of the N tickets at random, `POST /api/orders`; on a 201 pay at once with
//! probability p (`POST /api/payments`, again at once on a 503: the server has already
//! waited for the order), else cancel (`DELETE /api/orders/:id`). The sale ends when every
//! ticket is paid or at the time limit. A few samplers, each on a connection of its own,
//! follow some of the orders about to be paid until their ticket shows them. Then an audit reads every
//! buyer's orders and every ticket back and checks nothing was sold twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Barrier};

use crate::load::{self, Conn, Reply};
use crate::recovery::Platform;
use crate::stats::{self, Lag, Latency};
use crate::{place_order, procs, seed, sign_up, spin, Ctx};

#[derive(Debug, Clone)]
pub struct FlashSettings {
    pub tickets: usize,
    pub buyers: usize,
    /// The chance a buyer pays for an order it got (else it cancels it).
    pub pay_probability: f64,
    pub time_limit: Duration,
    /// Every how many orders about to be paid one is offered to the samplers.
    pub sample_every: u64,
    /// How long the audit waits for events to settle before it reports what is left.
    pub settle_limit: Duration,
}

/// One second of the sale.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Second {
    pub attempts: u64,
    pub orders_created: u64,
    pub paid: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlashResult {
    pub platform: String,
    pub tickets: usize,
    pub buyers: usize,
    pub pay_probability: f64,
    pub time_limit_s: f64,
    /// Putting the tickets on sale, and then until the orders service knew all of them.
    pub create_s: f64,
    pub orders_ready_s: f64,
    pub sale_s: f64,
    pub sold_out_after_s: Option<f64>,
    pub half_paid_after_s: Option<f64>,
    /// `POST /api/orders` sent by the buyers.
    pub attempts: u64,
    pub attempts_per_s: f64,
    /// Until half the tickets were paid: while most tickets are still to be had.
    pub attempts_per_s_until_half_paid: Option<f64>,
    /// Order replies by status ("error": no reply, the connection failed).
    pub order_status: BTreeMap<String, u64>,
    pub payment_status: BTreeMap<String, u64>,
    pub cancel_status: BTreeMap<String, u64>,
    /// Every request of each kind.
    pub orders: Latency,
    pub payments: Latency,
    pub cancels: Latency,
    /// Orders paid (a payment 201), cancelled (a 204), and given up on (payment retries
    /// exhausted: cancelled instead).
    pub paid: u64,
    pub cancelled: u64,
    pub payments_given_up: u64,
    /// From an order's 201 to the ticket showing the order (`GET /api/tickets/:id` back to
    /// back from a sampler's connection).
    pub ticket_shows_order: Lag,
    pub ticket_shows_order_timed_out: u64,
    /// Samples not taken because every sampler was still following an earlier one.
    pub samples_skipped_busy: u64,
    /// From an order's 201 to its payment's 201, retries included.
    pub order_to_payment: Lag,
    /// The CPU of the process serving HTTP and of its child processes (Spin's trigger
    /// plugin; not Redis or NATS) over the sale, per order attempt.
    pub server_cpu_us_per_attempt: Option<f64>,
    pub timeline: Vec<Second>,
    /// The first few replies no buyer expected (status and body).
    pub odd_replies: Vec<String>,
    pub audit: Audit,
}

/// The audit after the sale, from what the API shows once events have settled.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    pub passed: bool,
    /// How long the audit waited for the last events to land (until its checks held, or
    /// its bound).
    pub settled_after_s: f64,
    pub settled: bool,
    pub orders_listed: usize,
    pub orders_acknowledged: usize,
    pub complete: usize,
    pub tickets_sold: usize,
    /// Tickets with two or more complete orders.
    pub oversold: usize,
    /// Tickets held by two or more orders that are not cancelled.
    pub double_reserved: usize,
    /// Orders whose payment got a 201 and that are not complete.
    pub paid_not_complete: usize,
    /// Complete orders without a payment 201 the bench saw.
    pub complete_not_paid: usize,
    /// Orders the bench cancelled (204) that are not cancelled.
    pub cancelled_not_cancelled: usize,
    /// Orders that got a 201 and that their buyer's listing does not have.
    pub missing: usize,
    /// Orders listed that the bench never got a 201 for.
    pub unknown: usize,
    /// Tickets whose complete order they do not show as their `orderId`.
    pub ticket_shows_other_order: usize,
    /// Tickets showing an `orderId` while no order holds them.
    pub ticket_reserved_by_no_order: usize,
    /// Examples of what failed.
    pub problems: Vec<String>,
}

/// A tiny PRNG (SplitMix64): the buyers' choices need to be spread, not secret.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What happened to an order a buyer got.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Paid,
    Cancelled,
    /// Neither a payment 201 nor a cancel 204 (both failed).
    Unsettled,
}

#[derive(Debug, Clone)]
struct Placed {
    order_id: String,
    fate: Fate,
}

/// An order about to be paid, for a sampler to follow.
struct Sample {
    order_id: String,
    ticket_path: String,
    acknowledged: Instant,
}

/// What the buyers share.
struct Sale {
    addr: SocketAddr,
    tickets: Vec<String>,
    settings: FlashSettings,
    start: Instant,
    deadline: Instant,
    /// Tickets whose payment got a 201.
    paid: Mutex<HashSet<usize>>,
    sold_out: AtomicBool,
    sold_out_after: Mutex<Option<Duration>>,
    /// When half the tickets were paid, and the order attempts sent until then.
    half_paid: Mutex<Option<(Duration, u64)>>,
    attempts: AtomicU64,
    to_pay: AtomicU64,
    /// Per sampler: whether it waits for a sample.
    sampler_idle: Vec<AtomicBool>,
}

/// Samplers, each on its own connection following one order at a time: one alone spends
/// the sale on a few slow samples when events lag.
const SAMPLERS: usize = 4;

impl Sale {
    /// Records the payment of `ticket`; the sale is over when every ticket is paid.
    fn record_payment(&self, ticket: usize, log: &mut BuyerLog) {
        let mut paid = self.paid.lock().expect("not poisoned");
        if !paid.insert(ticket) {
            log.odd(format!(
                "ticket {} got a second payment 201",
                self.tickets[ticket]
            ));
        }
        let elapsed = self.start.elapsed();
        if paid.len() * 2 >= self.tickets.len() {
            let attempts = self.attempts.load(Ordering::Relaxed);
            self.half_paid
                .lock()
                .expect("not poisoned")
                .get_or_insert((elapsed, attempts));
        }
        if paid.len() == self.tickets.len() {
            *self.sold_out_after.lock().expect("not poisoned") = Some(elapsed);
            self.sold_out.store(true, Ordering::Relaxed);
        }
    }

    fn over(&self) -> bool {
        self.sold_out.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

/// One buyer's record of the sale.
struct BuyerLog {
    orders: Histogram<u64>,
    payments: Histogram<u64>,
    cancels: Histogram<u64>,
    order_to_payment: Histogram<u64>,
    order_status: BTreeMap<String, u64>,
    payment_status: BTreeMap<String, u64>,
    cancel_status: BTreeMap<String, u64>,
    timeline: Vec<Second>,
    placed: Vec<Placed>,
    payments_given_up: u64,
    samples_skipped_busy: u64,
    odd: Vec<String>,
}

/// Each buyer keeps this many unexpected replies to show.
const ODD_KEPT: usize = 5;

impl BuyerLog {
    fn new() -> BuyerLog {
        BuyerLog {
            orders: stats::histogram(),
            payments: stats::histogram(),
            cancels: stats::histogram(),
            order_to_payment: stats::histogram(),
            order_status: BTreeMap::new(),
            payment_status: BTreeMap::new(),
            cancel_status: BTreeMap::new(),
            timeline: Vec::new(),
            placed: Vec::new(),
            payments_given_up: 0,
            samples_skipped_busy: 0,
            odd: Vec::new(),
        }
    }

    fn second(&mut self, sale: &Sale, at: Instant) -> &mut Second {
        let i = at.duration_since(sale.start).as_secs() as usize;
        if self.timeline.len() <= i {
            self.timeline.resize(i + 1, Second::default());
        }
        &mut self.timeline[i]
    }

    fn odd(&mut self, what: String) {
        if self.odd.len() < ODD_KEPT {
            self.odd.push(what);
        }
    }

    fn merge(&mut self, other: BuyerLog) {
        for (mine, theirs) in [
            (&mut self.orders, &other.orders),
            (&mut self.payments, &other.payments),
            (&mut self.cancels, &other.cancels),
            (&mut self.order_to_payment, &other.order_to_payment),
        ] {
            mine.add(theirs).expect("same bounds");
        }
        for (mine, theirs) in [
            (&mut self.order_status, &other.order_status),
            (&mut self.payment_status, &other.payment_status),
            (&mut self.cancel_status, &other.cancel_status),
        ] {
            for (status, n) in theirs {
                *mine.entry(status.clone()).or_default() += n;
            }
        }
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize(other.timeline.len(), Second::default());
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            mine.attempts += theirs.attempts;
            mine.orders_created += theirs.orders_created;
            mine.paid += theirs.paid;
        }
        self.placed.extend(other.placed);
        self.payments_given_up += other.payments_given_up;
        self.samples_skipped_busy += other.samples_skipped_busy;
        for odd in other.odd {
            if self.odd.len() < 4 * ODD_KEPT {
                self.odd.push(odd);
            }
        }
    }
}

fn status_key(reply: &anyhow::Result<Reply>) -> String {
    match reply {
        Ok(reply) => reply.status.as_u16().to_string(),
        Err(_) => "error".into(),
    }
}

fn describe(what: &str, reply: &anyhow::Result<Reply>) -> String {
    match reply {
        Ok(reply) => format!(
            "{what}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ),
        Err(e) => format!("{what}: {e:#}"),
    }
}

/// Sends `request` on the buyer's connection, opening a new one if the last failed.
async fn send(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    request: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> anyhow::Result<Reply> {
    let c = match conn.as_mut() {
        Some(c) => c,
        None => conn.insert(Conn::open(addr).await?),
    };
    let reply = c.send(request).await;
    if reply.is_err() {
        *conn = None;
    }
    reply
}

/// How long a buyer keeps trying to pay for one order before it gives up and cancels it.
const PAYMENT_PATIENCE: Duration = Duration::from_secs(30);
/// 404s a payment may get before the buyer gives up on it (a 404 is for an order that
/// cannot exist; the count says whether it happens at all).
const PAYMENT_404S_KEPT_TRYING: u32 = 10;

/// Pays for `order_id`; true when a payment got its 201 (or the order turned out paid by
/// an earlier attempt whose reply was lost).
async fn pay(
    conn: &mut Option<Conn>,
    sale: &Sale,
    cookie: &str,
    order_id: &str,
    log: &mut BuyerLog,
) -> bool {
    let addr = sale.addr;
    let body = json!({"token": "tok_visa", "orderId": order_id});
    let give_up = Instant::now() + PAYMENT_PATIENCE;
    let (mut not_found, mut lost_reply) = (0, false);
    loop {
        let request = load::request(
            "POST",
            addr,
            "/api/payments",
            &[("cookie", cookie)],
            Some(&body),
        );
        let sent = Instant::now();
        let reply = send(conn, addr, request).await;
        stats::record(&mut log.payments, sent.elapsed());
        *log.payment_status.entry(status_key(&reply)).or_default() += 1;
        let status = reply.as_ref().map(|r| r.status.as_u16()).ok();
        match status {
            Some(201) => return true,
            // The server already waited up to 2 s for the order: again at once.
            Some(503) => {}
            Some(404) => {
                not_found += 1;
                log.odd(describe(&format!("payment of order {order_id}"), &reply));
                if not_found >= PAYMENT_404S_KEPT_TRYING {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(400)
                if lost_reply
                    && reply.as_ref().is_ok_and(|r| {
                        String::from_utf8_lossy(&r.body).contains("already paid")
                    }) =>
            {
                return true
            }
            None => {
                lost_reply = true;
                log.odd(describe(&format!("payment of order {order_id}"), &reply));
            }
            Some(_) => {
                log.odd(describe(&format!("payment of order {order_id}"), &reply));
                return false;
            }
        }
        if Instant::now() > give_up {
            return false;
        }
    }
}

/// Cancels `order_id`; true on its 204.
async fn cancel(
    conn: &mut Option<Conn>,
    sale: &Sale,
    cookie: &str,
    order_id: &str,
    log: &mut BuyerLog,
) -> bool {
    let addr = sale.addr;
    let path = format!("/api/orders/{order_id}");
    for _ in 0..3 {
        let request = load::request("DELETE", addr, &path, &[("cookie", cookie)], None);
        let sent = Instant::now();
        let reply = send(conn, addr, request).await;
        stats::record(&mut log.cancels, sent.elapsed());
        *log.cancel_status.entry(status_key(&reply)).or_default() += 1;
        match reply.as_ref().map(|r| r.status.as_u16()) {
            Ok(204) => return true,
            // A lost reply or a backend that did not answer: cancelling twice is a 204.
            Err(_) | Ok(503) => log.odd(describe(&format!("cancel of {order_id}"), &reply)),
            Ok(_) => {
                log.odd(describe(&format!("cancel of {order_id}"), &reply));
                return false;
            }
        }
    }
    false
}

async fn buyer(
    sale: Arc<Sale>,
    cookie: String,
    seed: u64,
    mut conn: Option<Conn>,
    start: Arc<Barrier>,
    samples: Vec<mpsc::Sender<Sample>>,
) -> BuyerLog {
    let mut log = BuyerLog::new();
    let mut rng = Rng(seed);
    let addr = sale.addr;
    start.wait().await;
    while !sale.over() {
        let ticket = rng.below(sale.tickets.len());
        let body = json!({"ticketId": sale.tickets[ticket]});
        let request = load::request(
            "POST",
            addr,
            "/api/orders",
            &[("cookie", &cookie)],
            Some(&body),
        );
        let sent = Instant::now();
        sale.attempts.fetch_add(1, Ordering::Relaxed);
        let reply = send(&mut conn, addr, request).await;
        let acknowledged = Instant::now();
        stats::record(&mut log.orders, acknowledged - sent);
        *log.order_status.entry(status_key(&reply)).or_default() += 1;
        log.second(&sale, sent).attempts += 1;
        let order_id = match &reply {
            Ok(r) if r.status == 201 => match r.json() {
                Ok(order) => order["id"].as_str().unwrap_or_default().to_owned(),
                Err(e) => {
                    log.odd(format!("order 201 without JSON: {e:#}"));
                    continue;
                }
            },
            // The expected loss: someone else holds or bought the ticket.
            Ok(r) if r.status == 400 => continue,
            _ => {
                log.odd(describe("order", &reply));
                continue;
            }
        };
        log.second(&sale, acknowledged).orders_created += 1;
        let fate = if rng.unit() < sale.settings.pay_probability {
            if sale
                .to_pay
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(sale.settings.sample_every)
            {
                // Only to an idle sampler: a sample that waited for one would measure the
                // samplers, not the event.
                let idle = sale.sampler_idle.iter().position(|idle| {
                    idle.compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                });
                match idle {
                    Some(i) => {
                        let _ = samples[i].try_send(Sample {
                            order_id: order_id.clone(),
                            ticket_path: format!("/api/tickets/{}", sale.tickets[ticket]),
                            acknowledged,
                        });
                    }
                    None => log.samples_skipped_busy += 1,
                }
            }
            if pay(&mut conn, &sale, &cookie, &order_id, &mut log).await {
                stats::record(&mut log.order_to_payment, acknowledged.elapsed());
                log.second(&sale, Instant::now()).paid += 1;
                sale.record_payment(ticket, &mut log);
                Fate::Paid
            } else {
                log.payments_given_up += 1;
                if cancel(&mut conn, &sale, &cookie, &order_id, &mut log).await {
                    Fate::Cancelled
                } else {
                    Fate::Unsettled
                }
            }
        } else if cancel(&mut conn, &sale, &cookie, &order_id, &mut log).await {
            Fate::Cancelled
        } else {
            Fate::Unsettled
        };
        log.placed.push(Placed { order_id, fate });
    }
    log
}

/// Follows each sample until its ticket shows the order: `GET /api/tickets/:id` back to
/// back (a sleep would round up to the timer's tick).
async fn sampler(
    addr: SocketAddr,
    sale: Arc<Sale>,
    me: usize,
    mut samples: mpsc::Receiver<Sample>,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut conn = Conn::open(addr).await?;
    let mut lag = stats::histogram();
    let mut timed_out = 0;
    while let Some(sample) = samples.recv().await {
        let give_up = sample.acknowledged + Duration::from_secs(10);
        loop {
            let reply = conn
                .send(load::request("GET", addr, &sample.ticket_path, &[], None))
                .await?;
            if reply.status == 200 && reply.json()?["orderId"] == sample.order_id.as_str() {
                stats::record(&mut lag, sample.acknowledged.elapsed());
                break;
            }
            if Instant::now() > give_up {
                timed_out += 1;
                break;
            }
        }
        sale.sampler_idle[me].store(true, Ordering::Release);
    }
    Ok((lag, timed_out))
}

/// Signs up `n` users `"{prefix}-{i}@example.com"`, a few at a time (a sign-up hashes a
/// password slowly on purpose).
pub async fn sign_up_many(
    addr: SocketAddr,
    prefix: &str,
    n: usize,
    parallel: usize,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..parallel.clamp(1, n.max(1)) {
        let next = next.clone();
        let prefix = prefix.to_owned();
        workers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(made);
                }
                made.push((
                    i,
                    sign_up(addr, &format!("{prefix}-{i}@example.com")).await?,
                ));
            }
        }));
    }
    let mut cookies = vec![String::new(); n];
    for worker in workers {
        for (i, cookie) in worker.await?? {
            cookies[i] = cookie;
        }
    }
    Ok(cookies)
}

/// Waits until the orders service knows every ticket: a probe user orders the last
/// ticket created until it is no longer a 404, cancels the order, and waits until the
/// ticket is back on sale (both events handled by the tickets service).
async fn wait_orders_know(addr: SocketAddr, probe: &str, last: &str) -> anyhow::Result<()> {
    let mut conn = Conn::open(addr).await?;
    let (_, order) = place_order(&mut conn, addr, probe, last, Duration::from_secs(120)).await?;
    let order_id = order["id"].as_str().context("order without id")?;
    conn.send(load::request(
        "DELETE",
        addr,
        &format!("/api/orders/{order_id}"),
        &[("cookie", probe)],
        None,
    ))
    .await?
    .expect_status(204, "cancelling the probe's order")?;
    // Version 0 at creation, 1 once reserved, 2 once released.
    let path = format!("/api/tickets/{last}");
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let ticket = conn
            .send(load::request("GET", addr, &path, &[], None))
            .await?
            .json()?;
        if ticket["version"].as_u64() >= Some(2) && ticket["orderId"].is_null() {
            return Ok(());
        }
        if Instant::now() > give_up {
            bail!("the probe's ticket is not back on sale after 60 s: {ticket}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs a flash sale against the app at `addr` (a fresh one: the sale's users and tickets
/// are the only ones) and audits it. `platform` names it in the report.
pub async fn run(
    addr: SocketAddr,
    platform: &str,
    settings: &FlashSettings,
) -> anyhow::Result<FlashResult> {
    let n = settings.tickets.max(1);
    eprintln!(
        "- flash sale on {platform}: {n} tickets, {} buyers, pay {:.0}%, limit {:?}",
        settings.buyers,
        settings.pay_probability * 100.0,
        settings.time_limit
    );
    let seller = sign_up(addr, "flash-seller@example.com").await?;
    let probe = sign_up(addr, "flash-probe@example.com").await?;
    // All but the last at once; the last alone, after them, is the one the probe orders.
    let most = seed::create_tickets(addr, &seller, n - 1, 16, "Flash").await?;
    let last = seed::create_tickets(addr, &seller, 1, 1, "Flash last").await?;
    let create_s = (most.elapsed + last.elapsed).as_secs_f64();
    let create_retries = most.retried + last.retried;
    let create_rate = most.per_second();
    let tickets: Vec<String> = most.ids.into_iter().chain(last.ids).collect();
    let cookies = sign_up_many(addr, "flash-buyer", settings.buyers, 8).await?;
    let ready = Instant::now();
    wait_orders_know(addr, &probe, tickets.last().expect("n >= 1")).await?;
    let orders_ready_s = ready.elapsed().as_secs_f64();
    eprintln!(
        "  {n} tickets in {create_s:.1} s ({:.0}/s, {create_retries} creates sent again), {} buyers signed up, orders service ready in {orders_ready_s:.2} s",
        create_rate,
        cookies.len()
    );

    let mut conns = Vec::new();
    for _ in &cookies {
        conns.push(Conn::open(addr).await?);
    }
    let barrier = Arc::new(Barrier::new(cookies.len() + 1));
    // The sale's clock starts here; the buyers are spawned and let go within microseconds.
    let start = Instant::now();
    let sale = Arc::new(Sale {
        addr,
        tickets,
        settings: settings.clone(),
        start,
        deadline: start + settings.time_limit,
        paid: Mutex::new(HashSet::new()),
        sold_out: AtomicBool::new(false),
        sold_out_after: Mutex::new(None),
        half_paid: Mutex::new(None),
        attempts: AtomicU64::new(0),
        to_pay: AtomicU64::new(0),
        sampler_idle: (0..SAMPLERS).map(|_| AtomicBool::new(true)).collect(),
    });
    let (mut sample_tx, mut samplers) = (Vec::new(), Vec::new());
    for i in 0..SAMPLERS {
        let (tx, rx) = mpsc::channel(1);
        sample_tx.push(tx);
        samplers.push(tokio::spawn(sampler(addr, sale.clone(), i, rx)));
    }
    let server_pid = procs::listener_pid(addr.port());
    let cpu_before = server_pid.and_then(procs::tree_cpu_time_us);
    let mut buyers = Vec::new();
    for (i, (cookie, conn)) in cookies.iter().zip(conns).enumerate() {
        buyers.push(tokio::spawn(buyer(
            sale.clone(),
            cookie.clone(),
            0x5eed_0000 + i as u64,
            Some(conn),
            barrier.clone(),
            sample_tx.clone(),
        )));
    }
    drop(sample_tx);
    barrier.wait().await;
    let mut log = BuyerLog::new();
    let mut placed_by = Vec::new();
    for (i, b) in buyers.into_iter().enumerate() {
        let mut one = b.await?;
        placed_by.extend(one.placed.drain(..).map(|p| (i, p)));
        log.merge(one);
    }
    let sale_s = sale.start.elapsed().as_secs_f64();
    let server_cpu_us = match (server_pid.and_then(procs::tree_cpu_time_us), cpu_before) {
        (Some(after), Some(before)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let (mut lag, mut timed_out) = (stats::histogram(), 0);
    for sampler in samplers {
        let (one, out) = sampler.await??;
        lag.add(one).expect("same bounds");
        timed_out += out;
    }
    let sold_out_after = *sale.sold_out_after.lock().expect("not poisoned");
    let half_paid = *sale.half_paid.lock().expect("not poisoned");
    let attempts: u64 = log.timeline.iter().map(|s| s.attempts).sum();
    let attempts_until_half =
        half_paid.map(|(after, attempts)| attempts as f64 / after.as_secs_f64().max(1e-3));
    let count = |fate: Fate| placed_by.iter().filter(|(_, p)| p.fate == fate).count() as u64;
    eprintln!(
        "  sale: {attempts} attempts in {sale_s:.1} s ({:.0}/s), sold out: {}, statuses {:?}",
        attempts as f64 / sale_s,
        sold_out_after.map_or("no".into(), |d| format!("after {:.2} s", d.as_secs_f64())),
        log.order_status
    );
    let audit = audit(
        addr,
        &sale.tickets,
        &cookies,
        &placed_by,
        sold_out_after.is_some(),
        settings.settle_limit,
    )
    .await?;
    if audit.passed {
        eprintln!(
            "  audit passed (settled after {:.2} s)",
            audit.settled_after_s
        );
    } else {
        eprintln!("  !!! AUDIT FAILED on {platform}: {audit:#?}");
    }
    Ok(FlashResult {
        platform: platform.into(),
        tickets: n,
        buyers: cookies.len(),
        pay_probability: settings.pay_probability,
        time_limit_s: settings.time_limit.as_secs_f64(),
        create_s,
        orders_ready_s,
        sale_s,
        sold_out_after_s: sold_out_after.map(|d| d.as_secs_f64()),
        half_paid_after_s: half_paid.map(|(after, _)| after.as_secs_f64()),
        attempts,
        attempts_per_s: attempts as f64 / sale_s,
        attempts_per_s_until_half_paid: attempts_until_half,
        order_status: log.order_status,
        payment_status: log.payment_status,
        cancel_status: log.cancel_status,
        orders: Latency::of(&log.orders),
        payments: Latency::of(&log.payments),
        cancels: Latency::of(&log.cancels),
        paid: count(Fate::Paid),
        cancelled: count(Fate::Cancelled),
        payments_given_up: log.payments_given_up,
        ticket_shows_order: Lag::of(&lag),
        ticket_shows_order_timed_out: timed_out,
        samples_skipped_busy: log.samples_skipped_busy,
        order_to_payment: Lag::of(&log.order_to_payment),
        server_cpu_us_per_attempt: server_cpu_us
            .filter(|_| attempts > 0)
            .map(|cpu| cpu as f64 / attempts as f64),
        timeline: log.timeline,
        odd_replies: log.odd,
        audit,
    })
}

/// An order as its buyer's listing shows it.
struct Listed {
    status: String,
    ticket_id: String,
}

/// Every order of every buyer, from `GET /api/orders` followed along its `next` links.
async fn list_orders(
    conn: &mut Conn,
    addr: SocketAddr,
    cookies: &[String],
) -> anyhow::Result<HashMap<String, Listed>> {
    let mut orders = HashMap::new();
    for cookie in cookies {
        let mut path = Some("/api/orders?limit=100".to_owned());
        while let Some(page) = path.take() {
            let reply = conn
                .send(load::request(
                    "GET",
                    addr,
                    &page,
                    &[("cookie", cookie)],
                    None,
                ))
                .await?
                .expect_status(200, &format!("GET {page}"))?;
            for order in reply.json()?.as_array().context("not an array")? {
                orders.insert(
                    order["id"].as_str().unwrap_or_default().to_owned(),
                    Listed {
                        status: order["status"].as_str().unwrap_or_default().to_owned(),
                        ticket_id: order["ticket"]["id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    },
                );
            }
            path = load::next_link(&reply.headers);
        }
    }
    Ok(orders)
}

/// Reads every buyer's orders and every ticket back, again every half second until the
/// checks that events settle hold (or `settle_limit`), and says what does not hold.
async fn audit(
    addr: SocketAddr,
    tickets: &[String],
    cookies: &[String],
    placed: &[(usize, Placed)],
    sold_out: bool,
    settle_limit: Duration,
) -> anyhow::Result<Audit> {
    let started = Instant::now();
    let mut conn = Conn::open(addr).await?;
    loop {
        let listed = list_orders(&mut conn, addr, cookies).await?;
        let mut shown: Vec<Option<String>> = Vec::with_capacity(tickets.len());
        for id in tickets {
            let ticket: Value = conn
                .send(load::request(
                    "GET",
                    addr,
                    &format!("/api/tickets/{id}"),
                    &[],
                    None,
                ))
                .await?
                .json()?;
            shown.push(ticket["orderId"].as_str().map(str::to_owned));
        }
        let audit = check(tickets, &shown, &listed, placed, sold_out);
        let settled = audit.paid_not_complete == 0
            && audit.complete_not_paid == 0
            && audit.cancelled_not_cancelled == 0
            && audit.ticket_shows_other_order == 0
            && audit.ticket_reserved_by_no_order == 0;
        if settled || started.elapsed() > settle_limit {
            return Ok(Audit {
                settled,
                settled_after_s: started.elapsed().as_secs_f64(),
                ..audit
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The audit's checks on one reading of the orders (`listed`) and of the tickets' `orderId`
/// (`shown`, in the order of `tickets`).
fn check(
    tickets: &[String],
    shown: &[Option<String>],
    listed: &HashMap<String, Listed>,
    placed: &[(usize, Placed)],
    sold_out: bool,
) -> Audit {
    const EXAMPLES: usize = 10;
    let mut a = Audit {
        orders_listed: listed.len(),
        orders_acknowledged: placed.len(),
        ..Audit::default()
    };
    fn problem(a: &mut Audit, what: String) {
        if a.problems.len() < EXAMPLES {
            a.problems.push(what);
        }
    }
    let fates: HashMap<&str, &Placed> = placed
        .iter()
        .map(|(_, p)| (p.order_id.as_str(), p))
        .collect();
    let mut complete_of: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut holding: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, order) in listed {
        if order.status == "complete" {
            a.complete += 1;
            complete_of.entry(&order.ticket_id).or_default().push(id);
        }
        if order.status != "cancelled" {
            holding.entry(&order.ticket_id).or_default().push(id);
        }
        match fates.get(id.as_str()) {
            None => {
                a.unknown += 1;
                problem(&mut a, format!("order {id} ({}) got no 201", order.status));
            }
            Some(p) if p.fate == Fate::Paid && order.status != "complete" => {
                a.paid_not_complete += 1;
                problem(
                    &mut a,
                    format!("order {id} was paid (201) but is {}", order.status),
                );
            }
            Some(p) if p.fate != Fate::Paid && order.status == "complete" => {
                a.complete_not_paid += 1;
                problem(
                    &mut a,
                    format!("order {id} is complete without a payment 201"),
                );
            }
            Some(p) if p.fate == Fate::Cancelled && order.status != "cancelled" => {
                a.cancelled_not_cancelled += 1;
                problem(
                    &mut a,
                    format!("order {id} was cancelled (204) but is {}", order.status),
                );
            }
            Some(_) => {}
        }
    }
    for (_, p) in placed {
        if !listed.contains_key(&p.order_id) {
            a.missing += 1;
            problem(
                &mut a,
                format!("order {} (201) is not in its buyer's listing", p.order_id),
            );
        }
    }
    for (ticket, shows) in tickets.iter().zip(shown) {
        let complete = complete_of
            .get(ticket.as_str())
            .map_or(&[][..], |v| v.as_slice());
        match complete.len() {
            0 => {}
            1 => a.tickets_sold += 1,
            _ => {
                a.oversold += 1;
                problem(&mut a, format!("ticket {ticket} oversold: {complete:?}"));
            }
        }
        let holders = holding
            .get(ticket.as_str())
            .map_or(&[][..], |v| v.as_slice());
        if holders.len() > 1 {
            a.double_reserved += 1;
            problem(
                &mut a,
                format!("ticket {ticket} held by several orders: {holders:?}"),
            );
        }
        if let [one] = complete {
            if shows.as_deref() != Some(*one) {
                a.ticket_shows_other_order += 1;
                problem(
                    &mut a,
                    format!("ticket {ticket} sold to {one} shows orderId {shows:?}"),
                );
            }
        } else if holders.is_empty() {
            if let Some(order) = shows {
                a.ticket_reserved_by_no_order += 1;
                problem(
                    &mut a,
                    format!("ticket {ticket} shows orderId {order} but no order holds it"),
                );
            }
        }
    }
    if sold_out && a.tickets_sold != tickets.len() {
        let what = format!(
            "sold out, but {} of {} tickets have a complete order",
            a.tickets_sold,
            tickets.len()
        );
        problem(&mut a, what);
    }
    a.passed = a.oversold == 0
        && a.double_reserved == 0
        && a.paid_not_complete == 0
        && a.complete_not_paid == 0
        && a.cancelled_not_cancelled == 0
        && a.missing == 0
        && a.unknown == 0
        && a.ticket_shows_other_order == 0
        && a.ticket_reserved_by_no_order == 0
        && (!sold_out || a.tickets_sold == tickets.len());
    a
}

impl FlashSettings {
    pub fn from_args(args: &crate::Args) -> FlashSettings {
        FlashSettings {
            tickets: args.flash_tickets.max(1),
            buyers: args.flash_buyers.max(1),
            pay_probability: args.flash_pay.clamp(0.0, 1.0),
            time_limit: Duration::from_secs_f64(args.flash_seconds),
            sample_every: 5,
            settle_limit: Duration::from_secs(if args.smoke { 15 } else { 30 }),
        }
    }
}

/// The flash sale on the embedded default, on Redis + NATS and, when a `spin` binary is
/// there, on the full app under Spin (same servers as the host's Redis + NATS); each on a
/// fresh app. A platform that fails is reported as not measured and the others run.
pub async fn part(ctx: &mut Ctx) {
    let settings = FlashSettings::from_args(&ctx.args);
    let mut results: Vec<FlashResult> = Vec::new();
    for platform in [Platform::Embedded, Platform::Servers] {
        let outcome = async {
            let (addr, _app) = ctx.fresh_app(platform)?;
            run(addr, &format!("host, {}", platform.label()), &settings).await
        }
        .await;
        match outcome {
            Ok(r) => results.push(r),
            Err(e) => ctx
                .report
                .not_measured
                .push(format!("flash sale on {}: failed: {e:#}", platform.label())),
        }
    }
    if ctx.args.skip.iter().any(|s| s == "spin") {
        ctx.report
            .not_measured
            .push("flash sale on Spin: skipped (--skip spin)".into());
    } else if let Some(binary) = spin::find(ctx.args.spin.as_deref()) {
        eprintln!("- starting the full app under `{} up`", binary.display());
        let started = spin::start_full_app(
            &binary,
            &ctx.root,
            &ctx.app,
            ctx.dir.path(),
            procs::JWT_SECRET,
        );
        match started {
            Ok(app) => {
                let platform = format!("{}, trigger-nats, Redis + NATS", app.version);
                match run(app.spin.addr(), &platform, &settings).await {
                    Ok(r) => results.push(r),
                    Err(e) => ctx.report.not_measured.push(format!(
                        "flash sale on Spin: failed: {e:#} (Spin's log: {})",
                        app.spin.log.display()
                    )),
                }
            }
            Err(e) => ctx
                .report
                .not_measured
                .push(format!("flash sale on Spin: did not start: {e:#}")),
        }
    } else {
        ctx.report
            .not_measured
            .push("flash sale on Spin: no `spin` on PATH (or give --spin PATH)".into());
    }
    let rate = |label: &str| {
        results
            .iter()
            .find(|r| r.platform.starts_with(label))
            .map(|r| r.attempts_per_s)
    };
    let embedded = rate("host, embedded");
    let servers = rate("host, Redis");
    let on_spin = results
        .iter()
        .find(|r| !r.platform.starts_with("host"))
        .map(|r| r.attempts_per_s);
    if let (Some(e), Some(s)) = (embedded, servers) {
        ctx.report.ratios.push((
            "flash sale order attempts/s: embedded / Redis + NATS".into(),
            e / s,
        ));
    }
    if let (Some(s), Some(spin)) = (servers, on_spin) {
        ctx.report.ratios.push((
            "flash sale order attempts/s: host / Spin (both Redis + NATS)".into(),
            s / spin,
        ));
    }
    ctx.report.flash = results;
}

/// The flash sale's tables and audits for the Markdown report.
pub fn markdown(results: &[FlashResult]) -> String {
    let mut s = String::new();
    let first = &results[0];
    s += &format!(
        "\nFlash sale: {} tickets, {} buyers (each its own user and connection) ordering a random one of them, paying {:.0}% of the orders they get and cancelling the rest, until sold out or {:.0} s. Server CPU per order attempt (its payment or cancel included): the process serving HTTP and its children (Spin's trigger plugin), not Redis or NATS:\n\n",
        first.tickets,
        first.buyers,
        first.pay_probability * 100.0,
        first.time_limit_s
    );
    s += "| platform | sold out after s | order attempts | attempts/s, whole sale | attempts/s until half paid | orders 201 / 400 / other | paid / cancelled | server CPU µs/attempt |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in results {
        let count = |status: &str| r.order_status.get(status).copied().unwrap_or(0);
        let other: Vec<String> = r
            .order_status
            .iter()
            .filter(|(status, _)| !["201", "400"].contains(&status.as_str()))
            .map(|(status, n)| format!("{n}× {status}"))
            .collect();
        s += &format!(
            "| {} | {} | {} | {:.0} | {} | {} / {} / {} | {} / {} | {} |\n",
            r.platform,
            r.sold_out_after_s
                .map_or(format!("not sold out ({:.0} s)", r.sale_s), |t| format!(
                    "{t:.2}"
                )),
            r.attempts,
            r.attempts_per_s,
            r.attempts_per_s_until_half_paid
                .map_or("-".into(), |v| format!("{v:.0}")),
            count("201"),
            count("400"),
            if other.is_empty() {
                "0".into()
            } else {
                other.join(", ")
            },
            r.paid,
            r.cancelled,
            r.server_cpu_us_per_attempt
                .map_or("-".into(), |v| format!("{v:.0}")),
        );
    }
    s += "\n| platform | POST /api/orders ms p50 / p99 / p99.9 / max | POST /api/payments ms | DELETE /api/orders/:id ms | order 201 → ticket shows it, ms p50 / p99 / max (samples) | order 201 → payment 201, ms p50 / p99 / max | payment replies 503 / 404 |\n|---|---:|---:|---:|---:|---:|---:|\n";
    for r in results {
        let payment = |status: &str| r.payment_status.get(status).copied().unwrap_or(0);
        s += &format!(
            "| {} | {} | {} | {} | {} ({}, {} skipped{}) | {} | {} / {} |\n",
            r.platform,
            r.orders.ms_row(),
            r.payments.ms_row(),
            r.cancels.ms_row(),
            r.ticket_shows_order.ms_row(),
            r.ticket_shows_order.samples,
            r.samples_skipped_busy,
            if r.ticket_shows_order_timed_out > 0 {
                format!(", {} timed out", r.ticket_shows_order_timed_out)
            } else {
                String::new()
            },
            r.order_to_payment.ms_row(),
            payment("503"),
            payment("404"),
        );
    }
    s += &format!("\nOrder 201 → ticket shows it: {SAMPLERS} samplers, each on its own connection, follow every 5th order about to be paid (`GET /api/tickets/:id` back to back), skipped when all are busy.\n");
    s += "\nAudit after the sale (every buyer's orders and every ticket read back once events settled):\n\n";
    for r in results {
        let a = &r.audit;
        let verdict = if a.passed {
            "passed".to_owned()
        } else {
            "**AUDIT FAILED**".to_owned()
        };
        s += &format!(
            "- {}: {verdict}: {} tickets sold, {} oversold, {} held by two orders; {} orders listed ({} got a 201), {} complete; paid but not complete {}, complete without a payment {}, cancelled but not cancelled {}, missing {}, unknown {}; tickets showing another order {}, reserved by no order {}; {} after {:.1} s\n",
            r.platform,
            a.tickets_sold,
            a.oversold,
            a.double_reserved,
            a.orders_listed,
            a.orders_acknowledged,
            a.complete,
            a.paid_not_complete,
            a.complete_not_paid,
            a.cancelled_not_cancelled,
            a.missing,
            a.unknown,
            a.ticket_shows_other_order,
            a.ticket_reserved_by_no_order,
            if a.settled { "settled" } else { "NOT settled" },
            a.settled_after_s,
        );
        for problem in &a.problems {
            s += &format!("  - {problem}\n");
        }
        for odd in &r.odd_replies {
            s += &format!("  - unexpected reply: {odd}\n");
        }
    }
    s
}

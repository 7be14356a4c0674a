//! `ticketing-bench`: starts what it measures (the release `ticketing` host on the embedded
//! store and on Redis, `redis-server`, `nats-server`, `wasmtime serve` when installed, a
//! native hyper server) and measures it with its own closed-loop load generator. Prints a
//! Markdown table and writes `bench/report.json` (and `bench/report.md`).
//!
//! ```text
//! cargo build --release -p ticketing-host -p ticketing-bench
//! target/release/ticketing-bench [-c 16] [-d 5] [--warmup 1] [--smoke]
//! ```
//! See BENCHMARKS.md for the figures and what limits each one.

mod catalogue;
mod flash;
mod load;
mod metrics_cost;
mod micro;
mod native;
mod procs;
mod recovery;
mod seed;
mod spin;
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde::Serialize;
use serde_json::{json, Value};

use load::{Conn, LoadResult, LoadSpec, MakeRequest};
use procs::{HostSpec, Service};

#[derive(Debug, Parser)]
#[command(
    name = "ticketing-bench",
    about = "Benchmarks the ticketing host (see BENCHMARKS.md)"
)]
struct Args {
    /// Concurrent keep-alive connections of each load run.
    #[arg(short = 'c', long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds of each load run.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up seconds before each load run (same connections, not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Host vs `wasmtime serve` hello rounds, interleaved.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Purchase-flow samples (one order each, one after the other).
    #[arg(long, default_value_t = 200)]
    purchases: usize,
    /// Timers of the burst measurement (all due within one second); the steady one has a
    /// tenth of them due over 5 s beside this many pending.
    #[arg(long, default_value_t = 100_000)]
    timers: usize,
    /// A few seconds end to end at small concurrency: checks the bench works, measures
    /// nothing worth reporting.
    #[arg(long)]
    smoke: bool,
    /// The host binary [default: target/release/ticketing].
    #[arg(long)]
    host_bin: Option<PathBuf>,
    /// Instantiations of each component in the instantiation measurement.
    #[arg(long, default_value_t = 5_000)]
    instantiations: usize,
    /// The `spin` binary to compare with [default: `spin` on PATH; without one, the Spin
    /// rows are not measured].
    #[arg(long)]
    spin: Option<PathBuf>,
    /// The app to serve [default: the workspace's spin.toml]; its component sources are
    /// relative to the workspace.
    #[arg(long)]
    app: Option<PathBuf>,
    /// Crash-recovery samples per platform (SIGKILL right after an order, restart).
    #[arg(long, default_value_t = 5)]
    crashes: usize,
    /// Flash sale: tickets on sale.
    #[arg(long, default_value_t = 500)]
    flash_tickets: usize,
    /// Flash sale: buyers, each its own user on its own connection.
    #[arg(long, default_value_t = 100)]
    flash_buyers: usize,
    /// Flash sale: the chance a buyer pays for an order it got (else it cancels it).
    #[arg(long, default_value_t = 0.75)]
    flash_pay: f64,
    /// Flash sale: seconds before the sale ends if the tickets have not sold out.
    #[arg(long, default_value_t = 60.0)]
    flash_seconds: f64,
    /// Catalogue sizes (tickets), comma-separated; each size on an app of its own.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 20_000, 200_000])]
    catalogue_sizes: Vec<usize>,
    /// Skip parts: hello, wasmtime, spin, tickets, metrics, redis, purchase, recovery,
    /// timers, instantiation, flash, catalogue.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Run only these parts (same names as --skip).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Leave the bench's temporary directory (every server's log and state) in place, to
    /// read what a server said about a failure.
    #[arg(long)]
    keep_dir: bool,
    /// Where the JSON report goes (the Markdown beside it, as .md) [default:
    /// bench/report.json; with --smoke, target/bench-smoke.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Run {
    name: String,
    target: String,
    #[serde(flatten)]
    result: LoadResult,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    command: String,
    machine: Value,
    settings: Value,
    runs: Vec<Run>,
    ratios: Vec<(String, f64)>,
    purchase: Option<Value>,
    /// Crash recovery per platform.
    recovery: Vec<recovery::RecoveryResult>,
    timers: Vec<micro::TimersResult>,
    instantiation: Vec<micro::InstantiationResult>,
    /// The flash sale, per platform.
    flash: Vec<flash::FlashResult>,
    /// The catalogue at each size, per platform.
    catalogue: Vec<catalogue::CatalogueResult>,
    /// The native ceiling's ticket reads, for the Redis ratio.
    native_read_rps: Option<f64>,
    rss_kib: Vec<(String, u64)>,
    wasm_bytes: Vec<(String, u64)>,
    not_measured: Vec<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace")
        .to_path_buf()
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.concurrency = args.concurrency.min(4);
        args.duration = 1.0;
        args.warmup = 0.3;
        args.rounds = 1;
        args.purchases = args.purchases.min(3);
        args.crashes = args.crashes.min(1);
        args.timers = args.timers.min(2_000);
        args.flash_tickets = args.flash_tickets.min(30);
        args.flash_buyers = args.flash_buyers.min(8);
        args.flash_seconds = args.flash_seconds.min(20.0);
        for size in &mut args.catalogue_sizes {
            // Above the catalogue's 100 reference tickets.
            *size = (*size / 100).max(150);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

struct Ctx {
    args: Args,
    root: PathBuf,
    dir: tempfile::TempDir,
    /// The app's spin.toml as it was when the bench started (a copy in `dir`): edits made
    /// while the bench runs do not change what it serves.
    app: PathBuf,
    /// `app` plus `hello`, as every host of the bench serves it.
    manifest: PathBuf,
    report: Report,
}

impl Ctx {
    fn spec(&self, concurrency: usize, expect: u16) -> LoadSpec {
        LoadSpec {
            concurrency,
            warmup: Duration::from_secs_f64(self.args.warmup),
            duration: Duration::from_secs_f64(self.args.duration),
            expect,
        }
    }

    /// Whether `part` runs: not in --skip, and in --only when that is given.
    fn wanted(&self, part: &str) -> bool {
        !self.args.skip.iter().any(|s| s == part)
            && (self.args.only.is_empty() || self.args.only.iter().any(|s| s == part))
    }

    async fn load(
        &mut self,
        name: &str,
        target: &str,
        addr: SocketAddr,
        spec: LoadSpec,
        make: MakeRequest,
    ) -> anyhow::Result<LoadResult> {
        eprintln!("- {name} on {target} (c={})", spec.concurrency);
        // The server's CPU over the measured window (between the warm-up and the end).
        let server_cpu = procs::listener_pid(addr.port()).map(|pid| {
            let (warmup, duration) = (spec.warmup, spec.duration);
            tokio::spawn(async move {
                tokio::time::sleep(warmup).await;
                let from = procs::cpu_time_us(pid)?;
                tokio::time::sleep(duration).await;
                Some(procs::cpu_time_us(pid)?.saturating_sub(from))
            })
        });
        let mut result = load::run(addr, spec, make).await?;
        if let Some(task) = server_cpu {
            if let Ok(Some(cpu_us)) = task.await {
                result.server_cpu_us_per_request =
                    (result.requests > 0).then(|| cpu_us as f64 / result.requests as f64);
            }
        }
        eprintln!(
            "  {:.0} req/s, p50 {} µs, p99 {} µs, {} errors, server CPU {} µs/request",
            result.rps,
            result.p50_us,
            result.p99_us,
            result.errors,
            result
                .server_cpu_us_per_request
                .map_or("-".to_owned(), |cpu| format!("{cpu:.0}"))
        );
        self.report.runs.push(Run {
            name: name.into(),
            target: target.into(),
            result: result.clone(),
        });
        Ok(result)
    }

    fn host(
        &self,
        redis_url: Option<String>,
        vars: Vec<(&str, String)>,
    ) -> anyhow::Result<Service> {
        self.host_at(None, redis_url, vars)
    }

    /// A host on the state directory `state_dir` (a new one if `None`).
    fn host_at(
        &self,
        state_dir: Option<&Path>,
        redis_url: Option<String>,
        vars: Vec<(&str, String)>,
    ) -> anyhow::Result<Service> {
        let binary = self
            .args
            .host_bin
            .clone()
            .unwrap_or_else(|| self.root.join("target/release/ticketing"));
        let manifest = &self.manifest;
        procs::host(
            self.dir.path(),
            HostSpec {
                binary: &binary,
                manifest,
                redis_url,
                vars,
                state_dir,
                admin_listen: None,
            },
        )
    }
}

/// A host on the production setup and the servers it uses (dropped host first).
struct OnServers {
    host: Service,
    _redis: Service,
    _nats: Service,
}

impl Ctx {
    /// The host on the production setup: Redis store and timers, NATS JetStream bus, both
    /// servers started for it.
    fn host_on_servers(&self) -> anyhow::Result<OnServers> {
        let nats = procs::nats(self.dir.path())?;
        let redis = procs::redis(self.dir.path())?;
        let redis_url = format!("redis://127.0.0.1:{}", redis.port);
        let host = self.host(
            Some(redis_url.clone()),
            vec![
                ("nats_url", format!("nats://127.0.0.1:{}", nats.port)),
                ("timers_url", redis_url),
            ],
        )?;
        Ok(OnServers {
            host,
            _redis: redis,
            _nats: nats,
        })
    }

    /// A fresh app on `platform`: its address, and what keeps it (and its servers) running
    /// until dropped.
    fn fresh_app(
        &self,
        platform: recovery::Platform,
    ) -> anyhow::Result<(SocketAddr, Box<dyn std::any::Any>)> {
        Ok(match platform {
            recovery::Platform::Embedded => {
                let host = self.host(None, vec![])?;
                (host.addr(), Box::new(host))
            }
            recovery::Platform::Servers => {
                let servers = self.host_on_servers()?;
                (servers.host.addr(), Box::new(servers))
            }
        })
    }
}

/// The bench's app: the ticketing app of spin.toml as it is, plus the minimal `hello`
/// component on /hello, written into the bench's temporary dir (component sources made
/// absolute so they still point at the workspace's build output).
fn bench_manifest(root: &Path, app: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let app = std::fs::read_to_string(app)?;
    let root = root.display();
    let manifest = app.replace("source = \"", &format!("source = \"{root}/"))
        + &format!(
            "\n[[trigger.http]]\nroute = \"/hello\"\ncomponent = \"hello\"\n\n\
             [component.hello]\nsource = \"{root}/target/wasm32-wasip2/release/ticketing_hello.wasm\"\n"
        );
    let path = dir.join("spin.toml");
    std::fs::write(&path, manifest)?;
    Ok(path)
}

fn get(addr: SocketAddr, path: &str) -> MakeRequest {
    let path = path.to_owned();
    Arc::new(move |_| load::request("GET", addr, &path, &[], None))
}

/// Signs a new user up and returns the session cookie (`name=value`).
async fn sign_up(addr: SocketAddr, email: &str) -> anyhow::Result<String> {
    let mut conn = Conn::open(addr).await?;
    let body = json!({"email": email, "password": "bench-password"});
    let reply = conn
        .send(load::request(
            "POST",
            addr,
            "/api/users/signup",
            &[],
            Some(&body),
        ))
        .await?
        .expect_status(201, "sign-up")?;
    let cookie = reply
        .headers
        .get("set-cookie")
        .context("sign-up set no cookie")?
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(cookie)
}

/// Creates `n` tickets as the user of `cookie`; returns them as the API showed them.
async fn create_tickets(addr: SocketAddr, cookie: &str, n: usize) -> anyhow::Result<Vec<Value>> {
    let mut conn = Conn::open(addr).await?;
    let mut tickets = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"title": format!("Concert {i}"), "price": 20 + i});
        let reply = conn
            .send(load::request(
                "POST",
                addr,
                "/api/tickets",
                &[("cookie", cookie)],
                Some(&body),
            ))
            .await?
            .expect_status(201, "create ticket")?;
        tickets.push(reply.json()?);
    }
    Ok(tickets)
}

/// Ticket read and create against one host (`platform`: "embedded" or "redis"); returns
/// the tickets it created for reads.
async fn tickets_scenario(
    ctx: &mut Ctx,
    host: &Service,
    platform: &str,
) -> anyhow::Result<(Vec<Value>, LoadResult)> {
    let addr = host.addr();
    let cookie = sign_up(addr, &format!("seller-{platform}@example.com")).await?;
    let target = match platform {
        "redis" => "host, Redis store, NATS bus",
        _ => "host, embedded store and bus",
    };
    let tickets = create_tickets(addr, &cookie, 100).await?;
    let paths = Arc::new(ticket_paths(&tickets));
    let c = ctx.args.concurrency;
    let read = ctx
        .load(
            "ticket read (GET /api/tickets/:id)",
            target,
            addr,
            ctx.spec(c, 200),
            read_tickets(addr, paths),
        )
        .await?;
    let create_cookie = cookie.clone();
    ctx.load(
        "ticket create (POST /api/tickets)",
        target,
        addr,
        ctx.spec(c, 201),
        Arc::new(move |n| {
            let body = json!({"title": format!("Load {n}"), "price": 10});
            load::request(
                "POST",
                addr,
                "/api/tickets",
                &[("cookie", &create_cookie)],
                Some(&body),
            )
        }),
    )
    .await?;
    Ok((tickets, read))
}

/// Spin beside the host: its server, and the tickets it serves for the read runs.
struct SpinSide {
    peer: spin::SpinPeer,
    ticket_paths: Option<Arc<Vec<String>>>,
}

/// Starts Spin when a `spin` binary is there and creates its tickets through its app; says
/// why in the report when it cannot, and the bench carries on without it.
async fn spin_peer(ctx: &mut Ctx) -> Option<SpinSide> {
    if !ctx.wanted("spin") {
        ctx.report
            .not_measured
            .push("Spin: skipped (--skip spin)".into());
        return None;
    }
    let Some(binary) = spin::find(ctx.args.spin.as_deref()) else {
        ctx.report
            .not_measured
            .push("Spin: no `spin` on PATH (or give --spin PATH)".into());
        return None;
    };
    eprintln!("- starting `{} up`", binary.display());
    let peer = match spin::start(
        &binary,
        &ctx.root,
        &ctx.app,
        ctx.dir.path(),
        procs::JWT_SECRET,
    ) {
        Ok(peer) => peer,
        Err(e) => {
            ctx.report
                .not_measured
                .push(format!("Spin: did not start: {e:#}"));
            return None;
        }
    };
    eprintln!("  {}", peer.version);
    ctx.report.settings["spin"] = json!(peer.version);
    let ticket_paths = if ctx.wanted("tickets") {
        let addr = peer.spin.addr();
        let seeded = async {
            let cookie = sign_up(addr, "seller-spin@example.com").await?;
            create_tickets(addr, &cookie, 100).await
        };
        match seeded.await {
            Ok(tickets) => Some(Arc::new(ticket_paths(&tickets))),
            Err(e) => {
                ctx.report.not_measured.push(format!(
                    "ticket read on Spin: creating its tickets failed: {e:#}"
                ));
                None
            }
        }
    } else {
        None
    };
    Some(SpinSide { peer, ticket_paths })
}

fn ticket_paths(tickets: &[Value]) -> Vec<String> {
    tickets
        .iter()
        .map(|t| format!("/api/tickets/{}", t["id"].as_str().unwrap_or_default()))
        .collect()
}

/// Reads of `paths` in turn.
fn read_tickets(addr: SocketAddr, paths: Arc<Vec<String>>) -> MakeRequest {
    Arc::new(move |n| load::request("GET", addr, &paths[n as usize % paths.len()], &[], None))
}

/// Highest VmRSS of `pid` while `f` runs (sampled every 50 ms).
async fn peak_rss<T>(pid: u32, f: impl std::future::Future<Output = T>) -> (T, u64) {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = procs::rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let out = f.await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    (out, peak.load(Ordering::Relaxed))
}

/// The host's hello req/s, p50 and p99 against a peer's, from the rounds each ran (none if the
/// peer did not run).
fn push_peer_ratios(
    ratios: &mut Vec<(String, f64)>,
    peer: &str,
    host: &[LoadResult],
    other: &[LoadResult],
) {
    if other.is_empty() {
        return;
    }
    let ratio = |f: fn(&LoadResult) -> f64| mean(host, f) / mean(other, f);
    ratios.push((format!("hello req/s: host / {peer}"), ratio(|r| r.rps)));
    ratios.push((
        format!("hello p50: host / {peer}"),
        ratio(|r| r.p50_us as f64),
    ));
    ratios.push((
        format!("hello p99: host / {peer}"),
        ratio(|r| r.p99_us as f64),
    ));
    // With the cores saturated, the req/s ratio is mostly this one's inverse (BENCHMARKS.md,
    // part 1: the load generator's share makes up the rest).
    if host
        .iter()
        .chain(other)
        .all(|r| r.server_cpu_us_per_request.is_some())
    {
        ratios.push((
            format!("hello server CPU per request: host / {peer}"),
            ratio(|r| r.server_cpu_us_per_request.unwrap_or_default()),
        ));
    }
}

fn mean(results: &[LoadResult], f: impl Fn(&LoadResult) -> f64) -> f64 {
    results.iter().map(f).sum::<f64>() / results.len().max(1) as f64
}

async fn run(args: Args) -> anyhow::Result<()> {
    let root = workspace_root();
    let wasm_dir = root.join("target/wasm32-wasip2/release");
    let components = [
        "hello",
        "auth",
        "tickets",
        "orders",
        "expiration",
        "payments",
    ];
    for c in components {
        let path = wasm_dir.join(format!("ticketing_{c}.wasm"));
        if !path.exists() {
            bail!(
                "{} is missing: run `bash scripts/bench.sh` (it builds the components)",
                path.display()
            );
        }
    }
    let host_bin = args
        .host_bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/ticketing"));
    if !host_bin.exists() {
        bail!(
            "{} is missing: `cargo build --release -p ticketing-host`",
            host_bin.display()
        );
    }
    // A smoke run checks the path; it does not replace the committed report.
    let default_json = if args.smoke {
        root.join("target/bench-smoke.json")
    } else {
        root.join("bench/report.json")
    };
    let json_path = args.json.clone().unwrap_or(default_json);
    let dir = tempfile::Builder::new()
        .prefix("ticketing-bench")
        .disable_cleanup(args.keep_dir)
        .tempdir()?;
    if args.keep_dir {
        eprintln!("servers' logs and state stay in {}", dir.path().display());
    }
    let app = dir.path().join("app.toml");
    let app_source = args.app.clone().unwrap_or_else(|| root.join("spin.toml"));
    std::fs::copy(&app_source, &app)
        .with_context(|| format!("copying {}", app_source.display()))?;
    let manifest = bench_manifest(&root, &app, dir.path())?;
    let mut ctx = Ctx {
        report: Report {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine: machine(),
            settings: json!({
                "concurrency": args.concurrency, "duration_s": args.duration,
                "warmup_s": args.warmup, "rounds": args.rounds, "smoke": args.smoke,
                "host_bin": host_bin.display().to_string(),
            }),
            ..Report::default()
        },
        args,
        root: root.clone(),
        dir,
        app,
        manifest,
    };
    for c in components {
        let bytes = std::fs::metadata(wasm_dir.join(format!("ticketing_{c}.wasm")))?.len();
        ctx.report.wasm_bytes.push((c.into(), bytes));
    }

    // 1 and 2: hello and tickets on one host on the embedded store, beside Spin.
    if ctx.wanted("hello") || ctx.wanted("tickets") {
        let spin = spin_peer(&mut ctx).await;
        let host = ctx.host(None, vec![])?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        ctx.report.rss_kib.push((
            "host idle (embedded store, all components loaded)".into(),
            host.rss_kib().unwrap_or(0),
        ));
        let hello = if ctx.wanted("hello") {
            Some(hello_vs_wasmtime(&mut ctx, &host, &wasm_dir, spin.as_ref()).await?)
        } else {
            None
        };
        if ctx.wanted("tickets") {
            tickets_vs_native(&mut ctx, host, hello, spin.as_ref()).await?;
        }
    }

    // 2a. What recording metrics costs: hello and ticket reads with and without.
    if !ctx.wanted("metrics") {
        ctx.report
            .not_measured
            .push("metrics on / off: skipped".into());
    } else {
        let manifest = ctx.manifest.clone();
        metrics_cost::metrics_on_off(&mut ctx, &manifest).await?;
    }

    // 2b. Tickets on the production setup: Redis store and timers, NATS JetStream bus.
    if !ctx.wanted("redis") {
        ctx.report
            .not_measured
            .push("tickets on Redis + NATS: skipped".into());
    } else {
        let servers = ctx.host_on_servers()?;
        let (_, redis_read) = tickets_scenario(&mut ctx, &servers.host, "redis").await?;
        if let Some(native_rps) = ctx.report.native_read_rps {
            ctx.report.ratios.push((
                "ticket read req/s (Redis): host / native hyper".into(),
                redis_read.rps / native_rps,
            ));
        }
    }

    // 3. Purchase flow on NATS + Redis.
    if !ctx.wanted("purchase") {
        ctx.report
            .not_measured
            .push("purchase flow: skipped".into());
    } else {
        match purchase(&mut ctx).await {
            Ok(v) => ctx.report.purchase = Some(v),
            Err(e) => ctx
                .report
                .not_measured
                .push(format!("purchase flow failed: {e:#}")),
        }
    }

    // 3b. Crash recovery: SIGKILL right after an order, restart, until the order's effect.
    if !ctx.wanted("recovery") {
        ctx.report
            .not_measured
            .push("crash recovery: skipped".into());
    } else {
        for platform in [recovery::Platform::Embedded, recovery::Platform::Servers] {
            match recovery::measure(&ctx, platform, ctx.args.crashes).await {
                Ok(r) => ctx.report.recovery.push(r),
                Err(e) => ctx
                    .report
                    .not_measured
                    .push(format!("crash recovery ({platform:?}) failed: {e:#}")),
            }
        }
    }

    // 3c. A flash sale: many buyers racing for a few hundred tickets, then an audit.
    if !ctx.wanted("flash") {
        ctx.report.not_measured.push("flash sale: skipped".into());
    } else {
        flash::part(&mut ctx).await;
    }

    // 3d. The catalogue: whether a page of GET /api/tickets costs more as it grows.
    if !ctx.wanted("catalogue") {
        ctx.report.not_measured.push("catalogue: skipped".into());
    } else {
        let sizes = ctx.args.catalogue_sizes.clone();
        for platform in [recovery::Platform::Embedded, recovery::Platform::Servers] {
            match catalogue::measure(&mut ctx, platform, &sizes).await {
                Ok(results) => {
                    catalogue::push_ratios(&mut ctx.report.ratios, &results);
                    ctx.report.catalogue.extend(results);
                }
                Err(e) => ctx
                    .report
                    .not_measured
                    .push(format!("catalogue on {}: failed: {e:#}", platform.label())),
            }
        }
    }

    // 4. Timers.
    if !ctx.wanted("timers") {
        ctx.report.not_measured.push("timers: skipped".into());
    } else {
        // A burst (all due within one second: how fast the driver drains), then a steady
        // rate the driver keeps up with while the store holds a large pending set.
        let plans = [
            micro::TimersPlan {
                due: ctx.args.timers,
                window_ms: 1000,
                pending: 0,
            },
            micro::TimersPlan {
                due: ctx.args.timers / 10,
                window_ms: if ctx.args.smoke { 1000 } else { 5000 },
                pending: ctx.args.timers,
            },
        ];
        for plan in plans {
            let redis = procs::redis(ctx.dir.path())?;
            eprintln!("- timers in Redis: {plan:?}");
            let r = micro::timers(
                &format!("redis://127.0.0.1:{}", redis.port),
                plan,
                Duration::from_secs(120),
            )
            .await?;
            eprintln!("  {r:?}");
            ctx.report.timers.push(r);
        }
    }

    // 5. Instantiation.
    if !ctx.wanted("instantiation") {
        ctx.report
            .not_measured
            .push("instantiation: skipped".into());
    } else {
        let list: Vec<(String, PathBuf)> = ["hello", "tickets"]
            .iter()
            .map(|c| (c.to_string(), wasm_dir.join(format!("ticketing_{c}.wasm"))))
            .collect();
        let iterations = if ctx.args.smoke {
            200
        } else {
            ctx.args.instantiations
        };
        eprintln!("- instantiation ({iterations} each)");
        ctx.report.instantiation = micro::instantiation(ctx.dir.path(), &list, iterations).await?;
    }
    ctx.report.machine["loadavg_at_end"] = json!(std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim());

    let markdown = markdown(&ctx.report);
    println!("{markdown}");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&ctx.report)? + "\n",
    )?;
    std::fs::write(json_path.with_extension("md"), &markdown)?;
    eprintln!(
        "wrote {} and {}",
        json_path.display(),
        json_path.with_extension("md").display()
    );
    Ok(())
}

/// Part 1: `hello` on the host against `wasmtime serve`, interleaved rounds, then the host
/// at one connection. Returns the host's mean hello req/s and its one-connection run.
async fn hello_vs_wasmtime(
    ctx: &mut Ctx,
    host: &Service,
    wasm_dir: &Path,
    spin: Option<&SpinSide>,
) -> anyhow::Result<(f64, LoadResult)> {
    let c = ctx.args.concurrency;
    let wasmtime = if !ctx.wanted("wasmtime") {
        ctx.report
            .not_measured
            .push("wasmtime serve: skipped (--skip wasmtime)".into());
        None
    } else if !procs::on_path("wasmtime") {
        ctx.report.not_measured.push(
            "wasmtime serve: `wasmtime` is not on PATH (scripts/bench.sh installs wasmtime-cli 48)"
                .into(),
        );
        None
    } else {
        match procs::wasmtime_serve(ctx.dir.path(), &wasm_dir.join("ticketing_hello.wasm")) {
            Ok(s) => Some(s),
            Err(e) => {
                ctx.report
                    .not_measured
                    .push(format!("wasmtime serve: did not start: {e:#}"));
                None
            }
        }
    };
    let (mut host_hello, mut wt_hello, mut spin_hello) = (Vec::new(), Vec::new(), Vec::new());
    let mut peak = 0;
    for round in 0..ctx.args.rounds.max(1) {
        let addr = host.addr();
        let name = format!("hello round {}", round + 1);
        let (r, p) = peak_rss(
            host.pid(),
            ctx.load(&name, "host", addr, ctx.spec(c, 200), get(addr, "/hello")),
        )
        .await;
        host_hello.push(r?);
        peak = peak.max(p);
        if let Some(wt) = &wasmtime {
            let addr = wt.addr();
            wt_hello.push(
                ctx.load(
                    &name,
                    "wasmtime serve",
                    addr,
                    ctx.spec(c, 200),
                    get(addr, "/hello"),
                )
                .await?,
            );
        }
        if let Some(spin) = spin {
            let addr = spin.peer.spin.addr();
            spin_hello.push(
                ctx.load(&name, "Spin", addr, ctx.spec(c, 200), get(addr, "/hello"))
                    .await?,
            );
        }
    }
    ctx.report
        .rss_kib
        .push((format!("host peak under hello load (c={c})"), peak));
    if let Some(spin) = spin {
        ctx.report.rss_kib.push((
            "Spin after hello load (auth, tickets, hello)".into(),
            spin.peer.spin.rss_kib().unwrap_or(0),
        ));
    }
    if let Some(wt) = &wasmtime {
        ctx.report.rss_kib.push((
            "wasmtime serve after hello load".into(),
            wt.rss_kib().unwrap_or(0),
        ));
    }
    drop(wasmtime);
    let host_hello_rps = mean(&host_hello, |r| r.rps);
    push_peer_ratios(
        &mut ctx.report.ratios,
        "wasmtime serve",
        &host_hello,
        &wt_hello,
    );
    push_peer_ratios(&mut ctx.report.ratios, "Spin", &host_hello, &spin_hello);
    // One connection: latency without queueing, for the per-request cost.
    let addr = host.addr();
    let host_c1 = ctx
        .load("hello", "host", addr, ctx.spec(1, 200), get(addr, "/hello"))
        .await?;
    Ok((host_hello_rps, host_c1))
}

/// Part 2: ticket read and create on the embedded store (the host is stopped afterwards),
/// then the native ceiling; with `hello` from part 1, the ratios against it.
async fn tickets_vs_native(
    ctx: &mut Ctx,
    host: Service,
    hello: Option<(f64, LoadResult)>,
    spin: Option<&SpinSide>,
) -> anyhow::Result<()> {
    let c = ctx.args.concurrency;
    let (tickets, emb_read) = {
        let (p_out, p) = peak_rss(host.pid(), tickets_scenario(ctx, &host, "embedded")).await;
        ctx.report.rss_kib.push((
            format!("host peak under ticket read+create (embedded, c={c})"),
            p,
        ));
        p_out?
    };
    drop(host);
    if let Some((spin, paths)) = spin.and_then(|spin| Some((spin, spin.ticket_paths.clone()?))) {
        let addr = spin.peer.spin.addr();
        let spin_read = ctx
            .load(
                "ticket read (GET /api/tickets/:id)",
                "Spin, SQLite store",
                addr,
                ctx.spec(c, 200),
                read_tickets(addr, paths),
            )
            .await?;
        ctx.report.ratios.push((
            "ticket read req/s: host (embedded) / Spin (SQLite)".into(),
            emb_read.rps / spin_read.rps,
        ));
    }
    let native_tickets: Vec<native::Ticket> = tickets
        .iter()
        .map(|t| serde_json::from_value(t.clone()))
        .collect::<Result<_, _>>()?;
    let paths: Arc<Vec<String>> = Arc::new(
        native_tickets
            .iter()
            .map(|t| format!("/api/tickets/{}", t.id))
            .collect(),
    );
    let server = native::start(native_tickets, 2)?;
    let addr = server.addr;
    let native_read = ctx
        .load(
            "ticket read (GET /api/tickets/:id)",
            "native hyper (in-memory map)",
            addr,
            ctx.spec(c, 200),
            Arc::new(move |n| {
                load::request("GET", addr, &paths[n as usize % paths.len()], &[], None)
            }),
        )
        .await?;
    ctx.report.native_read_rps = Some(native_read.rps);
    ctx.report.ratios.push((
        "ticket read req/s (embedded): host / native hyper".into(),
        emb_read.rps / native_read.rps,
    ));
    if let Some((host_hello_rps, host_c1)) = hello {
        let native_c1 = ctx
            .load(
                "hello",
                "native hyper",
                addr,
                ctx.spec(1, 200),
                get(addr, "/hello"),
            )
            .await?;
        ctx.report.ratios.push((
            "ticket read req/s (embedded) / host hello req/s".into(),
            emb_read.rps / host_hello_rps,
        ));
        let upper = host_c1.mean_us - native_c1.mean_us;
        eprintln!(
            "  per-request overhead at c=1 (host hello mean - native hello mean): {upper:.0} µs"
        );
        ctx.report.settings["c1_overhead_us_host_minus_native"] = json!(upper);
    }
    Ok(())
}

/// `POST /api/orders` for ticket `id` as `buyer`, again every 20 ms while the orders service
/// answers 404 (its `ticket.created` has not arrived yet), for up to `patience`. Returns when
/// the successful POST was sent, and the order.
async fn place_order(
    conn: &mut Conn,
    addr: SocketAddr,
    buyer: &str,
    id: &str,
    patience: Duration,
) -> anyhow::Result<(Instant, Value)> {
    let body = json!({"ticketId": id});
    let give_up = Instant::now() + patience;
    loop {
        let started = Instant::now();
        let reply = conn
            .send(load::request(
                "POST",
                addr,
                "/api/orders",
                &[("cookie", buyer)],
                Some(&body),
            ))
            .await?;
        match reply.status.as_u16() {
            201 => return Ok((started, reply.json()?)),
            404 if Instant::now() < give_up => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => bail!(
                "order: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
        }
    }
}

/// POST /api/orders until the ticket shows the order's id, one order at a time.
async fn purchase(ctx: &mut Ctx) -> anyhow::Result<Value> {
    let servers = ctx.host_on_servers()?;
    let addr = servers.host.addr();
    let n = ctx.args.purchases;
    eprintln!("- purchase flow ({n} orders, NATS + Redis)");
    let seller = sign_up(addr, "seller@example.com").await?;
    let buyer = sign_up(addr, "buyer@example.com").await?;
    let tickets = create_tickets(addr, &seller, n).await?;
    let mut conn = Conn::open(addr).await?;
    let mut flow = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut post = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut polls = 0u64;
    for ticket in &tickets {
        let id = ticket["id"].as_str().unwrap_or_default();
        let (started, order) =
            place_order(&mut conn, addr, &buyer, id, Duration::from_secs(30)).await?;
        post.saturating_record(started.elapsed().as_micros() as u64);
        let path = format!("/api/tickets/{id}");
        loop {
            let reply = conn
                .send(load::request("GET", addr, &path, &[], None))
                .await?;
            polls += 1;
            if reply.json()?["orderId"] == order["id"] {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("ticket {id} never showed order {}", order["id"]);
            }
            // No sleep between polls: tokio's timer rounds a 1 ms sleep up to ~2 ms, which
            // the figure would include. Back to back, the end is seen within one GET.
        }
        flow.saturating_record(started.elapsed().as_micros() as u64);
    }
    let v = json!({
        "orders": n,
        "flow_p50_ms": flow.value_at_quantile(0.5) as f64 / 1000.0,
        "flow_p99_ms": flow.value_at_quantile(0.99) as f64 / 1000.0,
        "flow_max_ms": flow.max() as f64 / 1000.0,
        "post_order_p50_ms": post.value_at_quantile(0.5) as f64 / 1000.0,
        "post_order_p99_ms": post.value_at_quantile(0.99) as f64 / 1000.0,
        "ticket_polls": polls,
    });
    eprintln!("  {v}");
    Ok(v)
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({"cpus": cpus, "cpu_model": cpu, "memory": mem, "kernel": kernel.trim(),
           "loadavg_at_start": load.trim()})
}

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s += &format!(
        "Machine: {} CPUs ({}), {} RAM, Linux {}\n\n",
        r.machine["cpus"],
        r.machine["cpu_model"].as_str().unwrap_or(""),
        r.machine["memory"].as_str().unwrap_or(""),
        r.machine["kernel"].as_str().unwrap_or("")
    );
    s += &format!(
        "Load average (1/5/15 min) at start: {}, at end: {}\n\n",
        r.machine["loadavg_at_start"].as_str().unwrap_or(""),
        r.machine["loadavg_at_end"].as_str().unwrap_or("")
    );
    s += &format!("Command: `{}`\n\n", r.command);
    if let Some(spin) = r.settings.get("spin").and_then(|v| v.as_str()) {
        s += &format!("Spin: {spin}\n\n");
    }
    s += "| run | target | conns | req/s | p50 µs | p99 µs | max µs | errors | server CPU µs/req |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for run in &r.runs {
        let x = &run.result;
        let cpu = x
            .server_cpu_us_per_request
            .map_or("-".to_owned(), |cpu| format!("{cpu:.0}"));
        s += &format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {cpu} |\n",
            run.name, run.target, x.concurrency, x.rps, x.p50_us, x.p99_us, x.max_us, x.errors
        );
    }
    if !r.ratios.is_empty() {
        s += "\n| ratio (same run) | value |\n|---|---:|\n";
        for (name, v) in &r.ratios {
            s += &format!("| {name} | {v:.2} |\n");
        }
    }
    if let Some(p) = &r.purchase {
        s += &format!(
            "\nPurchase flow (POST /api/orders → ticket shows orderId, NATS + Redis, {} orders one at a time): p50 {} ms, p99 {} ms, max {} ms (the POST alone: p50 {} ms, p99 {} ms)\n",
            p["orders"], p["flow_p50_ms"], p["flow_p99_ms"], p["flow_max_ms"], p["post_order_p50_ms"], p["post_order_p99_ms"]
        );
    }
    if !r.recovery.is_empty() {
        s += "\n| crash recovery (SIGKILL right after POST /api/orders) | samples | restart p50 / max ms | redelivery p50 / max ms | total p50 / max ms | shown at the first read |\n|---|---:|---:|---:|---:|---:|\n";
        for x in &r.recovery {
            let (restart, restart_max) = recovery::median_max(&x.restart_ms);
            let (redelivery, redelivery_max) = recovery::median_max(&x.redelivery_ms);
            let (total, total_max) = recovery::median_max(&x.total_ms());
            s += &format!(
                "| {} | {} | {restart:.0} / {restart_max:.0} | {redelivery:.0} / {redelivery_max:.0} | {total:.0} / {total_max:.0} | {} |\n",
                x.platform, x.samples, x.shown_at_first_read
            );
        }
    }
    if !r.flash.is_empty() {
        s += &flash::markdown(&r.flash);
    }
    if !r.catalogue.is_empty() {
        s += &catalogue::markdown(&r.catalogue);
    }
    if !r.timers.is_empty() {
        s += "\n| timers in Redis: due (over ms) + pending | scheduled/s | fired | fired/s | early | lateness p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
        for t in &r.timers {
            s += &format!(
                "| {} (over {}) + {} | {:.0} | {} | {:.0} | {} | {} | {} | {} |\n",
                t.plan.due,
                t.plan.window_ms,
                t.plan.pending,
                t.schedule_per_s,
                t.fired,
                t.fired_per_s,
                t.fired_early,
                t.lateness_p50_ms,
                t.lateness_p99_ms,
                t.lateness_max_ms
            );
        }
    }
    if !r.instantiation.is_empty() {
        s += "\n| instantiation (pooling) | step | p50 µs | p99 µs | mean µs |\n|---|---|---:|---:|---:|\n";
        for i in &r.instantiation {
            for (step, p) in [
                ("new store + instantiate", &i.instantiate),
                ("store drop (slot reset)", &i.teardown),
                ("both", &i.total),
            ] {
                s += &format!(
                    "| {} | {step} | {:.1} | {:.1} | {:.1} |\n",
                    i.component, p.p50_us, p.p99_us, p.mean_us
                );
            }
        }
    }
    if let Some(v) = r.settings.get("c1_overhead_us_host_minus_native") {
        s += &format!("\nPer-request cost at one connection, host hello mean − native hello mean: {:.0} µs (an upper bound of instantiation + trigger work)\n", v.as_f64().unwrap_or(0.0));
    }
    s += "\n| RSS | KiB |\n|---|---:|\n";
    for (name, v) in &r.rss_kib {
        s += &format!("| {name} | {v} |\n");
    }
    s += "\n| component | .wasm bytes |\n|---|---:|\n";
    for (name, v) in &r.wasm_bytes {
        s += &format!("| {name} | {v} |\n");
    }
    if !r.not_measured.is_empty() {
        s += "\nNot measured:\n";
        for n in &r.not_measured {
            s += &format!("- {n}\n");
        }
    }
    s
}

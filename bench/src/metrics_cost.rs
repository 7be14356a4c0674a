//! Part "metrics": what recording metrics costs. Two hosts on the embedded store, alike but
//! for the admin listener: one with `--admin-listen` (every request, guest run and event is
//! counted), one without (each hook is one atomic load). `hello` and ticket reads run on
//! both in interleaved rounds; the report gets the ratios on / off (1.0 = free).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};

use super::load::{self, Conn, LoadResult};
use super::procs::{self, HostSpec, Service};
use super::{create_tickets, get, mean, read_tickets, sign_up, ticket_paths, Ctx};

/// Runs the part against hosts serving `manifest` (the bench's app).
pub async fn metrics_on_off(ctx: &mut Ctx, manifest: &Path) -> anyhow::Result<()> {
    let admin = SocketAddr::from(([127, 0, 0, 1], procs::free_port()));
    let off = host(ctx, manifest, None)?;
    let on = host(ctx, manifest, Some(admin))?;
    let mut reads = Vec::new();
    for (host, label) in [(&off, "off"), (&on, "on")] {
        let addr = host.addr();
        let cookie = sign_up(addr, &format!("seller-metrics-{label}@example.com")).await?;
        let tickets = create_tickets(addr, &cookie, 100).await?;
        reads.push(Arc::new(ticket_paths(&tickets)));
    }

    let c = ctx.args.concurrency;
    let mut runs: [Vec<LoadResult>; 4] = Default::default();
    for round in 0..ctx.args.rounds.max(1) {
        for (i, (host, target)) in [(&off, "host, metrics off"), (&on, "host, metrics on")]
            .into_iter()
            .enumerate()
        {
            let addr = host.addr();
            let name = format!("metrics cost: hello round {}", round + 1);
            runs[i].push(
                ctx.load(&name, target, addr, ctx.spec(c, 200), get(addr, "/hello"))
                    .await?,
            );
            let name = format!("metrics cost: ticket read round {}", round + 1);
            let paths = reads[i].clone();
            runs[2 + i].push(
                ctx.load(
                    &name,
                    target,
                    addr,
                    ctx.spec(c, 200),
                    read_tickets(addr, paths),
                )
                .await?,
            );
        }
    }
    let [hello_off, hello_on, read_off, read_on] = &runs;
    for (what, on, off) in [
        ("hello", hello_on, hello_off),
        ("ticket read", read_on, read_off),
    ] {
        ctx.report.ratios.push((
            format!("{what} req/s: metrics on / off"),
            mean(on, |r| r.rps) / mean(off, |r| r.rps),
        ));
        ctx.report.ratios.push((
            format!("{what} p50: metrics on / off"),
            mean(on, |r| r.p50_us as f64) / mean(off, |r| r.p50_us as f64),
        ));
    }

    // The host with metrics did count what it served.
    let counted = requests_counted(admin).await?;
    let served: f64 = hello_on
        .iter()
        .chain(read_on)
        .map(|r| r.requests as f64)
        .sum();
    if counted < served {
        bail!("/metrics counted {counted} requests, the load runs made {served}");
    }
    Ok(())
}

fn host(ctx: &Ctx, manifest: &Path, admin_listen: Option<SocketAddr>) -> anyhow::Result<Service> {
    let binary = ctx
        .args
        .host_bin
        .clone()
        .unwrap_or_else(|| ctx.root.join("target/release/ticketing"));
    procs::host(
        ctx.dir.path(),
        HostSpec {
            binary: &binary,
            manifest,
            redis_url: None,
            vars: vec![],
            state_dir: None,
            admin_listen,
        },
    )
}

/// The sum of `ticketing_http_requests_total` on the admin listener at `admin`.
async fn requests_counted(admin: SocketAddr) -> anyhow::Result<f64> {
    let mut conn = Conn::open(admin).await?;
    let reply = conn
        .send(load::request("GET", admin, "/metrics", &[], None))
        .await?;
    let text = String::from_utf8(reply.body.to_vec()).context("/metrics is text")?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("ticketing_http_requests_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

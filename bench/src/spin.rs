//! Spin as a peer: `spin up` serving the same `hello` component and the ticketing app's
//! HTTP side for ticket reads, so that the host's figures come with Spin's from the same run.
//!
//! The app Spin serves is written from the workspace's spin.toml: its `auth` and `tickets`
//! components and their HTTP routes as they are (the NATS listeners left out: the reads do
//! not need them), plus `hello` on /hello. Every key-value label is Spin's own SQLite store
//! in the bench's temporary dir. Creating the tickets to read publishes `ticket.created`
//! over MQTT, so a nats-server with JetStream and MQTT is started as the broker.
//!
//! The flash sale needs the whole app instead (orders, payments, events, timers):
//! [`start_full_app`] runs it as the README's "Run with `spin up`" does.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::procs::{self, Service};

/// Spin's server and the MQTT broker its components publish to (dropped Spin first).
pub struct SpinPeer {
    pub spin: Service,
    pub version: String,
    _broker: Service,
}

/// Where the `spin` binary is: `--spin PATH`, else `spin` on PATH.
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    procs::on_path("spin").then(|| PathBuf::from("spin"))
}

/// What `spin --version` says, e.g. `spin 3.6.3 (88d51cf1 2026-04-09)`.
fn version_of(spin: &Path) -> anyhow::Result<String> {
    let version = Command::new(spin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", spin.display()))?;
    if !version.status.success() {
        bail!("{} --version failed", spin.display());
    }
    Ok(String::from_utf8_lossy(&version.stdout).trim().to_owned())
}

/// Starts `spin up` (binary `spin`) on the bench's Spin app and its broker.
pub fn start(
    spin: &Path,
    root: &Path,
    app: &Path,
    dir: &Path,
    jwt_secret: &str,
) -> anyhow::Result<SpinPeer> {
    let version = version_of(spin)?;

    let app_dir = dir.join("spin-app");
    std::fs::create_dir_all(&app_dir)?;
    let manifest = app_dir.join("spin.toml");
    std::fs::write(&manifest, spin_manifest(root, app)?)?;
    let runtime_config = app_dir.join("runtime-config.toml");
    std::fs::write(&runtime_config, sqlite_stores(&manifest)?)?;

    let (broker, mqtt_port) = procs::nats_with_mqtt(dir)?;
    let port = procs::free_port();
    let cmd = spin_up(spin, &app_dir, &runtime_config, port, jwt_secret, mqtt_port);
    let spin = Service::spawn("spin up", cmd, port, app_dir.join("spin.log"))?;
    Ok(SpinPeer {
        spin,
        version,
        _broker: broker,
    })
}

/// The app's spin.toml reduced to the HTTP routes of `auth` and `tickets`, plus `hello`,
/// with component sources made absolute (from `root`, the workspace).
fn spin_manifest(root: &Path, app: &Path) -> anyhow::Result<String> {
    const COMPONENTS: [&str; 2] = ["auth", "tickets"];
    let text = std::fs::read_to_string(app)?;
    let mut app: toml::Table = text.parse().context("parsing spin.toml")?;

    if let Some(application) = app.get_mut("application").and_then(|a| a.as_table_mut()) {
        // Application-level trigger settings (the NATS trigger's) belong to the listeners.
        application.remove("trigger");
    }
    let http_routes: Vec<toml::Value> = app
        .get("trigger")
        .and_then(|t| t.get("http"))
        .and_then(|h| h.as_array())
        .map(|routes| {
            routes
                .iter()
                .filter(|route| {
                    route
                        .get("component")
                        .and_then(|c| c.as_str())
                        .is_some_and(|c| COMPONENTS.contains(&c))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if http_routes.len() != COMPONENTS.len() {
        bail!("spin.toml: expected one HTTP route each for {COMPONENTS:?}");
    }
    let mut routes = http_routes;
    let mut hello_route = toml::Table::new();
    hello_route.insert("route".into(), "/hello".into());
    hello_route.insert("component".into(), "hello".into());
    routes.push(toml::Value::Table(hello_route));
    let mut trigger = toml::Table::new();
    trigger.insert("http".into(), toml::Value::Array(routes));
    app.insert("trigger".into(), toml::Value::Table(trigger));

    let all = app
        .remove("component")
        .and_then(|c| c.as_table().cloned())
        .context("spin.toml has no components")?;
    let mut components = toml::Table::new();
    for name in COMPONENTS {
        let mut component = all
            .get(name)
            .and_then(|c| c.as_table().cloned())
            .with_context(|| format!("spin.toml has no component {name}"))?;
        component.remove("build");
        let source = component
            .get("source")
            .and_then(|s| s.as_str())
            .with_context(|| format!("component {name} has no source"))?;
        let source = root.join(source).display().to_string();
        component.insert("source".into(), source.into());
        components.insert(name.into(), toml::Value::Table(component));
    }
    let hello = root.join("target/wasm32-wasip2/release/ticketing_hello.wasm");
    let mut hello_component = toml::Table::new();
    hello_component.insert("source".into(), hello.display().to_string().into());
    components.insert("hello".into(), toml::Value::Table(hello_component));
    app.insert("component".into(), toml::Value::Table(components));
    Ok(toml::to_string(&app)?)
}

/// A runtime config giving every key-value label of `manifest` Spin's SQLite store, in one
/// file beside it (Spin provisions only `default` by itself).
fn sqlite_stores(manifest: &Path) -> anyhow::Result<String> {
    let app: toml::Table = std::fs::read_to_string(manifest)?.parse()?;
    let mut labels: Vec<String> = app
        .get("component")
        .and_then(|c| c.as_table())
        .into_iter()
        .flat_map(|components| components.values())
        .filter_map(|component| component.get("key_value_stores")?.as_array().cloned())
        .flatten()
        .filter_map(|label| label.as_str().map(str::to_owned))
        .collect();
    labels.sort();
    labels.dedup();
    Ok(labels
        .iter()
        .map(|label| format!("[key_value_store.{label}]\ntype = \"spin\"\npath = \"kv.db\"\n"))
        .collect())
}

/// The whole app under `spin up`, as the README runs it: Spin's HTTP trigger serves every
/// route, the `trigger-nats` plugin (the host's NATS side, packed from the release build
/// and installed into a Spin data directory of the bench's own) runs the listeners and the
/// timers, the key-value stores are on Redis and the events on NATS JetStream, which the
/// components reach through NATS's MQTT listener.
pub struct SpinApp {
    pub spin: Service,
    pub version: String,
    _redis: Service,
    _nats: Service,
}

/// Starts the full app under `spin` and waits until the plugin is ready (its stream and
/// consumers exist: a publish before that would reach no stream).
pub fn start_full_app(
    spin: &Path,
    root: &Path,
    app: &Path,
    dir: &Path,
    jwt_secret: &str,
) -> anyhow::Result<SpinApp> {
    let version = version_of(spin)?;

    let app_dir = dir.join("spin-full-app");
    let data_dir = app_dir.join("spin-data");
    let plugin_dir = app_dir.join("plugin");
    std::fs::create_dir_all(&data_dir)?;
    let plugin = root.join("target/release/trigger-nats");
    if !plugin.exists() {
        bail!(
            "{} is missing: `cargo build --release -p ticketing-host`",
            plugin.display()
        );
    }
    run_quietly(
        Command::new("bash")
            .arg(root.join("scripts/install-spin-plugin.sh"))
            .arg("--pack-only")
            .env("TRIGGER_NATS_BIN", &plugin)
            .env("SPIN_PLUGIN_OUT", &plugin_dir),
        "packing the trigger-nats plugin",
    )?;
    run_quietly(
        Command::new(spin)
            .args(["plugins", "install", "--yes", "--file"])
            .arg(plugin_dir.join("trigger-nats.json"))
            .env("SPIN_DATA_DIR", &data_dir),
        "installing the trigger-nats plugin",
    )?;

    let manifest = app_dir.join("spin.toml");
    std::fs::write(&manifest, full_manifest(root, app)?)?;
    let (nats, mqtt_port) = procs::nats_with_mqtt(dir)?;
    let redis = procs::redis(dir)?;
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let runtime_config = app_dir.join("runtime-config.toml");
    std::fs::write(
        &runtime_config,
        ["auth", "tickets", "orders", "payments"]
            .iter()
            .map(|l| format!("[key_value_store.{l}]\ntype = \"redis\"\nurl = \"{redis_url}\"\n"))
            .collect::<String>(),
    )?;
    let port = procs::free_port();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], procs::free_port()));
    let mut cmd = spin_up(spin, &app_dir, &runtime_config, port, jwt_secret, mqtt_port);
    cmd.env("SPIN_DATA_DIR", &data_dir)
        .env(
            "SPIN_VARIABLE_NATS_URL",
            format!("nats://127.0.0.1:{}", nats.port),
        )
        .env("SPIN_VARIABLE_TIMERS_URL", &redis_url)
        // The plugin's admin listener (Spin's own HTTP trigger ignores it): its /readyz says
        // when the stream and the consumers are there.
        .env("TICKETING_ADMIN_LISTEN", admin.to_string());
    let spin = Service::spawn("spin up (full app)", cmd, port, app_dir.join("spin.log"))?;
    wait_ready(admin, &spin.log, Duration::from_secs(120))?;
    Ok(SpinApp {
        spin,
        version,
        _redis: redis,
        _nats: nats,
    })
}

/// `spin up` of `app_dir`'s spin.toml on `port`, with its runtime config, the session
/// secret and the MQTT broker the components publish to.
fn spin_up(
    spin: &Path,
    app_dir: &Path,
    runtime_config: &Path,
    port: u16,
    jwt_secret: &str,
    mqtt_port: u16,
) -> Command {
    let mut cmd = Command::new(spin);
    cmd.arg("up")
        .arg("--from")
        .arg(app_dir.join("spin.toml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--runtime-config-file")
        .arg(runtime_config)
        .current_dir(app_dir)
        .env("SPIN_VARIABLE_JWT_SECRET", jwt_secret)
        .env(
            "SPIN_VARIABLE_MQTT_ADDRESS",
            format!("mqtt://127.0.0.1:{mqtt_port}"),
        );
    cmd
}

fn run_quietly(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| what.to_owned())?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Polls `GET /readyz` on the plugin's admin listener until it answers 200.
fn wait_ready(admin: std::net::SocketAddr, log: &Path, limit: Duration) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect_timeout(&admin, Duration::from_millis(200)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request =
                format!("GET /readyz HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "the trigger-nats plugin was not ready within {limit:?}; Spin's log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// The app's spin.toml as it is (every component, HTTP routes and NATS listeners), with
/// component sources made absolute and the build commands left out.
fn full_manifest(root: &Path, app: &Path) -> anyhow::Result<String> {
    let mut app: toml::Table = std::fs::read_to_string(app)?
        .parse()
        .context("parsing spin.toml")?;
    let components = app
        .get_mut("component")
        .and_then(|c| c.as_table_mut())
        .context("spin.toml has no components")?;
    for (name, component) in components.iter_mut() {
        let component = component
            .as_table_mut()
            .with_context(|| format!("component {name} is not a table"))?;
        component.remove("build");
        let source = component
            .get("source")
            .and_then(|s| s.as_str())
            .with_context(|| format!("component {name} has no source"))?;
        let source = root.join(source).display().to_string();
        component.insert("source".into(), source.into());
    }
    Ok(toml::to_string(&app)?)
}

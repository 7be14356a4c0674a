//! One place for the wiring: everything a run of the host needs, built in start-up order,
//! whichever way it was launched and whichever triggers it runs.
//!
//! ```text
//! the app (spin.toml, or the lock file `spin up` writes)
//!   → admin listener, with --admin-listen (/healthz at once, /readyz once all below runs)
//!   → runtime config → state dir → variables → NATS trigger settings
//!   → (a run with one trigger only: check that what it shares with the process running
//!      the other trigger lives on servers)
//!   → key-value stores → event bus + timer store → engine + epoch ticker → components
//!   → NATS trigger (durable consumers opened) → timer driver      [runs with NATS]
//!   → HTTP trigger → listen                                        [runs with HTTP]
//!   → until Ctrl-C / SIGTERM: both triggers stop taking work and drain together, then the
//!     timer driver stops.
//! ```
//!
//! Two launchers call [`run`]: `ticketing up` ([`crate::up`]: spin.toml, every trigger by
//! default) and the `trigger-nats` Spin plugin ([`crate::spin_plugin`]: the lock file, the
//! NATS trigger only, while Spin's own HTTP trigger serves the routes in another process).
//! The NATS side is the NATS trigger plus the timer driver, which fires the timers its
//! listeners schedule; the event bus is opened by both sides, since every component may
//! publish (MQTT publishes land on the bus).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::backends::event_bus::{self, EventBus};
use crate::backends::key_value::{EmbeddedState, KeyValueStores, StoreConfig};
use crate::backends::timers::{self, TimerDriver, TimerDriverSettings, TimerStore};
use crate::engine::{self, AllowedHosts, ComponentConfig, EngineSettings, EpochTicker, Runtime};
use crate::manifest::{HttpRoute, Manifest};
use crate::observability::health::{Health, Started};
use crate::observability::{admin, metrics};
use crate::runtime_config::{RuntimeConfig, VariablesProvider};
use crate::triggers::http::{HttpSettings, HttpTrigger};
use crate::triggers::nats::{
    self, NatsRunSettings, NatsSettings, NatsTrigger, NatsTriggerConfig, RunningNatsTrigger,
};
use crate::variables::{self, DevSecrets, Template};

/// The embedded state file inside the state dir (key-value stores, queue and timers).
pub const STATE_FILE: &str = "state.redb";

/// Default per-instance memory cap.
pub const DEFAULT_MAX_INSTANCE_MEMORY: u64 = 128 << 20;

/// Which triggers a run serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Triggers {
    /// HTTP routes and NATS events (with the timers): the whole app.
    All,
    /// Only the HTTP routes: another process runs the NATS trigger (as Spin's HTTP trigger
    /// does under `spin up`).
    Http,
    /// Only the NATS trigger and the timers (the `trigger-nats` Spin plugin).
    Nats,
}

impl Triggers {
    pub fn http(self) -> bool {
        matches!(self, Triggers::All | Triggers::Http)
    }

    pub fn nats(self) -> bool {
        matches!(self, Triggers::All | Triggers::Nats)
    }
}

/// Where the state dir (the embedded state file, development secrets) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateDir {
    /// `ticketing up`: this dir if given, else the runtime config's `state_dir`, else
    /// `.ticketing` next to spin.toml.
    Ticketing(Option<PathBuf>),
    /// A Spin trigger process, with Spin's rules: `--state-dir` (an empty value means none),
    /// else the runtime config's `state_dir`, else `.spin` in the local app dir; none for an
    /// app that is not local. Without one, the embedded state file goes to `scratch` (Spin's
    /// working dir, deleted when `spin up` exits), so nothing durable may be kept there.
    Spin {
        flag: Option<String>,
        local_app_dir: Option<PathBuf>,
        scratch: PathBuf,
    },
}

/// Whose stdout/stderr reach ours (Spin's `--follow` / `-q`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ComponentOutput {
    #[default]
    All,
    Only(BTreeSet<String>),
    None,
}

impl ComponentOutput {
    fn shows(&self, component: &str) -> bool {
        match self {
            ComponentOutput::All => true,
            ComponentOutput::Only(ids) => ids.contains(component),
            ComponentOutput::None => false,
        }
    }
}

/// How to run the app.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub triggers: Triggers,
    /// Where the HTTP trigger listens (runs with HTTP only).
    pub listen: SocketAddr,
    pub runtime_config_file: Option<PathBuf>,
    pub state_dir: StateDir,
    /// Time limit of one request or one event handler.
    pub request_timeout: Duration,
    /// Time a client has to send a request head (runs with HTTP only).
    pub header_read_timeout: Duration,
    /// Longest wait for the next bytes of a request body (runs with HTTP only).
    pub body_read_timeout: Duration,
    /// Default: `max_instance_memory` of the runtime config, else 128 MiB.
    pub max_instance_memory: Option<u64>,
    pub max_instances: u32,
    pub pooling: bool,
    pub compilation_cache: bool,
    pub cache_config_file: Option<PathBuf>,
    /// Variable values that win over every other source (Spin's `--variable`).
    pub variables: BTreeMap<String, String>,
    pub output: ComponentOutput,
    /// Where the admin routes (`/healthz`, `/readyz`, `/metrics`) listen; none: no admin
    /// listener, and no metrics recorded.
    pub admin_listen: Option<SocketAddr>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            triggers: Triggers::All,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            runtime_config_file: None,
            state_dir: StateDir::Ticketing(None),
            request_timeout: Duration::from_secs(30),
            header_read_timeout: HttpSettings::default().header_read_timeout,
            body_read_timeout: HttpSettings::default().body_read_timeout,
            max_instance_memory: None,
            max_instances: 256,
            pooling: true,
            compilation_cache: true,
            cache_config_file: None,
            variables: BTreeMap::new(),
            output: ComponentOutput::All,
            admin_listen: None,
        }
    }
}

/// Runs `manifest` as `options` say until Ctrl-C or SIGTERM, then drains and returns.
pub async fn run(manifest: Manifest, options: RunOptions) -> anyhow::Result<()> {
    // Listening for the signals first: one that arrives during start-up (`spin up` sends
    // SIGTERM when its user gives up waiting) is then a clean stop, not a kill.
    let stopping = stop_on_signal();
    let triggers = options.triggers;
    // The admin routes answer from the start: live while components compile, ready once
    // everything below is up, unready again once stopping.
    let health = Arc::new(Health::default());
    let _admin = match options.admin_listen {
        Some(address) => Some(admin::start(address, health.clone(), metrics::enable()).await?),
        None => None,
    };
    {
        let (health, stopping) = (health.clone(), stopping.clone());
        tokio::spawn(async move {
            stopped(stopping).await;
            health.stopping();
        });
    }

    let runtime_config = match &options.runtime_config_file {
        Some(path) => RuntimeConfig::load(path)?,
        None => RuntimeConfig::default(),
    };
    if triggers != Triggers::All && runtime_config.path.is_none() {
        bail!(
            "{} Without a runtime config file each process would keep the key-value stores in \
             a file of its own (Spin's HTTP trigger in its SQLite file), and neither would see \
             the other's data: give `--runtime-config-file` with a `type = \"redis\"` \
             [key_value_store.<label>] for every store the components use.",
            split_run_preamble(triggers)
        );
    }
    // Development mode: the whole app in one process with no runtime config.
    let development = runtime_config.path.is_none();

    let state = resolve_state_dir(&options.state_dir, &runtime_config, &manifest);
    std::fs::create_dir_all(&state.path)
        .with_context(|| format!("creating state dir {}", state.path.display()))?;

    let app_variables =
        resolve_variables(&manifest, &runtime_config, &options, &state, development)?;

    // `[application.trigger.nats]` configures the event bus itself (NATS or embedded), which
    // every component may publish to, listening or not, and the timers.
    let nats_config = NatsTriggerConfig::from_manifest(&manifest, &app_variables)
        .with_context(|| format!("{}", manifest.path.display()))?;

    let served = components_to_load(&manifest, &nats_config, triggers);
    let labels = key_value_labels(&manifest, &served);
    check_split_run(
        triggers,
        &runtime_config,
        &nats_config.settings,
        &labels,
        &state,
    )?;

    let embedded = EmbeddedState::open(state.path.join(STATE_FILE))?;
    let stores = KeyValueStores::open(&runtime_config.key_value_stores, &labels, &embedded).await?;
    let bus = event_bus::open(
        &nats_config.settings.url,
        &nats_config.settings.stream,
        &embedded,
    )
    .await?;
    let timer_store = timers::open_timer_store(&nats_config.settings.timers_url, &embedded).await?;
    let timer_wake = Arc::new(Notify::new());

    let max_instance_memory = options
        .max_instance_memory
        .or(runtime_config.max_instance_memory)
        .unwrap_or(DEFAULT_MAX_INSTANCE_MEMORY);
    let settings = EngineSettings {
        max_instances: options.max_instances,
        max_instance_memory: usize::try_from(max_instance_memory)
            .context("--max-instance-memory is too large for this machine")?,
        compilation_cache: options.compilation_cache,
        cache_config_file: options.cache_config_file.clone(),
        pooling: options.pooling,
    };
    let engine = engine::new_engine(&settings)?;
    let _ticker = EpochTicker::start(&engine)?;
    let mut runtime = Runtime::new(
        engine,
        stores.clone(),
        bus.clone(),
        timer_store.clone(),
        timer_wake.clone(),
        &settings,
    )?;
    load_components(
        &mut runtime,
        &manifest,
        &served,
        &app_variables,
        &options.output,
    )?;
    release_freed_memory();
    let runtime = Arc::new(runtime);

    // Consumers are opened before anything is served, so from here on every event is kept
    // for its listeners; timers fire onto the bus only once every listener's consumer exists.
    let started = Started {
        runtime: runtime.clone(),
        stores,
        bus: bus.clone(),
        timers: timer_store.clone(),
        consumers: match triggers.nats() {
            true => (nats_config.listeners.iter())
                .map(|listener| listener.consumer.clone())
                .collect(),
            false => Vec::new(),
        },
    };
    let mut nats_side = None;
    if triggers.nats() {
        let side = NatsSide::start(
            &manifest,
            &nats_config,
            &runtime,
            bus,
            timer_store,
            timer_wake,
            &options,
        );
        nats_side = Some(side.await?);
    }
    let mut http_side = None;
    if triggers.http() {
        http_side = Some(HttpSide::bind(&manifest, &runtime, &options).await?);
    }
    health.started(started);

    let mode = if development {
        "development (no runtime config)"
    } else {
        "runtime config"
    };
    match &http_side {
        Some(http) => tracing::info!(
            app = %manifest.application.name,
            state_dir = %state.path.display(),
            mode,
            triggers = ?triggers,
            "Serving http://{}",
            http.listener.local_addr()?
        ),
        None => tracing::info!(
            app = %manifest.application.name,
            state_dir = %state.path.display(),
            mode,
            listeners = nats_config.listeners.len(),
            "NATS trigger running"
        ),
    }

    serve_until_stopped(http_side, nats_side, stopping).await?;
    tracing::info!("stopped");
    Ok(())
}

/// A receiver that turns true on Ctrl-C or SIGTERM.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop, stopping) = watch::channel(false);
    let signal = shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        let _ = stop.send(true);
    });
    stopping
}

async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Application variables, from (highest first) `--variable`, the runtime config's
/// providers, `SPIN_VARIABLE_*` and the defaults; in development mode a missing secret gets
/// a generated value kept in the state dir.
fn resolve_variables(
    manifest: &Manifest,
    runtime_config: &RuntimeConfig,
    options: &RunOptions,
    state: &ResolvedStateDir,
    development: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let dev_secrets = development.then(|| DevSecrets::in_state_dir(&state.path));
    let env = |name: &str| std::env::var(name).ok();
    let mut providers = runtime_config.variables_providers.clone();
    if !options.variables.is_empty() {
        providers.insert(
            0,
            VariablesProvider::Static {
                values: options.variables.clone(),
            },
        );
    }
    variables::resolve_application(
        &manifest.variables,
        &variables::Sources {
            providers: &providers,
            env: &env,
            dev_secrets: dev_secrets.as_ref(),
        },
    )
}

/// Compiles (or takes from the cache) and pre-links each of `served`, with its variables,
/// stores and outbound policy resolved.
fn load_components(
    runtime: &mut Runtime,
    manifest: &Manifest,
    served: &[String],
    app_variables: &BTreeMap<String, String>,
    output: &ComponentOutput,
) -> anyhow::Result<()> {
    for id in served {
        let component = &manifest.components[id.as_str()];
        let mut config = component_config(id, component, app_variables)
            .with_context(|| format!("{}: [component.{id}]", manifest.path.display()))?;
        config.quiet = !output.shows(id);
        let source = manifest.component_source(id)?;
        let source = source.canonicalize().unwrap_or(source);
        if !source.exists() {
            bail!(
                "component `{id}`: {} does not exist; build it first (`ticketing build` or \
                 `ticketing up --build`)",
                source.display()
            );
        }
        runtime.load(id, &source, config)?;
    }
    Ok(())
}

/// The NATS side of a run: the NATS trigger's consumers and the timer driver that fires the
/// timers its listeners schedule.
struct NatsSide {
    events: RunningNatsTrigger,
    timer_driver: TimerDriver,
}

impl NatsSide {
    async fn start(
        manifest: &Manifest,
        nats_config: &NatsTriggerConfig,
        runtime: &Arc<Runtime>,
        bus: Arc<dyn EventBus>,
        timer_store: Arc<dyn TimerStore>,
        timer_wake: Arc<Notify>,
        options: &RunOptions,
    ) -> anyhow::Result<NatsSide> {
        let trigger = NatsTrigger::new(
            nats_config,
            runtime.clone(),
            bus.clone(),
            NatsRunSettings {
                handler_timeout: options.request_timeout,
                ..NatsRunSettings::default()
            },
        )
        .with_context(|| format!("{}: [[trigger.nats]]", manifest.path.display()))?;
        let events = Arc::new(trigger).start().await?;
        let timer_driver =
            TimerDriver::start(timer_store, bus, timer_wake, TimerDriverSettings::default());
        Ok(NatsSide {
            events,
            timer_driver,
        })
    }
}

/// The HTTP side of a run: the routes, and the socket they are served on.
struct HttpSide {
    trigger: HttpTrigger,
    listener: TcpListener,
}

impl HttpSide {
    async fn bind(
        manifest: &Manifest,
        runtime: &Arc<Runtime>,
        options: &RunOptions,
    ) -> anyhow::Result<HttpSide> {
        let trigger = HttpTrigger::new(
            &manifest.http_triggers,
            runtime.clone(),
            HttpSettings {
                request_timeout: options.request_timeout,
                header_read_timeout: options.header_read_timeout,
                body_read_timeout: options.body_read_timeout,
                ..HttpSettings::default()
            },
        )
        .with_context(|| format!("{}: [[trigger.http]]", manifest.path.display()))?;
        let listener = TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("cannot listen on {}", options.listen))?;
        let routes: Vec<String> = trigger
            .router()
            .routes()
            .map(|(route, component)| format!("{route} -> {component}"))
            .collect();
        tracing::info!("routes: {}", routes.join(", "));
        Ok(HttpSide { trigger, listener })
    }
}

/// Runs until `stopping`; then both sides stop taking work and drain together, each within
/// its own grace, and the timer driver stops last.
async fn serve_until_stopped(
    http: Option<HttpSide>,
    nats: Option<NatsSide>,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (events, timer_driver) = match nats {
        Some(NatsSide {
            events,
            timer_driver,
        }) => (Some(events), Some(timer_driver)),
        None => (None, None),
    };
    let events_stopped = events.map(|events| {
        let stopped = stopped(stopping.clone());
        tokio::spawn(async move {
            stopped.await;
            events.shutdown().await;
        })
    });
    let served = match http {
        Some(HttpSide { trigger, listener }) => {
            Arc::new(trigger)
                .serve(listener, stopped(stopping.clone()))
                .await
        }
        None => {
            stopped(stopping).await;
            Ok(())
        }
    };
    if let Some(events_stopped) = events_stopped {
        if let Err(error) = events_stopped.await {
            tracing::warn!("stopping the NATS trigger failed: {error}");
        }
    }
    if let Some(timer_driver) = timer_driver {
        timer_driver.stop().await;
    }
    served
}

/// The state dir, and whether what is kept there outlives this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedStateDir {
    pub path: PathBuf,
    pub durable: bool,
}

pub fn resolve_state_dir(
    state_dir: &StateDir,
    runtime_config: &RuntimeConfig,
    manifest: &Manifest,
) -> ResolvedStateDir {
    let durable = |path: PathBuf| ResolvedStateDir {
        path,
        durable: true,
    };
    match state_dir {
        StateDir::Ticketing(given) => durable(
            given
                .clone()
                .or_else(|| runtime_config.state_dir.clone())
                .unwrap_or_else(|| manifest.dir.join(".ticketing")),
        ),
        StateDir::Spin {
            flag,
            local_app_dir,
            scratch,
        } => {
            let chosen = match flag.as_deref() {
                Some("") => None,
                Some(dir) => Some(PathBuf::from(dir)),
                None => runtime_config
                    .state_dir
                    .clone()
                    .or_else(|| local_app_dir.as_ref().map(|dir| dir.join(".spin"))),
            };
            match chosen {
                Some(dir) => durable(std::path::absolute(&dir).unwrap_or(dir)),
                None => ResolvedStateDir {
                    path: scratch.join("trigger-nats-state"),
                    durable: false,
                },
            }
        }
    }
}

/// The components this run instantiates: those with a route (runs with HTTP) and those
/// listening for events (runs with NATS). Other trigger types are not run by this host.
fn components_to_load(
    manifest: &Manifest,
    nats_config: &NatsTriggerConfig,
    triggers: Triggers,
) -> Vec<String> {
    let mut served: Vec<String> = Vec::new();
    if triggers.http() {
        served.extend(
            manifest
                .http_triggers
                .iter()
                .filter(|t| matches!(t.route, HttpRoute::Path(_)))
                .map(|t| t.component.clone()),
        );
    }
    if triggers.nats() {
        served.extend(nats_config.components().into_iter().map(str::to_owned));
    }
    served.sort_unstable();
    served.dedup();
    for (trigger_type, entries) in &manifest.other_triggers {
        if trigger_type == nats::config::TRIGGER_TYPE {
            continue;
        }
        tracing::warn!(
            "[[trigger.{trigger_type}]]: this host does not run `{trigger_type}` triggers yet; \
             {} trigger(s) ignored",
            entries.len()
        );
    }
    served
}

/// The key-value labels the loaded components use, sorted, without duplicates.
fn key_value_labels(manifest: &Manifest, components: &[String]) -> Vec<String> {
    let mut labels: Vec<String> = components
        .iter()
        .flat_map(|id| manifest.components[id.as_str()].key_value_stores.clone())
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

fn split_run_preamble(triggers: Triggers) -> String {
    let (this, other) = match triggers {
        Triggers::Http => (
            "HTTP",
            "the NATS trigger (the trigger-nats plugin, or `ticketing up --triggers nats`)",
        ),
        _ => (
            "NATS",
            "the HTTP trigger (Spin's, under `spin up`, or `ticketing up --triggers http`)",
        ),
    };
    format!(
        "This process runs only the {this} trigger; {other} runs in another process on the \
         same data."
    )
}

/// A run with one trigger shares the app's state with the process that runs the other one,
/// so that state must live on servers both reach: the key-value stores of the components it
/// runs on Redis, and the events on NATS (under `spin up` the HTTP components publish with
/// Spin's outbound MQTT to NATS's MQTT listener, which lands on the same stream). The timers
/// belong to the NATS side alone (its listeners schedule them, its driver fires them), so
/// they may stay in the embedded state file, but only in a state dir that outlives the run.
pub fn check_split_run(
    triggers: Triggers,
    runtime_config: &RuntimeConfig,
    nats: &NatsSettings,
    labels: &[String],
    state: &ResolvedStateDir,
) -> anyhow::Result<()> {
    if triggers == Triggers::All {
        return Ok(());
    }
    let mut problems = Vec::new();
    for label in labels {
        match runtime_config.key_value_stores.get(label) {
            Some(StoreConfig::Redis { .. }) => {}
            Some(StoreConfig::Spin { .. }) => problems.push(format!(
                "[key_value_store.{label}] is `type = \"spin\"`, a file of this process (and \
                 Spin's own \"spin\" store is a SQLite file this host does not share): use \
                 `type = \"redis\"`"
            )),
            None => problems.push(format!(
                "the runtime config has no [key_value_store.{label}]: add one with \
                 `type = \"redis\"`"
            )),
        }
    }
    if nats.url.is_empty() {
        problems.push(
            "the NATS URL (`url` of [application.trigger.nats], e.g. variable `nats_url`: \
             SPIN_VARIABLE_NATS_URL=nats://...) is empty, so events would stay in this \
             process's embedded queue"
                .to_owned(),
        );
    }
    if triggers.nats() && nats.timers_url.is_empty() && !state.durable {
        problems.push(
            "`timers_url` is empty (SPIN_VARIABLE_TIMERS_URL=redis://...) and there is no \
             state dir to keep the timers in (give --state-dir)"
                .to_owned(),
        );
    }
    if !problems.is_empty() {
        bail!(
            "{} What they share must be on servers: {}.",
            split_run_preamble(triggers),
            problems.join("; ")
        );
    }
    if triggers.nats() && nats.timers_url.is_empty() {
        tracing::info!(
            "timers in this process's state dir {}: only this trigger schedules and fires them",
            state.path.display()
        );
    }
    Ok(())
}

/// What a component's instances get: environment, resolved variables, key-value labels and
/// the outbound-host policy (whose entries may use `{{ variable }}` too).
fn component_config(
    id: &str,
    component: &crate::manifest::Component,
    app_variables: &BTreeMap<String, String>,
) -> anyhow::Result<ComponentConfig> {
    let variables = variables::resolve_component(id, component, app_variables)?;
    let outbound: Vec<String> = component
        .allowed_outbound_hosts
        .iter()
        .map(|entry| Template::parse(entry)?.render(app_variables))
        .collect::<anyhow::Result<_>>()?;
    Ok(ComponentConfig {
        environment: component.environment.clone(),
        variables,
        key_value_stores: component.key_value_stores.clone(),
        allowed_outbound_hosts: AllowedHosts::parse(&outbound)?,
        quiet: false,
    })
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => tracing::info!("Ctrl-C received"),
                        _ = terminate.recv() => tracing::info!("SIGTERM received"),
                    }
                }
                (_, Err(error)) | (Err(error), _) => {
                    tracing::warn!("cannot watch SIGTERM ({error}); only Ctrl-C stops the host");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}

/// Hands the heap memory freed so far back to the OS. Compiling components (a first start,
/// or a cold compilation cache) leaves ~45 MiB in glibc's free lists that the host would
/// otherwise hold for its whole life: 74 MiB idle instead of 28 MiB.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it is safe at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
            spin_manifest_version = 2
            [application]
            name = "t"
            [[trigger.http]]
            route = "/a/..."
            component = "web"
            [[trigger.nats]]
            component = "worker"
            subjects = ["ticketing.x"]
            [component.web]
            source = "web.wasm"
            key_value_stores = ["web"]
            [component.worker]
            source = "worker.wasm"
            key_value_stores = ["work", "shared"]
            "#,
            "/app/spin.toml".into(),
            "/app".into(),
        )
        .unwrap()
    }

    fn nats(url: &str, timers_url: &str) -> NatsSettings {
        NatsSettings {
            url: url.into(),
            timers_url: timers_url.into(),
            ..NatsSettings::default()
        }
    }

    fn redis_config(labels: &[&str]) -> RuntimeConfig {
        RuntimeConfig {
            path: Some("/app/rc.toml".into()),
            key_value_stores: labels
                .iter()
                .map(|l| {
                    (
                        l.to_string(),
                        StoreConfig::Redis {
                            url: "redis://r".into(),
                        },
                    )
                })
                .collect(),
            ..RuntimeConfig::default()
        }
    }

    #[test]
    fn each_side_loads_its_own_components() {
        let m = manifest();
        let config = NatsTriggerConfig::from_manifest(&m, &BTreeMap::new()).unwrap();
        assert_eq!(
            components_to_load(&m, &config, Triggers::All),
            ["web", "worker"]
        );
        assert_eq!(components_to_load(&m, &config, Triggers::Http), ["web"]);
        let listeners = components_to_load(&m, &config, Triggers::Nats);
        assert_eq!(listeners, ["worker"]);
        assert_eq!(key_value_labels(&m, &listeners), ["shared", "work"]);
    }

    #[test]
    fn a_split_run_needs_shared_servers() {
        let durable = ResolvedStateDir {
            path: "/app/.spin".into(),
            durable: true,
        };
        let scratch = ResolvedStateDir {
            path: "/tmp/spinup/trigger-nats-state".into(),
            durable: false,
        };
        let labels = ["shared".to_owned(), "work".to_owned()];
        let rc = redis_config(&["shared", "work"]);
        // The whole app in one process: anything goes.
        check_split_run(
            Triggers::All,
            &RuntimeConfig::default(),
            &nats("", ""),
            &labels,
            &scratch,
        )
        .unwrap();
        check_split_run(
            Triggers::Nats,
            &rc,
            &nats("nats://n", ""),
            &labels,
            &durable,
        )
        .unwrap();
        check_split_run(
            Triggers::Http,
            &rc,
            &nats("nats://n", ""),
            &labels,
            &scratch,
        )
        .unwrap();
        check_split_run(
            Triggers::Nats,
            &rc,
            &nats("nats://n", "redis://r"),
            &labels,
            &scratch,
        )
        .unwrap();

        let error = |triggers, rc: &RuntimeConfig, settings: NatsSettings, state| {
            format!(
                "{:#}",
                check_split_run(triggers, rc, &settings, &labels, state).unwrap_err()
            )
        };
        let err = error(Triggers::Nats, &rc, nats("", ""), &durable);
        assert!(err.contains("SPIN_VARIABLE_NATS_URL"), "{err}");
        assert!(err.contains("only the NATS trigger"), "{err}");
        let err = error(Triggers::Nats, &rc, nats("nats://n", ""), &scratch);
        assert!(err.contains("timers_url"), "{err}");
        let err = error(
            Triggers::Http,
            &redis_config(&["shared"]),
            nats("nats://n", ""),
            &durable,
        );
        assert!(err.contains("no [key_value_store.work]"), "{err}");
        let mut file_store = redis_config(&["shared"]);
        file_store
            .key_value_stores
            .insert("work".into(), StoreConfig::Spin { path: None });
        let err = error(Triggers::Nats, &file_store, nats("nats://n", ""), &durable);
        assert!(
            err.contains("[key_value_store.work] is `type = \"spin\"`"),
            "{err}"
        );
    }

    #[test]
    fn state_dirs_follow_each_launchers_rules() {
        let m = manifest();
        let rc = RuntimeConfig::default();
        let spin = |flag: Option<&str>, local: Option<&str>| StateDir::Spin {
            flag: flag.map(str::to_owned),
            local_app_dir: local.map(PathBuf::from),
            scratch: "/tmp/spinup-1".into(),
        };
        assert_eq!(
            resolve_state_dir(&StateDir::Ticketing(None), &rc, &m).path,
            PathBuf::from("/app/.ticketing")
        );
        let given = resolve_state_dir(&spin(Some("/var/s"), Some("/app")), &rc, &m);
        assert_eq!(given.path, PathBuf::from("/var/s"));
        assert!(given.durable);
        let local = resolve_state_dir(&spin(None, Some("/app")), &rc, &m);
        assert_eq!(local.path, PathBuf::from("/app/.spin"));
        let unset = resolve_state_dir(&spin(Some(""), Some("/app")), &rc, &m);
        assert!(!unset.durable);
        assert!(unset.path.starts_with("/tmp/spinup-1"));
        let remote = resolve_state_dir(&spin(None, None), &rc, &m);
        assert!(!remote.durable);
        let from_config = RuntimeConfig {
            state_dir: Some("/etc/app/data".into()),
            ..RuntimeConfig::default()
        };
        assert_eq!(
            resolve_state_dir(&spin(None, Some("/app")), &from_config, &m).path,
            PathBuf::from("/etc/app/data")
        );
    }

    #[test]
    fn component_output_follows_spins_flags() {
        assert!(ComponentOutput::All.shows("a"));
        assert!(!ComponentOutput::None.shows("a"));
        let only = ComponentOutput::Only(["a".to_owned()].into());
        assert!(only.shows("a"));
        assert!(!only.shows("b"));
    }
}

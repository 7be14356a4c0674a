//! `ticketing up`: everything wired together, in start-up order.
//!
//! manifest → (build) → runtime config → state dir → variables → key-value stores → event
//! bus + timer store → engine + epoch ticker → components → NATS trigger (durable consumers
//! opened) → timer driver → HTTP trigger → listen → serve until Ctrl-C / SIGTERM, when both
//! triggers stop taking work and drain together, then the timer driver stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::backends::event_bus;
use crate::backends::key_value::{EmbeddedState, KeyValueStores};
use crate::backends::timers::{self, TimerDriver, TimerDriverSettings};
use crate::engine::{self, AllowedHosts, ComponentConfig, EngineSettings, EpochTicker, Runtime};
use crate::manifest::{HttpRoute, Manifest};
use crate::runtime_config::RuntimeConfig;
use crate::triggers::http::{HttpSettings, HttpTrigger};
use crate::triggers::nats::{self, NatsRunSettings, NatsTrigger, NatsTriggerConfig};
use crate::variables::{self, DevSecrets, Template};

/// The embedded state file inside the state dir (key-value stores, later queue and timers).
pub const STATE_FILE: &str = "state.redb";

/// Default per-instance memory cap.
pub const DEFAULT_MAX_INSTANCE_MEMORY: u64 = 128 << 20;

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub manifest: PathBuf,
    pub listen: SocketAddr,
    pub runtime_config_file: Option<PathBuf>,
    /// Default: `.ticketing` next to spin.toml (or `state_dir` from the runtime config).
    pub state_dir: Option<PathBuf>,
    pub build: bool,
    pub request_timeout: Duration,
    /// Default: `max_instance_memory` of the runtime config, else 128 MiB.
    pub max_instance_memory: Option<u64>,
    pub max_instances: u32,
}

pub async fn up(options: UpOptions) -> anyhow::Result<()> {
    let manifest = Manifest::load(&options.manifest)?;
    if options.build {
        crate::build::build_components(&manifest)?;
    }

    let runtime_config = match &options.runtime_config_file {
        Some(path) => RuntimeConfig::load(path)?,
        None => RuntimeConfig::default(),
    };
    let development = runtime_config.path.is_none();

    let state_dir = options
        .state_dir
        .clone()
        .or_else(|| runtime_config.state_dir.clone())
        .unwrap_or_else(|| manifest.dir.join(".ticketing"));
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating state dir {}", state_dir.display()))?;

    let dev_secrets = development.then(|| DevSecrets::in_state_dir(&state_dir));
    let env = |name: &str| std::env::var(name).ok();
    let app_variables = variables::resolve_application(
        &manifest.variables,
        &variables::Sources {
            providers: &runtime_config.variables_providers,
            env: &env,
            dev_secrets: dev_secrets.as_ref(),
        },
    )?;

    let embedded = EmbeddedState::open(state_dir.join(STATE_FILE))?;
    let stores = KeyValueStores::open(
        &runtime_config.key_value_stores,
        &manifest.key_value_labels(),
        &embedded,
    )
    .await?;

    // `[application.trigger.nats]` configures the event bus itself (NATS or embedded), which
    // every component may publish to, listening or not.
    let nats_config = NatsTriggerConfig::from_manifest(&manifest, &app_variables)
        .with_context(|| format!("{}", manifest.path.display()))?;
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
        compilation_cache: true,
    };
    let engine = engine::new_engine(&settings)?;
    let _ticker = EpochTicker::start(&engine)?;
    let mut runtime = Runtime::new(
        engine,
        stores,
        bus.clone(),
        timer_store.clone(),
        timer_wake.clone(),
        &settings,
    )?;

    // Components that serve a route or listen for events; other trigger types are not run by
    // this host.
    let mut served: Vec<&str> = manifest
        .http_triggers
        .iter()
        .filter(|t| matches!(t.route, HttpRoute::Path(_)))
        .map(|t| t.component.as_str())
        .chain(nats_config.components())
        .collect();
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
    for id in served {
        let component = &manifest.components[id];
        let config = component_config(id, component, &app_variables)
            .with_context(|| format!("{}: [component.{id}]", manifest.path.display()))?;
        let source = manifest.component_source(id)?;
        let source = source.canonicalize().unwrap_or(source);
        if !source.exists() {
            anyhow::bail!(
                "component `{id}`: {} does not exist; build it first (`ticketing build` or \
                 `ticketing up --build`)",
                source.display()
            );
        }
        runtime.load(id, &source, config)?;
    }
    release_freed_memory();
    let runtime = Arc::new(runtime);

    // Consumers are opened before anything is served, so from here on every event is kept
    // for its listeners.
    let events = NatsTrigger::new(
        &nats_config,
        runtime.clone(),
        bus.clone(),
        NatsRunSettings {
            handler_timeout: options.request_timeout,
            ..NatsRunSettings::default()
        },
    )
    .with_context(|| format!("{}: [[trigger.nats]]", manifest.path.display()))?;
    let events = Arc::new(events).start().await?;
    // Timers fire onto the bus only now that every listener's consumer exists.
    let timer_driver = TimerDriver::start(
        timer_store,
        bus.clone(),
        timer_wake,
        TimerDriverSettings::default(),
    );

    let trigger = HttpTrigger::new(
        &manifest.http_triggers,
        runtime.clone(),
        HttpSettings {
            request_timeout: options.request_timeout,
            ..HttpSettings::default()
        },
    )
    .with_context(|| format!("{}: [[trigger.http]]", manifest.path.display()))?;

    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener.local_addr()?;
    let routes: Vec<String> = trigger
        .router()
        .routes()
        .map(|(route, component)| format!("{route} -> {component}"))
        .collect();
    tracing::info!("routes: {}", routes.join(", "));
    tracing::info!(
        app = %manifest.application.name,
        state_dir = %state_dir.display(),
        mode = if development { "development (no runtime config)" } else { "runtime config" },
        "Serving http://{address}"
    );

    // One signal stops both triggers taking work; each then drains within its own grace.
    let (stop, mut stopping) = watch::channel(false);
    let events_stopped = tokio::spawn(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
        events.shutdown().await;
    });
    let served = Arc::new(trigger)
        .serve(listener, async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        })
        .await;
    if let Err(error) = events_stopped.await {
        tracing::warn!("stopping the NATS trigger failed: {error}");
    }
    timer_driver.stop().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// What a component's instances get: environment, resolved variables, key-value labels and
/// the outbound-host policy (whose entries may use `{{ variable }}` too).
fn component_config(
    id: &str,
    component: &crate::manifest::Component,
    app_variables: &std::collections::BTreeMap<String, String>,
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
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                }
            }
            Err(error) => {
                tracing::warn!("cannot watch SIGTERM ({error}); only Ctrl-C stops the host");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received");
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

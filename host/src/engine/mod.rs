//! The wasmtime side of the host: one [`Engine`] for the process, every component compiled
//! once and pre-linked ([`InstancePre`]), and a fresh [`Store`] + instance per request.
//!
//! - The engine is async, runs components, and interrupts guests by epoch: an [`EpochTicker`]
//!   thread advances the epoch every 10 ms. A running guest yields to the async runtime at
//!   every tick (so a CPU-bound guest never starves the other requests of a worker thread)
//!   and traps with [`Trap::Interrupt`](wasmtime::Trap::Interrupt) once its deadline passes.
//! - Instances come from the pooling allocator (slots reserved up front, sized by
//!   `--max-instances`); if the reservation fails the engine falls back to on-demand
//!   allocation with a warning.
//! - Compiled code goes through wasmtime's compilation cache, so restarting the host does not
//!   recompile unchanged components.
//! - Each store is capped at `--max-instance-memory` bytes of linear memory ([`StoreLimits`]).

mod outbound_http;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolingAllocationConfig, Store, StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;

pub use self::outbound_http::{AllowedHosts, OutboundHttp};
pub use self::state::HostState;
use crate::backends::event_bus::EventBus;
use crate::backends::key_value::KeyValueStores;
use crate::backends::timers::TimerStore;
use crate::capabilities::{self, KeyValueCtx, MqttCtx, SchedulerCtx, VariablesCtx};

/// How often the epoch advances; the granularity of deadlines and of guest yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine-wide limits and switches.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instances that may exist at once (the pooling allocator's slot count).
    pub max_instances: u32,
    /// Linear-memory bytes one instance may use.
    pub max_instance_memory: usize,
    /// Use wasmtime's on-disk compilation cache.
    pub compilation_cache: bool,
    /// A wasmtime cache config file for that cache (Spin's `--cache`); `None`: the user's
    /// default wasmtime config, if any.
    pub cache_config_file: Option<PathBuf>,
    /// Try the pooling allocator (off: on-demand allocation, Spin's `--disable-pooling`).
    pub pooling: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_instances: 256,
            max_instance_memory: 128 << 20,
            compilation_cache: true,
            cache_config_file: None,
            pooling: true,
        }
    }
}

/// Builds the process's engine: pooling allocator if it can be reserved, on-demand otherwise.
pub fn new_engine(settings: &EngineSettings) -> anyhow::Result<Engine> {
    if !settings.pooling {
        tracing::info!("pooling allocator disabled: on-demand instance allocation");
        let mut config = base_config(settings);
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        return Ok(Engine::new(&config)?);
    }
    let mut config = base_config(settings);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(settings)));
    match Engine::new(&config) {
        Ok(engine) => {
            tracing::debug!(max_instances = settings.max_instances, "pooling allocator");
            Ok(engine)
        }
        Err(error) => {
            tracing::warn!(
                "pooling allocator unavailable ({error:#}); falling back to on-demand instance \
                 allocation, which is slower per request"
            );
            let mut config = base_config(settings);
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Ok(Engine::new(&config)?)
        }
    }
}

fn base_config(settings: &EngineSettings) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if settings.compilation_cache {
        match compilation_cache(settings.cache_config_file.as_deref()) {
            Ok(cache) => {
                config.cache(Some(cache));
            }
            Err(error) => tracing::warn!(
                "compilation cache unavailable ({error:#}); components are compiled at every start"
            ),
        }
    }
    config
}

/// wasmtime's compilation cache: `config_file`, else a user's wasmtime cache config if there
/// is one, else the default directory (e.g. ~/.cache/wasmtime). Concurrent hosts share it
/// safely.
fn compilation_cache(config_file: Option<&Path>) -> anyhow::Result<Cache> {
    let mut cache = CacheConfig::from_file(config_file)?;
    // By default wasmtime recompresses a module at zstd level 20 once it has been loaded
    // 256 times, in a background thread of some later start: ~170 MiB of memory for a
    // while (the bench caught a host idling at 198 MiB) to save a few MB of disk. Unless
    // the user's config sets that threshold, it never happens here.
    let default_threshold = CacheConfig::new().optimized_compression_usage_counter_threshold();
    if cache.optimized_compression_usage_counter_threshold() == default_threshold {
        cache.with_optimized_compression_usage_counter_threshold(u64::MAX);
    }
    Ok(Cache::new(cache)?)
}

/// Pool sizes for `max_instances` concurrent instances of typical components: one memory,
/// a few core instances (the module plus the small shim modules of the component model),
/// two tables.
fn pooling(settings: &EngineSettings) -> PoolingAllocationConfig {
    let max = settings.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max)
        .total_core_instances(max.saturating_mul(4))
        .total_memories(max)
        .total_tables(max.saturating_mul(2))
        .total_stacks(max)
        // A pool slot cannot exceed the default 4 GiB reservation; StoreLimits still
        // applies the exact per-instance cap.
        .max_memory_size(settings.max_instance_memory.min(4 << 30))
        .max_tables_per_module(4)
        .max_memories_per_module(1)
        // Keep the first pages of a freed slot mapped and only zero them, instead of handing
        // them back to the kernel and page-faulting them in again on the next request: the
        // bench profile showed that round trip as a quarter of the host's CPU (Spin keeps
        // 2 MiB / 512 KiB too).
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(512 << 10)
        // With Linux's PAGEMAP_SCAN (6.7+) only the pages an instance actually wrote are
        // reset, instead of memset over the whole resident prefix; silently off elsewhere.
        .pagemap_scan(Enabled::Auto);
    pool
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a dedicated thread, until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> anyhow::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn({
                let engine = engine.clone();
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .context("starting the epoch ticker thread")?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What one component gets at run time, resolved at start-up.
#[derive(Debug, Clone, Default)]
pub struct ComponentConfig {
    /// `environment` from spin.toml.
    pub environment: BTreeMap<String, String>,
    /// Resolved `[component.<id>.variables]`.
    pub variables: HashMap<String, String>,
    /// `key_value_stores` from spin.toml.
    pub key_value_stores: Vec<String>,
    /// `allowed_outbound_hosts`, templates resolved.
    pub allowed_outbound_hosts: AllowedHosts,
    /// Discard the component's stdout and stderr instead of passing them through (Spin's
    /// `-q`, or `--follow` naming other components).
    pub quiet: bool,
}

/// A compiled, pre-linked component plus what each of its instances is given.
pub struct LoadedComponent {
    pub id: String,
    pub pre: InstancePre<HostState>,
    environment: Vec<(String, String)>,
    variables: Arc<HashMap<String, String>>,
    key_value_labels: Arc<[String]>,
    outbound: Arc<AllowedHosts>,
    quiet: bool,
}

/// The engine, the linker and every loaded component: what triggers instantiate from.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    components: BTreeMap<String, Arc<LoadedComponent>>,
    key_value: Arc<KeyValueStores>,
    /// Where guests' MQTT publishes go.
    event_bus: Arc<dyn EventBus>,
    /// Durable timers of the scheduler capability, and the timer driver's wake-up.
    timers: Arc<dyn TimerStore>,
    timer_wake: Arc<Notify>,
    max_instance_memory: usize,
    /// One permit per instance that may exist at once (`--max-instances`), shared by all
    /// triggers, so requests queue here instead of exhausting the instance pool.
    instance_slots: Arc<Semaphore>,
    max_instances: usize,
}

impl Runtime {
    /// A runtime with the host's full import surface linked: WASI p2, `wasi:http` and the
    /// capabilities (key-value, variables, MQTT publishing to `event_bus`, the scheduler
    /// keeping `timers` and signalling `timer_wake` after each schedule).
    pub fn new(
        engine: Engine,
        key_value: Arc<KeyValueStores>,
        event_bus: Arc<dyn EventBus>,
        timers: Arc<dyn TimerStore>,
        timer_wake: Arc<Notify>,
        settings: &EngineSettings,
    ) -> anyhow::Result<Runtime> {
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http")?;
        capabilities::add_to_linker(
            &mut linker,
            |state: &mut HostState| &mut state.key_value,
            |state: &mut HostState| &mut state.variables,
        )
        .context("linking the host capabilities")?;
        capabilities::mqtt::add_to_linker(&mut linker, |state: &mut HostState| &mut state.mqtt)
            .context("linking fermyon:spin/mqtt")?;
        capabilities::scheduler::add_to_linker(&mut linker, |state: &mut HostState| {
            &mut state.scheduler
        })
        .context("linking ticketing:platform/scheduler")?;
        Ok(Runtime {
            engine,
            linker,
            components: BTreeMap::new(),
            key_value,
            event_bus,
            timers,
            timer_wake,
            max_instance_memory: settings.max_instance_memory,
            instance_slots: Arc::new(Semaphore::new(settings.max_instances.max(1) as usize)),
            max_instances: settings.max_instances.max(1) as usize,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or takes from the cache) and pre-links the component at `path`.
    pub fn load(&mut self, id: &str, path: &Path, config: ComponentConfig) -> anyhow::Result<()> {
        let started = Instant::now();
        let component = Component::from_file(&self.engine, path)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("component `{id}`: cannot load {}", path.display()))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "component `{id}` ({}) imports something this host does not provide",
                    path.display()
                )
            })?;
        tracing::info!(
            component = id,
            path = %path.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "component loaded"
        );
        self.components.insert(
            id.to_owned(),
            Arc::new(LoadedComponent {
                id: id.to_owned(),
                pre,
                environment: config.environment.into_iter().collect(),
                variables: Arc::new(config.variables),
                key_value_labels: config.key_value_stores.into(),
                outbound: Arc::new(config.allowed_outbound_hosts),
                quiet: config.quiet,
            }),
        );
        Ok(())
    }

    /// Waits for a free instance slot; hold the permit for as long as the instance lives.
    pub async fn instance_slot(&self) -> OwnedSemaphorePermit {
        self.instance_slots
            .clone()
            .acquire_owned()
            .await
            .expect("the instance semaphore is never closed")
    }

    /// Instance slots taken now, and how many there are.
    pub fn instances_in_use(&self) -> (usize, usize) {
        let free = self.instance_slots.available_permits();
        (self.max_instances.saturating_sub(free), self.max_instances)
    }

    pub fn component(&self, id: &str) -> Option<&Arc<LoadedComponent>> {
        self.components.get(id)
    }

    /// A fresh store for one instance of `component`, whose guest code traps once
    /// `deadline` has passed.
    pub fn new_store(&self, component: &LoadedComponent, deadline: Instant) -> Store<HostState> {
        let mut wasi = WasiCtx::builder();
        if !component.quiet {
            wasi.inherit_stdout().inherit_stderr();
        }
        wasi.envs(&component.environment);
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp::new(component.id.clone(), component.outbound.clone()),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.max_instance_memory)
                .trap_on_grow_failure(true)
                .build(),
            key_value: KeyValueCtx::new(self.key_value.clone(), component.key_value_labels.clone()),
            variables: VariablesCtx::new(component.variables.clone()),
            mqtt: MqttCtx::new(self.event_bus.clone()),
            scheduler: SchedulerCtx::new(
                &component.id,
                self.timers.clone(),
                self.timer_wake.clone(),
                self.event_bus.clone(),
            ),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // tokio's own yield lets the worker poll its I/O driver too; a plain
                // self-wake would let a CPU-bound guest delay network events by many ticks.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }
}

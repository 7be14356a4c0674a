//! `ticketing up`: load the app (and build it first if asked), then [`run`] it: by default
//! every trigger in this one process, or one side only (`--triggers http|nats`) when another
//! process runs the other side. The wiring itself is in [`crate::run`], shared with the
//! `trigger-nats` Spin plugin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::manifest::Manifest;
use crate::run::{run, RunOptions, StateDir, Triggers};

pub use crate::run::{DEFAULT_MAX_INSTANCE_MEMORY, STATE_FILE};

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// spin.toml, or a lock file `spin up` wrote from it.
    pub manifest: PathBuf,
    pub listen: SocketAddr,
    pub runtime_config_file: Option<PathBuf>,
    /// Default: `.ticketing` next to spin.toml (or `state_dir` from the runtime config).
    pub state_dir: Option<PathBuf>,
    pub build: bool,
    pub request_timeout: Duration,
    /// `--header-read-timeout`: time to send a request head; idle keep-alive lifetime.
    pub header_read_timeout: Duration,
    /// `--body-read-timeout`: longest wait for the next bytes of a request body.
    pub body_read_timeout: Duration,
    /// Default: `max_instance_memory` of the runtime config, else 128 MiB.
    pub max_instance_memory: Option<u64>,
    pub max_instances: u32,
    pub triggers: Triggers,
    /// `--admin-listen`: /healthz, /readyz, /metrics.
    pub admin_listen: Option<SocketAddr>,
}

pub async fn up(options: UpOptions) -> anyhow::Result<()> {
    let manifest = Manifest::load(&options.manifest)?;
    if options.build {
        crate::build::build_components(&manifest)?;
    }
    run(
        manifest,
        RunOptions {
            triggers: options.triggers,
            listen: options.listen,
            runtime_config_file: options.runtime_config_file,
            state_dir: StateDir::Ticketing(options.state_dir),
            request_timeout: options.request_timeout,
            header_read_timeout: options.header_read_timeout,
            body_read_timeout: options.body_read_timeout,
            max_instance_memory: options.max_instance_memory,
            max_instances: options.max_instances,
            admin_listen: options.admin_listen,
            ..RunOptions::default()
        },
    )
    .await
}

//! The `ticketing` command line.
//!
//! ```text
//! ticketing up    [-f spin.toml] [--listen ADDR] [--runtime-config-file PATH] [--state-dir DIR]
//!                 [--build] [--request-timeout SECS] [--header-read-timeout SECS]
//!                 [--body-read-timeout SECS] [--max-instance-memory SIZE]
//!                 [--max-instances N] [--triggers all|http|nats] [--admin-listen ADDR]
//! ticketing build [-f spin.toml]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::manifest::Manifest;
use crate::run::Triggers;
use crate::up::{up, UpOptions};

#[derive(Debug, Parser)]
#[command(
    name = "ticketing",
    version,
    about = "Runs the ticketing platform's Wasm components"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log lines as text, or as one JSON object per line (for a log collector).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value = "text",
        env = "TICKETING_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written (stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `TICKETING_LOG_FORMAT`, for the `trigger-nats` plugin (whose options are Spin's).
    pub(crate) fn from_env() -> LogFormat {
        match std::env::var("TICKETING_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the app: HTTP routes of spin.toml, state in the state dir (like `spin up`).
    Up(UpArgs),
    /// Run every component's build command (like `spin build`).
    Build(BuildArgs),
}

/// `-f/--from`, as `spin up` and `spin build` spell it.
#[derive(Debug, clap::Args)]
pub struct ManifestArg {
    /// The application manifest (or a lock file `spin up` wrote from it).
    #[arg(
        short = 'f',
        long = "from",
        value_name = "SPIN_TOML",
        default_value = "spin.toml"
    )]
    pub path: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub manifest: ManifestArg,

    /// Address to serve HTTP on (the environment variable is Spin's name for it).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:3000",
        env = "SPIN_HTTP_LISTEN_ADDR"
    )]
    pub listen: SocketAddr,

    /// Spin runtime config (key-value stores, variables providers). Without one the host
    /// runs in development mode: embedded stores, generated development secrets.
    #[arg(long, value_name = "PATH", env = "RUNTIME_CONFIG_FILE")]
    pub runtime_config_file: Option<PathBuf>,

    /// Where the embedded state lives [default: .ticketing next to spin.toml].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Build the components first.
    #[arg(long)]
    pub build: bool,

    /// Time limit of one request, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_seconds)]
    pub request_timeout: Duration,

    /// Time a client has to send a request's head (request line and headers), and how long
    /// an idle keep-alive connection stays open; then the connection is closed, unanswered.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub header_read_timeout: Duration,

    /// Longest wait for the next bytes of a request body while a component reads it; then
    /// the host answers 408 and frees the component's instance.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_seconds)]
    pub body_read_timeout: Duration,

    /// Linear memory one instance may use: bytes, or with a unit (64MiB, 1GiB, 512KiB).
    /// [default: 128MiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_byte_size)]
    pub max_instance_memory: Option<u64>,

    /// Component instances that may run at once; more requests wait.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_instances: u32,

    /// Which triggers to run: the whole app, or one side of it while another process runs
    /// the other on the same Redis and NATS (as under `spin up` with the trigger-nats
    /// plugin).
    #[arg(long, value_enum, value_name = "WHICH", default_value = "all")]
    pub triggers: Triggers,

    /// Serve the host's own routes on this address: /healthz, /readyz and /metrics
    /// (Prometheus). Without it there is no admin listener and no metrics are recorded.
    #[arg(long, value_name = "ADDR", env = "TICKETING_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub manifest: ManifestArg,
}

/// Parses the command line, sets up logging and runs the command.
pub fn main() -> anyhow::Result<()> {
    quiet_error_backtraces();
    let cli = Cli::parse();
    let _traces = init_logging("ticketing", cli.log_format)?;
    match cli.command {
        Command::Build(args) => {
            let manifest = Manifest::load(&args.manifest.path)?;
            crate::build::build_components(&manifest)
        }
        Command::Up(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(up(UpOptions {
                manifest: args.manifest.path,
                listen: args.listen,
                runtime_config_file: args.runtime_config_file,
                state_dir: args.state_dir,
                build: args.build,
                request_timeout: args.request_timeout,
                header_read_timeout: args.header_read_timeout,
                body_read_timeout: args.body_read_timeout,
                max_instance_memory: args.max_instance_memory,
                max_instances: args.max_instances,
                triggers: args.triggers,
                admin_listen: args.admin_listen,
            }))
        }
    }
}

/// Errors carry no std backtrace unless `RUST_LIB_BACKTRACE` asks: with `RUST_BACKTRACE`
/// set, every error value captures one, and wasmtime builds one at each store drop (~1.5%
/// of the CPU under load, and host frames in error text a guest can read). Panics still
/// honour `RUST_BACKTRACE`. Call while the process has one thread.
pub(crate) fn quiet_error_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// Logs to stderr at `RUST_LOG` if set, else `info`; with `OTEL_EXPORTER_OTLP_ENDPOINT` also
/// exports spans (see [`crate::observability::traces`]) as `service` until the returned
/// guard is dropped.
pub(crate) fn init_logging(
    service: &str,
    format: LogFormat,
) -> anyhow::Result<Option<crate::observability::traces::TracesGuard>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => log.json().with_current_span(false).boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(log);
    match crate::observability::traces::otlp_layer(service)? {
        Some((traces, guard)) => {
            registry.with(traces).init();
            Ok(Some(guard))
        }
        None => {
            registry.init();
            Ok(None)
        }
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err("must be more than 0 seconds".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `134217728`, `128MiB`, `128M`, `1GiB`, `512KiB`, `64mb` (units are powers of 1024).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 134217728 or 128MiB"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes == 0 {
        return Err("must be more than 0 bytes".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_defaults_and_flags() {
        let cli = Cli::try_parse_from(["ticketing", "up"]).unwrap();
        let Command::Up(up) = cli.command else {
            panic!()
        };
        assert_eq!(up.manifest.path, PathBuf::from("spin.toml"));
        assert_eq!(up.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(up.request_timeout, Duration::from_secs(30));
        assert_eq!(up.header_read_timeout, Duration::from_secs(10));
        assert_eq!(up.body_read_timeout, Duration::from_secs(10));
        assert_eq!(up.max_instances, 256);
        assert_eq!(up.max_instance_memory, None);
        assert!(!up.build);
        assert_eq!(up.triggers, Triggers::All);
        assert_eq!(up.admin_listen, None);
        assert_eq!(cli.log_format, LogFormat::Text);

        let cli = Cli::try_parse_from([
            "ticketing",
            "up",
            "-f",
            "x/spin.toml",
            "--listen",
            "0.0.0.0:8080",
            "--build",
            "--request-timeout",
            "2.5",
            "--header-read-timeout",
            "5",
            "--body-read-timeout",
            "0.5",
            "--max-instance-memory",
            "64MiB",
            "--max-instances",
            "8",
            "--state-dir",
            "/tmp/s",
            "--runtime-config-file",
            "rc.toml",
            "--triggers",
            "http",
            "--admin-listen",
            "0.0.0.0:9090",
        ])
        .unwrap();
        let Command::Up(up) = cli.command else {
            panic!()
        };
        assert_eq!(up.manifest.path, PathBuf::from("x/spin.toml"));
        assert_eq!(up.request_timeout, Duration::from_millis(2500));
        assert_eq!(up.header_read_timeout, Duration::from_secs(5));
        assert_eq!(up.body_read_timeout, Duration::from_millis(500));
        assert_eq!(up.max_instance_memory, Some(64 << 20));
        assert_eq!(up.max_instances, 8);
        assert_eq!(up.runtime_config_file, Some(PathBuf::from("rc.toml")));
        assert_eq!(up.triggers, Triggers::Http);
        assert_eq!(up.admin_listen, Some("0.0.0.0:9090".parse().unwrap()));
        assert!(up.build);

        let cli = Cli::try_parse_from(["ticketing", "build", "--from", "a.toml"]).unwrap();
        let Command::Build(build) = cli.command else {
            panic!()
        };
        assert_eq!(build.manifest.path, PathBuf::from("a.toml"));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("134217728"), Ok(128 << 20));
        assert_eq!(parse_byte_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_byte_size("128M"), Ok(128 << 20));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("512 KiB"), Ok(512 << 10));
        assert!(parse_byte_size("lots").is_err());
        assert!(parse_byte_size("12PB").is_err());
        assert!(parse_byte_size("0").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.5s"), Ok(Duration::from_millis(500)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}

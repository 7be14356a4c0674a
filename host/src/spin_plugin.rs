//! `trigger-nats`: the host's NATS trigger as a Spin trigger plugin.
//!
//! `spin up` on an app with `[[trigger.nats]]` starts one process per trigger type: its own
//! HTTP trigger for the routes, and the plugin binary `trigger-nats` for the events. The
//! plugin is this host with [`Triggers::Nats`]: the same NATS trigger, timer driver,
//! capabilities and backends as `ticketing up`, wired by [`crate::run`]. The process contract
//! is Spin's (v3.6.3, `src/commands/up.rs`, `crates/trigger/src/cli.rs`):
//!
//! - the app is the lock file at `SPIN_LOCKED_URL` (a `file://` URL; see
//!   [`crate::manifest::locked`]); `SPIN_WORKING_DIR` is Spin's scratch dir for the run and
//!   `SPIN_LOCAL_APP_DIR` the directory of spin.toml (local apps only);
//! - `--help-args-only` prints the options and exits (called without the `SPIN_*` variables);
//!   `--launch-metadata-only` prints `{"all_flags": [{"long": .., "short": ..}]}` on stderr:
//!   `spin up` then forwards to this process only the options listed there;
//! - the options are those of Spin's `FactorsTriggerCommand` and `TriggerAppArgs`, with
//!   their environment variables; an option this plugin does not know (a newer Spin's, or
//!   another trigger's when Spin forwards everything) is logged and skipped, never fatal;
//! - Ctrl-C in `spin up` reaches this process as SIGTERM: handlers drain, exit status 0.
//!
//! Spin's HTTP trigger runs the HTTP components in another process, so every piece of state
//! the two share must be on a server: the runtime config is required, with `type = "redis"`
//! stores, and `nats_url` must name the NATS server (whose MQTT listener receives the HTTP
//! components' publishes); see [`crate::run::check_split_run`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{CommandFactory as _, Parser};

use crate::manifest::{locked, Manifest};
use crate::run::{run, ComponentOutput, RunOptions, StateDir, Triggers};

/// The plugin's name: Spin runs `trigger-<type>` for `[[trigger.<type>]]`.
pub const PLUGIN_NAME: &str = "trigger-nats";

/// Set by `spin up` for each trigger process.
pub const SPIN_LOCKED_URL: &str = "SPIN_LOCKED_URL";
pub const SPIN_WORKING_DIR: &str = "SPIN_WORKING_DIR";
pub const SPIN_LOCAL_APP_DIR: &str = "SPIN_LOCAL_APP_DIR";

/// The options `spin up` forwards to a trigger: those of Spin 3.6.3's trigger command.
#[derive(Debug, Parser)]
#[command(
    name = PLUGIN_NAME,
    version,
    about = "The ticketing platform's NATS JetStream trigger, as a Spin trigger plugin \
             (started by `spin up`)",
    override_usage = "spin up [OPTIONS]",
    next_help_heading = "NATS TRIGGER OPTIONS"
)]
pub struct PluginArgs {
    /// Log directory for the stdout and stderr of components. Accepted for Spin's sake:
    /// this trigger passes component output to its own stdout/stderr, which `spin up`
    /// shows, and writes no log files.
    #[arg(
        short = 'L',
        long = "log-dir",
        env = "SPIN_LOG_DIR",
        value_name = "APP_LOG_DIR"
    )]
    pub log_dir: Option<PathBuf>,

    /// Accepted for Spin's sake (no log files are written).
    #[arg(long)]
    pub truncate_logs: bool,

    /// Disable Wasmtime's compilation cache.
    #[arg(
        long,
        env = "DISABLE_WASMTIME_CACHE",
        conflicts_with = "cache",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub disable_cache: bool,

    /// Wasmtime cache configuration file.
    #[arg(long, env = "WASMTIME_CACHE_FILE", value_name = "WASMTIME_CACHE_FILE")]
    pub cache: Option<PathBuf>,

    /// Disable Wasmtime's pooling instance allocator.
    #[arg(long)]
    pub disable_pooling: bool,

    /// Print output to stdout/stderr only for the given component(s).
    #[arg(long = "follow", value_name = "FOLLOW_ID")]
    pub follow: Vec<String>,

    /// Silence all component output to stdout/stderr.
    #[arg(short = 'q', long = "quiet", aliases = ["sh", "shush"], conflicts_with = "follow")]
    pub quiet: bool,

    /// Runtime config: key-value stores (Redis, shared with Spin's HTTP trigger) and
    /// variables providers. Required under `spin up`.
    #[arg(long, env = "RUNTIME_CONFIG_FILE", value_name = "RUNTIME_CONFIG_FILE")]
    pub runtime_config_file: Option<PathBuf>,

    /// The application state directory [default: .spin next to spin.toml; an empty value
    /// means none]. This trigger keeps its timers there when `timers_url` is empty.
    #[arg(long, value_name = "STATE_DIR")]
    pub state_dir: Option<String>,

    /// Accepted for Spin's sake: this host mounts no `files`.
    #[arg(long)]
    pub allow_transient_write: bool,

    /// Accepted for Spin's sake: this host has no WASI OTel.
    #[arg(long)]
    pub experimental_wasi_otel: bool,

    /// A key=value to set in the default store: left to Spin's HTTP trigger, which sets it.
    #[arg(long = "key-value", value_name = "KEY_VALUES")]
    pub key_values: Vec<String>,

    /// A SQLite statement: left to Spin's HTTP trigger (this host has no SQLite).
    #[arg(long = "sqlite", value_name = "SQLITE_STATEMENTS")]
    pub sqlite_statements: Vec<String>,

    /// The memory limit of one instance, in bytes (or with a unit: 64MiB).
    #[arg(long, env = "SPIN_MAX_INSTANCE_MEMORY", value_name = "MAX_INSTANCE_MEMORY",
          value_parser = crate::cli::parse_byte_size)]
    pub max_instance_memory: Option<u64>,

    /// Variable(s) for the app, winning over every other source: `key=value`,
    /// `key=@file`, or `@file.json` / `@file.toml` holding a map. May be repeated.
    #[arg(
        long = "variable",
        value_name = "KEY=VALUE | KEY=@FILE | @FILE.json | @FILE.toml"
    )]
    pub variables: Vec<String>,

    /// Serve this trigger's own routes on this address: /healthz, /readyz (its NATS
    /// consumers, Redis and the other backends answer) and /metrics (Prometheus). This
    /// host's option, not Spin's.
    #[arg(long, value_name = "ADDR", env = "TICKETING_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,

    #[arg(long = "help-args-only", hide = true)]
    pub help_args_only: bool,

    #[arg(long = "launch-metadata-only", hide = true)]
    pub launch_metadata_only: bool,
}

/// The plugin's `main`.
pub fn main() -> anyhow::Result<()> {
    crate::cli::quiet_error_backtraces();
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let program = if argv.is_empty() {
        OsString::from(PLUGIN_NAME)
    } else {
        argv.remove(0)
    };
    let (known, ignored) = known_args(&PluginArgs::command(), &argv);
    let args = PluginArgs::parse_from(std::iter::once(program).chain(known));

    if args.help_args_only {
        PluginArgs::command()
            .disable_help_flag(true)
            .disable_version_flag(true)
            .help_template("{all-args}")
            .print_long_help()?;
        return Ok(());
    }
    if args.launch_metadata_only {
        eprintln!("{}", serde_json::to_string_pretty(&launch_metadata())?);
        return Ok(());
    }

    let _traces = crate::cli::init_logging(PLUGIN_NAME, crate::cli::LogFormat::from_env())?;
    for group in &ignored {
        tracing::warn!(
            "ignoring `{}`: not an option of {PLUGIN_NAME} (another trigger's, or a newer \
             Spin's)",
            group.join(" ")
        );
    }
    args.note_options_left_to_spin();

    let locked_url = std::env::var(SPIN_LOCKED_URL).with_context(|| {
        format!(
            "{SPIN_LOCKED_URL} is not set: {PLUGIN_NAME} is a Spin plugin, started by `spin \
             up` (install it with scripts/install-spin-plugin.sh); without Spin, run the app \
             with `ticketing up`"
        )
    })?;
    let working_dir = std::env::var_os(SPIN_WORKING_DIR)
        .map(PathBuf::from)
        .with_context(|| format!("{SPIN_WORKING_DIR} is not set (`spin up` sets it)"))?;
    let local_app_dir = std::env::var_os(SPIN_LOCAL_APP_DIR).map(PathBuf::from);

    let lock_file = locked::path_from_file_url(&locked_url)
        .with_context(|| format!("{SPIN_LOCKED_URL}={locked_url}"))?;
    let manifest = Manifest::load(&lock_file)?;
    let options = args.run_options(working_dir, local_app_dir)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(manifest, options))
}

impl PluginArgs {
    /// The run: the NATS side only, with Spin's state-dir rules.
    pub fn run_options(
        &self,
        working_dir: PathBuf,
        local_app_dir: Option<PathBuf>,
    ) -> anyhow::Result<RunOptions> {
        let mut variables = BTreeMap::new();
        for source in &self.variables {
            variables
                .extend(variable_source(source).with_context(|| format!("--variable {source}"))?);
        }
        let output = if self.quiet {
            ComponentOutput::None
        } else if self.follow.is_empty() {
            ComponentOutput::All
        } else {
            ComponentOutput::Only(self.follow.iter().cloned().collect::<BTreeSet<_>>())
        };
        Ok(RunOptions {
            triggers: Triggers::Nats,
            runtime_config_file: self.runtime_config_file.clone(),
            state_dir: StateDir::Spin {
                flag: self.state_dir.clone(),
                local_app_dir,
                scratch: working_dir,
            },
            max_instance_memory: self.max_instance_memory,
            pooling: !self.disable_pooling,
            compilation_cache: !self.disable_cache,
            cache_config_file: self.cache.clone(),
            variables,
            output,
            admin_listen: self.admin_listen,
            ..RunOptions::default()
        })
    }

    /// Says which accepted options this trigger leaves to Spin's HTTP trigger or ignores.
    fn note_options_left_to_spin(&self) {
        if self.log_dir.is_some() || self.truncate_logs {
            tracing::info!(
                "-L/--log-dir, --truncate-logs: {PLUGIN_NAME} writes no component log files; \
                 component output goes to its stdout/stderr"
            );
        }
        if !self.key_values.is_empty() || !self.sqlite_statements.is_empty() {
            tracing::info!(
                "--key-value, --sqlite: applied by Spin's HTTP trigger to its default store \
                 and database, not by {PLUGIN_NAME}"
            );
        }
    }
}

/// `--launch-metadata-only`: every option, by its long and short spelling, as Spin's
/// `LaunchMetadata` lists them (aliases are not listed, as in Spin).
pub fn launch_metadata() -> serde_json::Value {
    let all_flags: Vec<serde_json::Value> = PluginArgs::command()
        .get_arguments()
        .map(|arg| {
            let mut flag = serde_json::Map::new();
            if let Some(short) = arg.get_short() {
                flag.insert("short".into(), format!("-{short}").into());
            }
            if let Some(long) = arg.get_long() {
                flag.insert("long".into(), format!("--{long}").into());
            }
            serde_json::Value::Object(flag)
        })
        .collect();
    serde_json::json!({ "all_flags": all_flags })
}

/// Splits `args` into the options `command` knows (with their values) and the groups it
/// does not: an unknown option with the value after it, if that does not look like an
/// option (Spin groups forwarded arguments the same way), or a stray value.
pub fn known_args(command: &clap::Command, args: &[OsString]) -> (Vec<OsString>, Vec<Vec<String>>) {
    let mut long: HashMap<String, bool> =
        HashMap::from([("help".to_owned(), false), ("version".to_owned(), false)]);
    let mut short: HashMap<char, bool> = HashMap::from([('h', false), ('V', false)]);
    for arg in command.get_arguments() {
        let takes_value = arg.get_action().takes_values();
        if let Some(name) = arg.get_long() {
            long.insert(name.to_owned(), takes_value);
        }
        for alias in arg.get_all_aliases().unwrap_or_default() {
            long.insert(alias.to_owned(), takes_value);
        }
        if let Some(c) = arg.get_short() {
            short.insert(c, takes_value);
        }
        for alias in arg.get_all_short_aliases().unwrap_or_default() {
            short.insert(alias, takes_value);
        }
    }
    let is_option = |arg: &OsString| arg.to_str().is_some_and(|a| a.starts_with('-') && a != "-");

    let mut known = Vec::new();
    let mut ignored = Vec::new();
    let mut rest = args.iter().peekable();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        // Whether the option is known, and whether its value is the next argument.
        let recognised = if let Some(body) = text.strip_prefix("--").filter(|b| !b.is_empty()) {
            let (name, inline) = match body.split_once('=') {
                Some((name, _)) => (name, true),
                None => (body, false),
            };
            long.get(name).map(|takes| *takes && !inline)
        } else if let Some(body) = text
            .strip_prefix('-')
            .filter(|b| !b.is_empty() && *b != "-")
        {
            let mut chars = body.chars();
            let c = chars.next().expect("non-empty");
            short
                .get(&c)
                .map(|takes| *takes && chars.as_str().is_empty())
        } else {
            None
        };
        match recognised {
            Some(value_follows) => {
                known.push(arg.clone());
                if value_follows {
                    if let Some(value) = rest.next() {
                        known.push(value.clone());
                    }
                }
            }
            None => {
                let mut group = vec![text.into_owned()];
                if is_option(arg) {
                    if let Some(value) = rest.next_if(|next| !is_option(next)) {
                        group.push(value.to_string_lossy().into_owned());
                    }
                }
                ignored.push(group);
            }
        }
    }
    (known, ignored)
}

/// One `--variable`, as Spin reads it: `key=value`, `key=@file` (the file's text),
/// `@file.json` or `@file.toml` (a map of names to strings).
pub fn variable_source(source: &str) -> anyhow::Result<BTreeMap<String, String>> {
    if let Some(path) = source.strip_prefix('@') {
        let read = || std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"));
        return match std::path::Path::new(path)
            .extension()
            .and_then(|e| e.to_str())
        {
            Some("json") => serde_json::from_str(&read()?)
                .with_context(|| format!("{path}: not a JSON map of strings")),
            Some("toml") => toml::from_str(&read()?)
                .with_context(|| format!("{path}: not a TOML map of strings")),
            _ => bail!("variable files must end in .json or .toml"),
        };
    }
    let Some((key, value)) = source.split_once('=') else {
        bail!("variables must be in the form 'key=value' or '@file'");
    };
    let value = match value.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
        }
        None => value.to_owned(),
    };
    Ok(BTreeMap::from([(key.to_owned(), value)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(args: &[&str]) -> (Vec<String>, Vec<Vec<String>>) {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let (known, ignored) = known_args(&PluginArgs::command(), &args);
        let known = known
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        (known, ignored)
    }

    #[test]
    fn the_command_is_consistent() {
        PluginArgs::command().debug_assert();
    }

    #[test]
    fn unknown_options_are_set_aside_with_their_values() {
        let (known, ignored) = split(&[
            "--runtime-config-file",
            "rc.toml",
            "--listen",
            "127.0.0.1:3000",
            "-L",
            "logs",
            "--follow-all",
            "--state-dir=/s",
            "--some-future-flag",
            "value",
            "--follow",
            "orders",
            "-q",
            "stray",
            "--find-free-port",
            "--disable-pooling",
        ]);
        assert_eq!(
            known,
            [
                "--runtime-config-file",
                "rc.toml",
                "-L",
                "logs",
                "--state-dir=/s",
                "--follow",
                "orders",
                "-q",
                "--disable-pooling"
            ]
        );
        assert_eq!(
            ignored,
            [
                vec!["--listen", "127.0.0.1:3000"],
                vec!["--follow-all"],
                vec!["--some-future-flag", "value"],
                vec!["stray"],
                vec!["--find-free-port"],
            ]
        );
    }

    #[test]
    fn spins_options_parse() {
        let (known, _) = split(&[
            "--runtime-config-file",
            "rc.toml",
            "--state-dir",
            "",
            "-L",
            "logs",
            "--follow",
            "orders",
            "--follow",
            "tickets",
            "--variable",
            "nats_url=nats://n:4222",
            "--key-value",
            "k=v",
            "--sqlite",
            "select 1",
            "--max-instance-memory",
            "1048576",
            "--disable-pooling",
            "--disable-cache",
            "--truncate-logs",
            "--allow-transient-write",
            "--experimental-wasi-otel",
        ]);
        let args =
            PluginArgs::try_parse_from(std::iter::once("trigger-nats".to_owned()).chain(known))
                .unwrap();
        assert_eq!(args.runtime_config_file, Some(PathBuf::from("rc.toml")));
        assert_eq!(args.state_dir.as_deref(), Some(""));
        assert_eq!(args.follow, ["orders", "tickets"]);
        assert_eq!(args.max_instance_memory, Some(1 << 20));
        let options = args
            .run_options("/tmp/spinup".into(), Some("/app".into()))
            .unwrap();
        assert_eq!(options.triggers, Triggers::Nats);
        assert!(!options.pooling);
        assert!(!options.compilation_cache);
        assert_eq!(options.variables["nats_url"], "nats://n:4222");
        assert_eq!(
            options.output,
            ComponentOutput::Only(["orders".to_owned(), "tickets".to_owned()].into())
        );
        assert_eq!(
            options.state_dir,
            StateDir::Spin {
                flag: Some(String::new()),
                local_app_dir: Some("/app".into()),
                scratch: "/tmp/spinup".into(),
            }
        );
        let quiet = PluginArgs::try_parse_from(["trigger-nats", "--shush"]).unwrap();
        assert_eq!(
            quiet.run_options("/w".into(), None).unwrap().output,
            ComponentOutput::None
        );
    }

    #[test]
    fn launch_metadata_lists_spins_trigger_options() {
        let metadata = launch_metadata();
        let flags = metadata["all_flags"].as_array().unwrap();
        let has = |long: &str| flags.iter().any(|f| f["long"] == long);
        for long in [
            "--runtime-config-file",
            "--state-dir",
            "--log-dir",
            "--disable-pooling",
            "--follow",
            "--quiet",
            "--key-value",
            "--sqlite",
            "--variable",
            "--max-instance-memory",
            "--help-args-only",
            "--launch-metadata-only",
        ] {
            assert!(has(long), "{long} missing from {metadata}");
        }
        assert!(flags
            .iter()
            .any(|f| f["long"] == "--log-dir" && f["short"] == "-L"));
        assert!(flags.iter().all(|f| f.get("long").is_some()));
    }

    #[test]
    fn variables_come_like_spins_variable_option() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("secret.txt");
        std::fs::write(&text, "s3cret").unwrap();
        let json = dir.path().join("vars.json");
        std::fs::write(&json, r#"{"a": "1", "b": "2"}"#).unwrap();
        let toml = dir.path().join("vars.toml");
        std::fs::write(&toml, "c = \"3\"\n").unwrap();
        assert_eq!(variable_source("k=v=w").unwrap()["k"], "v=w");
        assert_eq!(
            variable_source(&format!("k=@{}", text.display())).unwrap()["k"],
            "s3cret"
        );
        assert_eq!(
            variable_source(&format!("@{}", json.display()))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            variable_source(&format!("@{}", toml.display())).unwrap()["c"],
            "3"
        );
        assert!(variable_source("nope").is_err());
        assert!(variable_source("@vars.yaml").is_err());
    }
}

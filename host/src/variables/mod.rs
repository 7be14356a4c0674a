//! Application variables (`[variables]` in spin.toml) and component variables.
//!
//! An application variable's value comes from, in order of precedence:
//! 1. a `static` variables provider of the runtime config (`values = { name = "..." }`);
//! 2. the environment: `SPIN_VARIABLE_<NAME>` (name upper-cased), and `<PREFIX>_<NAME>` for
//!    each `env` provider with a `prefix`;
//! 3. the variable's `default`.
//!
//! A `required` variable without a value stops start-up with an error naming it and how to
//! set it. Development mode (no runtime config file) has one exception: a required variable
//! marked `secret = true` gets a random value, generated once and kept in
//! `<state_dir>/dev-secrets.toml` so sessions survive restarts, with a warning in the log.
//!
//! Component variables (`[component.<id>.variables]`) are [`Template`]s over application
//! variables, resolved once per component at start-up.

mod template;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

pub use self::template::Template;
use crate::manifest::{Component, Variable};
use crate::runtime_config::VariablesProvider;

/// The environment-variable prefix Spin always reads (`SPIN_VARIABLE_JWT_SECRET`).
pub const DEFAULT_ENV_PREFIX: &str = "SPIN_VARIABLE";

/// Where resolution looks for values besides the manifest.
pub struct Sources<'a> {
    pub providers: &'a [VariablesProvider],
    /// Reads an environment variable (`std::env::var` in the host, a map in tests).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Development mode: where to keep generated secrets. `None` outside development mode.
    pub dev_secrets: Option<&'a DevSecrets>,
}

/// Resolves every application variable to a value, or fails naming each one that has none.
pub fn resolve_application(
    declared: &BTreeMap<String, Variable>,
    sources: &Sources<'_>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut env_prefixes: Vec<&str> = sources
        .providers
        .iter()
        .filter_map(|p| match p {
            VariablesProvider::Env { prefix } => {
                Some(prefix.as_deref().unwrap_or(DEFAULT_ENV_PREFIX))
            }
            VariablesProvider::Static { .. } => None,
        })
        .collect();
    if !env_prefixes.contains(&DEFAULT_ENV_PREFIX) {
        env_prefixes.push(DEFAULT_ENV_PREFIX);
    }

    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    let mut generated = Vec::new();
    for (name, variable) in declared {
        let from_static = sources.providers.iter().find_map(|p| match p {
            VariablesProvider::Static { values } => values.get(name).cloned(),
            VariablesProvider::Env { .. } => None,
        });
        let from_env = || {
            env_prefixes
                .iter()
                .find_map(|prefix| (sources.env)(&env_name(prefix, name)))
        };
        let value = from_static
            .or_else(from_env)
            .or_else(|| variable.default.clone());
        match value {
            Some(value) => {
                values.insert(name.clone(), value);
            }
            None if variable.secret && sources.dev_secrets.is_some() => {
                generated.push(name.clone())
            }
            None => missing.push(name.clone()),
        }
    }

    if !missing.is_empty() {
        let how: Vec<String> = missing
            .iter()
            .map(|name| {
                format!(
                    "`{name}` (set the environment variable {}=...)",
                    env_name(DEFAULT_ENV_PREFIX, name)
                )
            })
            .collect();
        bail!(
            "required application variable{} without a value: {}; values can also come from a \
             `static` [[variables_provider]] in the runtime config file",
            if missing.len() == 1 { "" } else { "s" },
            how.join(", ")
        );
    }

    if let Some(dev) = sources.dev_secrets {
        if !generated.is_empty() {
            let secrets = dev.get_or_create(&generated)?;
            for name in generated {
                tracing::warn!(
                    variable = %name,
                    file = %dev.path().display(),
                    "development secret: `{name}` has no value, so a random one is used and kept \
                     in the state dir; set a real one with {}=... or a runtime config file",
                    env_name(DEFAULT_ENV_PREFIX, &name)
                );
                values.insert(name.clone(), secrets[&name].clone());
            }
        }
    }
    Ok(values)
}

/// Resolves one component's `[component.<id>.variables]` templates.
pub fn resolve_component(
    id: &str,
    component: &Component,
    application: &BTreeMap<String, String>,
) -> anyhow::Result<HashMap<String, String>> {
    component
        .variables
        .iter()
        .map(|(name, text)| {
            let value = Template::parse(text)
                .and_then(|t| t.render(application))
                .with_context(|| format!("[component.{id}.variables] `{name}`"))?;
            Ok((name.clone(), value))
        })
        .collect()
}

/// `SPIN_VARIABLE` + `jwt_secret` → `SPIN_VARIABLE_JWT_SECRET`.
pub fn env_name(prefix: &str, variable: &str) -> String {
    format!("{prefix}_{}", variable.to_ascii_uppercase())
}

/// Generated development secrets, kept in `<state_dir>/dev-secrets.toml`.
pub struct DevSecrets {
    path: PathBuf,
}

impl DevSecrets {
    pub const FILE_NAME: &'static str = "dev-secrets.toml";

    pub fn in_state_dir(state_dir: &Path) -> DevSecrets {
        DevSecrets {
            path: state_dir.join(Self::FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Values for `names`: the ones already in the file, plus new random ones (then saved).
    pub fn get_or_create(&self, names: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
        let mut secrets: BTreeMap<String, String> = match std::fs::read_to_string(&self.path) {
            Ok(text) => toml::from_str(&text).with_context(|| {
                format!("invalid development secrets file {}", self.path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", self.path.display()));
            }
        };
        let mut changed = false;
        for name in names {
            if !secrets.contains_key(name) {
                secrets.insert(name.clone(), random_secret()?);
                changed = true;
            }
        }
        if changed {
            self.save(&secrets)?;
        }
        Ok(secrets)
    }

    fn save(&self, secrets: &BTreeMap<String, String>) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating state dir {}", dir.display()))?;
        }
        let text = format!(
            "# Development secrets generated by `ticketing up` (no runtime config given).\n\
             # Not for production: set real values with SPIN_VARIABLE_<NAME> or a runtime config.\n{}",
            toml::to_string(secrets)?
        );
        // Write-then-rename so a crash never leaves a half-written file.
        let tmp = self.path.with_extension("toml.tmp");
        write_private(&tmp, text.as_bytes())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// 32 random bytes, hex-encoded.
fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests;

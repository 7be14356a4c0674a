//! `spin.toml` (manifest version 2), read with Spin's rules.
//!
//! [`Manifest::load`] parses the file ([`schema`] has the serde shapes) and then checks what
//! Spin's loader checks: the manifest version, id syntax, "exactly one of `required = true` /
//! `default`" for variables, that triggers name existing components, and that component
//! variable templates only refer to declared application variables. Features of Spin this
//! host does not implement (remote sources, `files`, SQLite, ...) are rejected with an error
//! saying so rather than silently ignored.
//!
//! `[[trigger.http]]` entries become [`HttpTrigger`]s; every other trigger type is kept as raw
//! tables in [`Manifest::other_triggers`] for the trigger that will read it.
//!
//! The same model also comes from the lock file `spin up` writes from spin.toml and hands to
//! its trigger processes ([`locked`]); both go through the same checks.

pub mod locked;
pub mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};

pub use self::schema::{Application, BuildConfig, Commands, Component, ComponentSource, Variable};
use self::schema::{RawHttpTrigger, RawManifest, RawRoute};
use crate::variables::Template;

/// A loaded and checked `spin.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file (absolute).
    pub path: PathBuf,
    /// Its directory: relative `source`s and build `workdir`s resolve against it.
    pub dir: PathBuf,
    pub application: Application,
    pub variables: BTreeMap<String, Variable>,
    pub components: BTreeMap<String, Component>,
    pub http_triggers: Vec<HttpTrigger>,
    /// `[[trigger.<type>]]` entries of every type but `http`, untouched.
    pub other_triggers: BTreeMap<String, Vec<toml::Table>>,
}

/// One `[[trigger.http]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    pub id: Option<String>,
    pub component: String,
    pub route: HttpRoute,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRoute {
    /// A route as written, e.g. `/api/users/...` (wildcard) or `/health` (exact).
    Path(String),
    /// `route = { private = true }`: reachable only by service chaining, never served.
    Private,
}

impl Manifest {
    /// Reads and checks the app at `path`: a `spin.toml`, or the lock file Spin writes from
    /// one (`spin.lock`, JSON: see [`locked`]), told apart by their first character.
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let path = std::path::absolute(path)
            .with_context(|| format!("resolving manifest path {}", path.display()))?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        if locked::is_lock_file(&text) {
            return Self::parse_locked(&text, path.clone())
                .with_context(|| format!("invalid Spin lock file {}", path.display()));
        }
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path.clone(), dir)
            .with_context(|| format!("invalid manifest {}", path.display()))
    }

    /// Parses manifest text; `path` and `dir` are recorded for later path resolution.
    pub fn parse(text: &str, path: PathBuf, dir: PathBuf) -> anyhow::Result<Manifest> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;

        match raw.spin_manifest_version.as_integer() {
            Some(2) => {}
            _ => bail!(
                "`spin_manifest_version` must be 2 (found {}); this host reads only manifest \
                 version 2",
                raw.spin_manifest_version
            ),
        }

        Self::assemble(
            path,
            dir,
            raw.application,
            raw.variables,
            raw.component,
            raw.trigger,
        )
    }

    /// Checks the parts of an app (from spin.toml or from a lock file) as Spin's loader does
    /// and puts them together: `[[trigger.http]]` entries become [`HttpTrigger`]s, every
    /// other trigger type stays raw.
    fn assemble(
        path: PathBuf,
        dir: PathBuf,
        application: Application,
        variables: BTreeMap<String, Variable>,
        components: BTreeMap<String, Component>,
        triggers: BTreeMap<String, Vec<toml::Table>>,
    ) -> anyhow::Result<Manifest> {
        for (name, variable) in &variables {
            check_snake_id(name).with_context(|| format!("[variables] key `{name}`"))?;
            if variable.required == variable.default.is_some() {
                bail!(
                    "[variables.{name}]: give exactly one of `required = true` or `default = \
                     \"...\"`"
                );
            }
        }

        for (id, component) in &components {
            check_kebab_id(id)
                .with_context(|| format!("[component.{id}]: invalid component id"))?;
            check_component(id, component, &variables)
                .with_context(|| format!("[component.{id}]"))?;
        }

        let mut http_triggers = Vec::new();
        let mut other_triggers = BTreeMap::new();
        for (trigger_type, entries) in triggers {
            if trigger_type != "http" {
                for (index, entry) in entries.iter().enumerate() {
                    if let Some(component) = entry.get("component").and_then(|c| c.as_str()) {
                        if !components.contains_key(component) {
                            bail!(
                                "[[trigger.{trigger_type}]] #{}: component `{component}` is not \
                                 declared (no [component.{component}])",
                                index + 1
                            );
                        }
                    }
                }
                other_triggers.insert(trigger_type, entries);
                continue;
            }
            for (index, entry) in entries.into_iter().enumerate() {
                let trigger = http_trigger(entry, &components)
                    .with_context(|| format!("[[trigger.http]] #{}", index + 1))?;
                http_triggers.push(trigger);
            }
        }

        Ok(Manifest {
            path,
            dir,
            application,
            variables,
            components,
            http_triggers,
            other_triggers,
        })
    }

    /// The `.wasm` file of component `id`, resolved against the manifest's directory.
    pub fn component_source(&self, id: &str) -> anyhow::Result<PathBuf> {
        let component = self
            .components
            .get(id)
            .ok_or_else(|| anyhow!("no component `{id}` in {}", self.path.display()))?;
        match &component.source {
            ComponentSource::Local(source) => Ok(self.dir.join(source)),
            // Rejected by the loader already; kept total for callers.
            ComponentSource::Remote(_) => {
                bail!("[component.{id}]: remote sources are not supported by this host")
            }
        }
    }

    /// Every key-value store label any component uses, sorted, without duplicates.
    pub fn key_value_labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self
            .components
            .values()
            .flat_map(|c| c.key_value_stores.iter().cloned())
            .collect();
        labels.sort();
        labels.dedup();
        labels
    }
}

fn check_component(
    id: &str,
    component: &Component,
    app_variables: &BTreeMap<String, Variable>,
) -> anyhow::Result<()> {
    if let ComponentSource::Remote(table) = &component.source {
        let kind = if table.contains_key("url") {
            "`source = { url = ... }`"
        } else if table.contains_key("registry") || table.contains_key("package") {
            "`source = { registry/package = ... }`"
        } else {
            "a table `source`"
        };
        bail!(
            "`source`: {kind} is not supported by this host; build the component and give a \
             local path, e.g. source = \"target/wasm32-wasip2/release/{}.wasm\"",
            id.replace('-', "_")
        );
    }
    for (name, template) in &component.variables {
        check_snake_id(name).with_context(|| format!("[component.{id}.variables] key `{name}`"))?;
        let template = Template::parse(template)
            .with_context(|| format!("`variables.{name}` = {template:?}"))?;
        for reference in template.references() {
            if !app_variables.contains_key(reference) {
                bail!(
                    "`variables.{name}` refers to `{{{{ {reference} }}}}`, but there is no \
                     application variable `{reference}` in [variables]"
                );
            }
        }
    }
    for host in &component.allowed_outbound_hosts {
        let template = Template::parse(host)
            .with_context(|| format!("`allowed_outbound_hosts` entry {host:?}"))?;
        for reference in template.references() {
            if !app_variables.contains_key(reference) {
                bail!(
                    "`allowed_outbound_hosts` entry {host:?} refers to `{reference}`, which is \
                     not in [variables]"
                );
            }
        }
    }
    for label in &component.key_value_stores {
        check_label(label).with_context(|| format!("`key_value_stores` label {label:?}"))?;
    }
    let unsupported = [
        ("files", !component.files.is_empty()),
        ("exclude_files", !component.exclude_files.is_empty()),
        ("sqlite_databases", !component.sqlite_databases.is_empty()),
        ("ai_models", !component.ai_models.is_empty()),
        ("dependencies", !component.dependencies.is_empty()),
    ];
    for (key, used) in unsupported {
        if used {
            bail!("`{key}` is not supported by this host");
        }
    }
    if !component.allowed_http_hosts.is_empty() {
        bail!(
            "`allowed_http_hosts` is deprecated and not supported by this host; use \
             `allowed_outbound_hosts = [\"https://example.com\"]`"
        );
    }
    Ok(())
}

fn http_trigger(
    entry: toml::Table,
    components: &BTreeMap<String, Component>,
) -> anyhow::Result<HttpTrigger> {
    let raw: RawHttpTrigger = entry.try_into().map_err(|e| anyhow!("{e}"))?;
    let route = match raw.route {
        RawRoute::Path(route) => {
            if !route.starts_with('/') {
                bail!("`route = {route:?}` must start with `/`");
            }
            HttpRoute::Path(route)
        }
        RawRoute::Private(private) if private.private => HttpRoute::Private,
        RawRoute::Private(_) => bail!("`route = {{ private = false }}`: give a path instead"),
    };
    if raw.static_response.is_some() {
        bail!("`static_response` is not supported by this host");
    }
    if raw.components.is_some() || raw.dependencies.is_some() {
        bail!("trigger `components`/`dependencies` (middleware) are not supported by this host");
    }
    if let Some(executor) = &raw.executor {
        match executor.get("type").and_then(|t| t.as_str()) {
            Some("spin") | Some("http") => {}
            Some(other) => bail!(
                "`executor = {{ type = \"{other}\" }}` is not supported by this host (only \
                 \"spin\")"
            ),
            None => bail!("`executor` needs a `type`"),
        }
    }
    let component = match raw.component {
        Some(toml::Value::String(id)) => id,
        Some(toml::Value::Table(_)) => bail!(
            "inline `component = {{ ... }}` tables are not supported by this host; declare \
             [component.<id>] and write `component = \"<id>\"`"
        ),
        Some(other) => bail!("`component` must be a component id string, found {other}"),
        None => bail!("missing `component`"),
    };
    if !components.contains_key(&component) {
        bail!("component `{component}` is not declared (no [component.{component}])");
    }
    Ok(HttpTrigger {
        id: raw.id,
        component,
        route,
    })
}

/// Spin's `KebabId`: lowercase words of letters and digits joined by single `-`, starting
/// with a letter (`auth`, `order-service`, `v2-api`).
pub fn check_kebab_id(id: &str) -> anyhow::Result<()> {
    check_id(id, '-').map_err(|why| anyhow!("`{id}` must be kebab-case ({why})"))
}

/// Spin's `LowerSnakeId`: lowercase words of letters and digits joined by single `_`.
pub fn check_snake_id(id: &str) -> anyhow::Result<()> {
    check_id(id, '_').map_err(|why| anyhow!("`{id}` must be lower_snake_case ({why})"))
}

/// Key-value labels: Spin accepts both kebab- and snake-case.
fn check_label(label: &str) -> anyhow::Result<()> {
    if check_id(label, '-').is_ok() || check_id(label, '_').is_ok() {
        Ok(())
    } else {
        bail!("must be kebab-case or snake_case, e.g. `default` or `my-store`")
    }
}

fn check_id(id: &str, separator: char) -> Result<(), &'static str> {
    let Some(first) = id.chars().next() else {
        return Err("it is empty");
    };
    if !first.is_ascii_lowercase() {
        return Err("it must start with a lowercase letter");
    }
    if id.ends_with(separator) {
        return Err("it must not end with a separator");
    }
    let doubled: String = [separator, separator].iter().collect();
    if id.contains(&doubled) {
        return Err("it must not contain two separators in a row");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == separator)
    {
        return Err("only lowercase letters, digits and the separator are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests;

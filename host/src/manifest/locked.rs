//! Spin's lock file (`spin.lock`, the "LockedApp" JSON): the app as `spin up` hands it to
//! each trigger process, through `SPIN_LOCKED_URL`.
//!
//! `spin up` loads spin.toml, normalizes it and writes it out as JSON (Spin v3.6.3,
//! `crates/locked-app/src/locked.rs`, `crates/loader/src/local.rs`):
//!
//! - `metadata`: `name`, `version`, `description`, `authors`, `origin` (the file URL of
//!   spin.toml), `triggers` = every `[application.trigger.<type>]` table, and a legacy
//!   `trigger` = `{ "type": T, ... }` when the app has one trigger type only;
//! - `variables`: `[variables]` without `required` (no `default` means required);
//! - `triggers[]`: `{ id, trigger_type, trigger_config }`, where `trigger_config` is the
//!   `[[trigger.<type>]]` table without `id` and with `component` as an id;
//! - `components[]`: `id`, `source.source` = the `.wasm` file as a `file://` URL, `env`,
//!   `config` = the component's `variables`, still `{{ templated }}`, and `metadata` with
//!   `allowed_outbound_hosts` (templated too), `key_value_stores`, `databases`, `ai_models`,
//!   `description` and `build`. Empty strings, lists and maps are left out.
//!
//! [`Manifest::parse_locked`] turns that back into the host's [`Manifest`] and runs the same
//! checks as for spin.toml, so `[application.trigger.nats]` and `[[trigger.nats]]` mean the
//! same whichever way the app arrives, and features this host lacks (`files`, SQLite,
//! dependencies, inline sources) are refused the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::schema::{Application, BuildConfig, Component, ComponentSource, Variable};
use super::Manifest;

/// Whether `text` is a lock file (JSON) rather than a spin.toml: TOML cannot start with `{`.
pub fn is_lock_file(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// The lock file's top level. Fields Spin may add later are ignored, as Spin ignores them,
/// except where Spin says they must be understood (`must_understand`).
#[derive(Debug, Deserialize)]
struct LockedApp {
    spin_lock_version: u64,
    #[serde(default)]
    must_understand: Vec<String>,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    host_requirements: Map<String, Value>,
    #[serde(default)]
    variables: BTreeMap<String, LockedVariable>,
    triggers: Vec<LockedTrigger>,
    components: Vec<LockedComponent>,
}

#[derive(Debug, Deserialize)]
struct LockedVariable {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    secret: bool,
}

#[derive(Debug, Deserialize)]
struct LockedTrigger {
    id: String,
    trigger_type: String,
    trigger_config: Value,
}

#[derive(Debug, Deserialize)]
struct LockedComponent {
    id: String,
    #[serde(default)]
    metadata: Map<String, Value>,
    source: LockedSource,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<Value>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    dependencies: Map<String, Value>,
    #[serde(default)]
    host_requirements: Map<String, Value>,
}

/// `ContentRef`: a `source` URL, `inline` base64 content, and/or a `digest`.
#[derive(Debug, Deserialize)]
struct LockedSource {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    inline: Option<Value>,
}

/// What `must_understand` may name: both are host requirements, checked below.
const UNDERSTOOD: &[&str] = &["host_requirements", "component_host_requirements"];

impl Manifest {
    /// Parses a lock file written by `spin up`; `path` is the lock file (for messages).
    /// Relative build `workdir`s resolve against the directory of the spin.toml it came
    /// from (`metadata.origin`), else against the lock file's directory.
    pub fn parse_locked(text: &str, path: PathBuf) -> anyhow::Result<Manifest> {
        let locked: LockedApp = serde_json::from_str(text).map_err(|e| anyhow!("{e}"))?;
        if locked.spin_lock_version > 1 {
            bail!(
                "`spin_lock_version` {} is newer than this host reads (0 or 1)",
                locked.spin_lock_version
            );
        }
        for item in &locked.must_understand {
            if !UNDERSTOOD.contains(&item.as_str()) {
                bail!("the app requires `{item}` (must_understand), which this host does not know");
            }
        }
        check_host_requirements(&locked.host_requirements).context("host_requirements")?;

        let dir = match locked.metadata.get("origin").and_then(Value::as_str) {
            Some(origin) if origin.starts_with("file:") => {
                path_from_file_url(origin)?.parent().map(Path::to_path_buf)
            }
            _ => None,
        }
        .or_else(|| path.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));

        let types: Vec<&str> = locked
            .triggers
            .iter()
            .map(|t| t.trigger_type.as_str())
            .collect();
        let application = application(&locked.metadata, &types).context("metadata")?;

        let variables = locked
            .variables
            .into_iter()
            .map(|(name, variable)| {
                let required = variable.default.is_none();
                let variable = Variable {
                    description: variable.description,
                    required,
                    default: variable.default,
                    secret: variable.secret,
                };
                (name, variable)
            })
            .collect();

        let mut components = BTreeMap::new();
        for component in locked.components {
            let id = component.id.clone();
            let component =
                self::component(component).with_context(|| format!("components[\"{id}\"]"))?;
            if components.insert(id.clone(), component).is_some() {
                bail!("component `{id}` appears twice in `components`");
            }
        }

        let mut triggers: BTreeMap<String, Vec<toml::Table>> = BTreeMap::new();
        for trigger in locked.triggers {
            let context = || format!("triggers[\"{}\"]", trigger.id);
            let mut table = match to_toml(&trigger.trigger_config).with_context(context)? {
                toml::Value::Table(table) => table,
                other => {
                    return Err(anyhow!("`trigger_config` must be an object, found {other}"))
                        .with_context(context)
                }
            };
            // The id is kept beside the config in the lock; spin.toml has it in the table.
            table.insert("id".to_owned(), toml::Value::String(trigger.id.clone()));
            triggers
                .entry(trigger.trigger_type)
                .or_default()
                .push(table);
        }

        Self::assemble(path, dir, application, variables, components, triggers)
    }
}

/// `[application]` from `metadata`: `triggers.<type>` are the `[application.trigger.<type>]`
/// tables; an older Spin wrote a single type's table as `trigger` = `{ "type": T, ... }`
/// only, which is read when `triggers` lacks that type (as Spin's own `App` does).
fn application(
    metadata: &Map<String, Value>,
    trigger_types: &[&str],
) -> anyhow::Result<Application> {
    let string = |key: &str| -> anyhow::Result<Option<String>> {
        match metadata.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => bail!("`{key}` must be a string, found {other}"),
        }
    };
    let name = string("name")?.ok_or_else(|| anyhow!("missing the app's `name`"))?;
    let authors = match metadata.get("authors") {
        None => Vec::new(),
        Some(value) => serde_json::from_value(value.clone()).context("`authors`")?,
    };

    let mut trigger: BTreeMap<String, toml::Table> = BTreeMap::new();
    if let Some(triggers) = metadata.get("triggers") {
        let triggers = triggers
            .as_object()
            .ok_or_else(|| anyhow!("`triggers` must be an object of trigger types"))?;
        for (trigger_type, settings) in triggers {
            trigger.insert(
                trigger_type.clone(),
                table(settings).with_context(|| format!("`triggers.{trigger_type}`"))?,
            );
        }
    }
    if let Some(legacy) = metadata.get("trigger").and_then(Value::as_object) {
        if let Some(Value::String(trigger_type)) = legacy.get("type") {
            if !trigger.contains_key(trigger_type) && trigger_types.contains(&trigger_type.as_str())
            {
                let mut settings = legacy.clone();
                settings.remove("type");
                let settings = table(&Value::Object(settings)).context("`trigger`")?;
                trigger.insert(trigger_type.clone(), settings);
            }
        }
    }

    Ok(Application {
        name,
        version: string("version")?,
        description: string("description")?,
        authors,
        targets: Vec::new(),
        trigger,
        tool: BTreeMap::new(),
    })
}

fn component(locked: LockedComponent) -> anyhow::Result<Component> {
    check_host_requirements(&locked.host_requirements).context("host_requirements")?;
    if locked.source.inline.is_some() {
        bail!("`source`: inline Wasm content is not supported by this host; use a file");
    }
    let url = locked
        .source
        .source
        .ok_or_else(|| anyhow!("`source` has no `source` URL"))?;
    if !url.starts_with("file:") {
        bail!("`source` {url:?}: only file:// sources are supported by this host");
    }
    let path = path_from_file_url(&url).context("`source`")?;
    let path = path
        .to_str()
        .ok_or_else(|| anyhow!("`source` {}: not a UTF-8 path", path.display()))?
        .to_owned();

    let metadata = &locked.metadata;
    let strings = |key: &str| -> anyhow::Result<Vec<String>> {
        match metadata.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(value) => serde_json::from_value(value.clone())
                .with_context(|| format!("`metadata.{key}` must be a list of strings")),
        }
    };
    let description = match metadata.get("description") {
        Some(Value::String(text)) => Some(text.clone()),
        _ => None,
    };
    // `spin build` reads the build section; keep it if it has the shape of spin.toml's.
    let build = metadata
        .get("build")
        .and_then(|build| serde_json::from_value::<BuildConfig>(build.clone()).ok());
    let files = locked
        .files
        .iter()
        .map(to_toml)
        .collect::<anyhow::Result<Vec<_>>>()
        .context("`files`")?;
    let dependencies = locked
        .dependencies
        .iter()
        .map(|(name, value)| Ok((name.clone(), to_toml(value)?)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()
        .context("`dependencies`")?;

    Ok(Component {
        source: ComponentSource::Local(path),
        description,
        variables: locked.config,
        environment: locked.env,
        allowed_outbound_hosts: strings("allowed_outbound_hosts")?,
        allowed_http_hosts: Vec::new(),
        key_value_stores: strings("key_value_stores")?,
        build,
        files,
        exclude_files: Vec::new(),
        sqlite_databases: strings("databases")?,
        ai_models: strings("ai_models")?,
        targets: None,
        dependencies_inherit_configuration: false,
        dependencies,
        profile: BTreeMap::new(),
        tool: BTreeMap::new(),
    })
}

/// Host requirements this host meets: none (Spin's only one is `local_service_chaining`,
/// HTTP requests from one component to another inside the app). `optional` ones are
/// skipped, as Spin skips them.
fn check_host_requirements(requirements: &Map<String, Value>) -> anyhow::Result<()> {
    let unmet: Vec<&str> = requirements
        .iter()
        .filter(|(_, value)| value.as_str() != Some("optional"))
        .map(|(name, _)| name.as_str())
        .collect();
    if !unmet.is_empty() {
        bail!(
            "the app requires features this host does not provide: {}",
            unmet.join(", ")
        );
    }
    Ok(())
}

fn table(value: &Value) -> anyhow::Result<toml::Table> {
    match to_toml(value)? {
        toml::Value::Table(table) => Ok(table),
        other => bail!("expected an object, found {other}"),
    }
}

/// JSON → TOML, for trigger tables that came from TOML in the first place (so no `null`).
fn to_toml(value: &Value) -> anyhow::Result<toml::Value> {
    Ok(match value {
        Value::Null => bail!("`null` has no TOML equivalent"),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if n.is_f64() => toml::Value::Float(f),
            _ => bail!("{n} does not fit a TOML integer"),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => {
            toml::Value::Array(items.iter().map(to_toml).collect::<anyhow::Result<_>>()?)
        }
        Value::Object(entries) => toml::Value::Table(
            entries
                .iter()
                .map(|(k, v)| Ok((k.clone(), to_toml(v)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
    })
}

/// `file:///abs/path%20with%20spaces` → `/abs/path with spaces` (`file://localhost/...`
/// too), as Spin's `parse_file_url` reads `SPIN_LOCKED_URL` and component sources.
pub fn path_from_file_url(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url
        .strip_prefix("file://")
        .ok_or_else(|| anyhow!("{url:?} is not a file:// URL"))?;
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        bail!("{url:?}: a file URL needs an absolute path (file:///...)");
    }
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let bytes = percent_decode(rest).with_context(|| format!("{url:?}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt as _;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }
    #[cfg(not(unix))]
    {
        Ok(PathBuf::from(String::from_utf8(bytes)?))
    }
}

fn percent_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'%' {
            out.push(byte);
            continue;
        }
        let hex: Vec<u8> = bytes.by_ref().take(2).collect();
        let decoded = std::str::from_utf8(&hex)
            .ok()
            .filter(|h| h.len() == 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or_else(|| anyhow!("bad percent escape"))?;
        out.push(decoded);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{HttpRoute, HttpTrigger};

    /// Shaped like what `spin up` 3.6.3 writes for a two-trigger-type app.
    const LOCK: &str = r#"{
      "spin_lock_version": 0,
      "metadata": {
        "name": "ticketing",
        "version": "0.1.0",
        "authors": ["someone"],
        "origin": "file:///srv/my%20app/spin.toml",
        "triggers": { "nats": { "url": "{{ nats_url }}", "max_deliver": 3 } }
      },
      "variables": {
        "jwt_secret": { "secret": true },
        "nats_url": { "default": "" }
      },
      "triggers": [
        { "id": "auth-http-trigger", "trigger_type": "http",
          "trigger_config": { "component": "auth", "route": "/api/users/..." } },
        { "id": "orders-nats-trigger", "trigger_type": "nats",
          "trigger_config": { "component": "orders", "subjects": ["ticketing.ticket.created"] } }
      ],
      "components": [
        { "id": "auth",
          "metadata": { "key_value_stores": ["auth"],
                        "allowed_outbound_hosts": ["{{ nats_url }}"],
                        "build": { "command": "cargo build", "watch": [] } },
          "source": { "content_type": "application/wasm",
                      "source": "file:///srv/my%20app/target/auth.wasm" },
          "env": { "RUST_LOG": "info" },
          "config": { "jwt_secret": "{{ jwt_secret }}" } },
        { "id": "orders",
          "source": { "content_type": "application/wasm", "source": "file:///srv/orders.wasm",
                      "digest": "sha256:00" } }
      ]
    }"#;

    fn parse(text: &str) -> anyhow::Result<Manifest> {
        Manifest::parse_locked(text, PathBuf::from("/tmp/spinup-x/spin.lock"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn reads_what_spin_up_writes() {
        assert!(is_lock_file(LOCK));
        let m = parse(LOCK).unwrap();
        assert_eq!(m.application.name, "ticketing");
        assert_eq!(m.application.version.as_deref(), Some("0.1.0"));
        assert_eq!(m.dir, PathBuf::from("/srv/my app"));
        assert_eq!(m.path, PathBuf::from("/tmp/spinup-x/spin.lock"));
        let nats = &m.application.trigger["nats"];
        assert_eq!(nats["url"].as_str(), Some("{{ nats_url }}"));
        assert_eq!(nats["max_deliver"].as_integer(), Some(3));

        assert!(m.variables["jwt_secret"].required);
        assert!(m.variables["jwt_secret"].secret);
        assert!(!m.variables["nats_url"].required);
        assert_eq!(m.variables["nats_url"].default.as_deref(), Some(""));

        assert_eq!(
            m.http_triggers,
            [HttpTrigger {
                id: Some("auth-http-trigger".into()),
                component: "auth".into(),
                route: HttpRoute::Path("/api/users/...".into()),
            }]
        );
        let nats = &m.other_triggers["nats"];
        assert_eq!(nats.len(), 1);
        assert_eq!(nats[0]["component"].as_str(), Some("orders"));
        assert_eq!(nats[0]["id"].as_str(), Some("orders-nats-trigger"));

        let auth = &m.components["auth"];
        assert_eq!(
            m.component_source("auth").unwrap(),
            PathBuf::from("/srv/my app/target/auth.wasm")
        );
        assert_eq!(auth.key_value_stores, ["auth"]);
        assert_eq!(auth.allowed_outbound_hosts, ["{{ nats_url }}"]);
        assert_eq!(auth.variables["jwt_secret"], "{{ jwt_secret }}");
        assert_eq!(auth.environment["RUST_LOG"], "info");
        assert!(auth.build.is_some());
        assert_eq!(
            m.component_source("orders").unwrap(),
            PathBuf::from("/srv/orders.wasm")
        );
        assert_eq!(m.key_value_labels(), ["auth"]);
    }

    #[test]
    fn the_legacy_single_trigger_table_is_read() {
        let lock = r#"{ "spin_lock_version": 0,
          "metadata": { "name": "a", "trigger": { "type": "nats", "stream": "S" } },
          "triggers": [ { "id": "t", "trigger_type": "nats",
                          "trigger_config": { "component": "c", "subjects": ["x.y"] } } ],
          "components": [ { "id": "c", "source": { "content_type": "application/wasm",
                                                   "source": "file:///c.wasm" } } ] }"#;
        let m = parse(lock).unwrap();
        assert_eq!(m.application.trigger["nats"]["stream"].as_str(), Some("S"));
        assert!(!m.application.trigger["nats"].contains_key("type"));
        // The lock file's directory when there is no origin.
        assert_eq!(m.dir, PathBuf::from("/tmp/spinup-x"));
    }

    #[test]
    fn what_this_host_cannot_honour_is_refused() {
        let with = |component: &str| {
            format!(
                r#"{{ "spin_lock_version": 1, "metadata": {{ "name": "a" }},
                     "triggers": [], "components": [ {component} ] }}"#
            )
        };
        let source =
            r#""source": { "content_type": "application/wasm", "source": "file:///c.wasm" }"#;
        let err = error(&with(&format!(
            r#"{{ "id": "c", {source}, "files": [ {{ "source": "file:///a", "path": "/" }} ] }}"#
        )));
        assert!(err.contains("`files` is not supported"), "{err}");
        let err = error(&with(&format!(
            r#"{{ "id": "c", {source}, "metadata": {{ "databases": ["default"] }} }}"#
        )));
        assert!(err.contains("`sqlite_databases` is not supported"), "{err}");
        let err = error(&with(
            r#"{ "id": "c", "source": { "content_type": "application/wasm", "inline": "AGFzbQ==" } }"#,
        ));
        assert!(err.contains("inline"), "{err}");
        let err = error(&with(&format!(
            r#"{{ "id": "c", {source}, "host_requirements": {{ "local_service_chaining": "required" }} }}"#
        )));
        assert!(err.contains("local_service_chaining"), "{err}");
        let err = error(&with(&format!(
            r#"{{ "id": "c", {source}, "config": {{ "k": "{{{{ nope }}}}" }} }}"#
        )));
        assert!(err.contains("no application variable `nope`"), "{err}");
        let err = error(
            r#"{ "spin_lock_version": 1, "must_understand": ["time_travel"],
                 "triggers": [], "components": [] }"#,
        );
        assert!(err.contains("time_travel"), "{err}");
        let err = error(
            r#"{ "spin_lock_version": 0, "metadata": { "name": "a" },
                 "triggers": [ { "id": "t", "trigger_type": "nats",
                                 "trigger_config": { "component": "ghost" } } ],
                 "components": [] }"#,
        );
        assert!(err.contains("ghost"), "{err}");
    }

    #[test]
    fn file_urls() {
        assert_eq!(
            path_from_file_url("file:///tmp/spinup-Ab1/spin.lock").unwrap(),
            PathBuf::from("/tmp/spinup-Ab1/spin.lock")
        );
        assert_eq!(
            path_from_file_url("file://localhost/a%20b/%C3%A9.wasm").unwrap(),
            PathBuf::from("/a b/é.wasm")
        );
        assert!(path_from_file_url("https://example.com/a.wasm").is_err());
        assert!(path_from_file_url("file://relative/a.wasm").is_err());
        assert!(path_from_file_url("file:///a%2").is_err());
        assert!(!is_lock_file("spin_manifest_version = 2\n"));
    }
}

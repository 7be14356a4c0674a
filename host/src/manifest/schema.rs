//! The serde shape of `spin.toml` (manifest version 2), field for field as Spin reads it.
//!
//! Spin marks the top level, `[application]`, `[variables]` entries, `[component.<id>]` and
//! `[component.<id>.build]` with `deny_unknown_fields`, so a misspelt key is an error there;
//! we do the same. `[[trigger.<type>]]` entries are kept as raw tables: each trigger type
//! reads its own keys (see [`super::HttpTrigger`] for `http`).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    pub spin_manifest_version: toml::Value,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    #[serde(default)]
    pub trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

/// `[application]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    pub targets: Vec<String>,
    /// `[application.trigger.<type>]`: settings for a whole trigger type (free-form).
    #[serde(default)]
    pub trigger: BTreeMap<String, toml::Table>,
    /// `[application.tool.<name>]`: for other tools; ignored.
    #[serde(default)]
    pub tool: BTreeMap<String, toml::Table>,
}

/// One `[variables]` entry. Exactly one of `required = true` and `default` must be given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

/// `[component.<id>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub source: ComponentSource,
    #[serde(default)]
    pub description: Option<String>,
    /// Component variables: name → template over application variables (`"{{ name }}"`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Environment variables the component sees through `wasi:cli/environment`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Deprecated by Spin in favour of `allowed_outbound_hosts`.
    #[serde(default)]
    pub allowed_http_hosts: Vec<String>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub build: Option<BuildConfig>,

    // Accepted because Spin accepts them; the loader rejects non-empty values this host
    // cannot honour instead of silently ignoring them.
    #[serde(default)]
    pub files: Vec<toml::Value>,
    #[serde(default)]
    pub exclude_files: Vec<String>,
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    #[serde(default)]
    pub ai_models: Vec<String>,
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    #[serde(default)]
    pub dependencies_inherit_configuration: bool,
    #[serde(default)]
    pub dependencies: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub profile: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub tool: BTreeMap<String, toml::Table>,
}

/// `source = "path.wasm"`, or a remote source (which this host does not fetch).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ComponentSource {
    Local(String),
    Remote(toml::Table),
}

/// `[component.<id>.build]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    pub command: Commands,
    /// Relative to the manifest's directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Globs relative to `workdir`, for `spin watch`; kept for completeness.
    #[serde(default)]
    pub watch: Vec<String>,
}

/// `command = "one"` or `command = ["first", "second"]` (run in order).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Commands {
    Single(String),
    Many(Vec<String>),
}

impl Commands {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Commands::Single(command) => std::slice::from_ref(command),
            Commands::Many(commands) => commands,
        }
    }
}

/// One `[[trigger.http]]` entry, as Spin's HTTP trigger reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpTrigger {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub component: Option<toml::Value>,
    pub route: RawRoute,
    #[serde(default)]
    pub executor: Option<toml::Table>,
    #[serde(default)]
    pub static_response: Option<toml::Table>,
    #[serde(default)]
    pub components: Option<toml::Table>,
    #[serde(default)]
    pub dependencies: Option<toml::Table>,
}

/// `route = "/path/..."` or `route = { private = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawRoute {
    Path(String),
    Private(PrivateRoute),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateRoute {
    pub private: bool,
}

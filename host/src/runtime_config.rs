//! Spin's `runtime-config.toml`, the part of it this host implements.
//!
//! Supported top-level keys: `[key_value_store.<label>]` (`type = "spin"` with an optional
//! `path`, or `type = "redis"` with `url`), `state_dir`, and `[[variables_provider]]` of type
//! `"env"` (optional `prefix`) or `"static"` (`values`). Spin rejects unknown top-level keys,
//! and so do we; keys Spin knows but this host does not implement (`sqlite_database`,
//! `llm_compute`, vault providers, ...) are an explicit "not supported by this host" error,
//! so a runtime config never silently means less here than under Spin.
//!
//! Relative paths (`state_dir`, a store's `path`) resolve against the file's directory, as
//! in Spin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

use crate::backends::key_value::StoreConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// The file it was read from; `None` for the built-in defaults (development mode).
    pub path: Option<PathBuf>,
    pub key_value_stores: BTreeMap<String, StoreConfig>,
    pub state_dir: Option<PathBuf>,
    pub variables_providers: Vec<VariablesProvider>,
    /// `max_instance_memory` (bytes), as Spin's runtime config allows.
    pub max_instance_memory: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VariablesProvider {
    /// Variable `api_key` ← environment variable `<prefix>_API_KEY`.
    Env {
        #[serde(default)]
        prefix: Option<String>,
    },
    /// Fixed values, e.g. `values = { api_key = "1234" }`.
    Static { values: BTreeMap<String, String> },
}

/// Top-level keys Spin's runtime config knows that this host does not implement.
const SPIN_KEYS_NOT_SUPPORTED: &[&str] = &[
    "sqlite_database",
    "llm_compute",
    "outbound_http",
    "outbound_redis",
    "outbound_mqtt",
    "outbound_networking",
    "client_tls",
    "log_dir",
];

/// Key-value store types Spin knows that this host does not implement.
const SPIN_STORE_TYPES_NOT_SUPPORTED: &[&str] = &["azure_cosmos", "aws_dynamo"];

/// Variables provider types Spin knows that this host does not implement.
const SPIN_PROVIDERS_NOT_SUPPORTED: &[&str] = &["vault", "azure_key_vault"];

impl RuntimeConfig {
    pub fn load(path: &Path) -> anyhow::Result<RuntimeConfig> {
        let path = std::path::absolute(path)
            .with_context(|| format!("resolving runtime config path {}", path.display()))?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read runtime config {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut config = Self::parse(&text, &dir)
            .with_context(|| format!("invalid runtime config {}", path.display()))?;
        config.path = Some(path);
        Ok(config)
    }

    /// Parses runtime config text; relative paths resolve against `dir`.
    pub fn parse(text: &str, dir: &Path) -> anyhow::Result<RuntimeConfig> {
        let table: toml::Table = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let mut config = RuntimeConfig::default();
        for (key, value) in table {
            match key.as_str() {
                "key_value_store" => {
                    let stores = value
                        .as_table()
                        .ok_or_else(|| anyhow!("`key_value_store` must be a table of stores"))?;
                    for (label, store) in stores {
                        let store = store_config(store, dir)
                            .with_context(|| format!("[key_value_store.{label}]"))?;
                        config.key_value_stores.insert(label.clone(), store);
                    }
                }
                "state_dir" => {
                    let state_dir = value
                        .as_str()
                        .ok_or_else(|| anyhow!("`state_dir` must be a string path"))?;
                    config.state_dir = Some(dir.join(state_dir));
                }
                "variables_provider" | "config_provider" => {
                    let providers = value
                        .as_array()
                        .ok_or_else(|| anyhow!("`{key}` must be an array of tables: [[{key}]]"))?;
                    for (index, provider) in providers.iter().enumerate() {
                        let provider = variables_provider(provider)
                            .with_context(|| format!("[[{key}]] #{}", index + 1))?;
                        config.variables_providers.push(provider);
                    }
                }
                "max_instance_memory" => {
                    let bytes = value
                        .as_integer()
                        .filter(|b| *b > 0)
                        .ok_or_else(|| anyhow!("`max_instance_memory` must be a byte count"))?;
                    config.max_instance_memory = Some(bytes as u64);
                }
                other if SPIN_KEYS_NOT_SUPPORTED.contains(&other) => {
                    bail!("`{other}` is a Spin runtime config key not supported by this host")
                }
                other => bail!(
                    "unknown key `{other}` (this host reads `key_value_store`, `state_dir`, \
                     `variables_provider` and `max_instance_memory`)"
                ),
            }
        }
        Ok(config)
    }
}

fn store_config(value: &toml::Value, dir: &Path) -> anyhow::Result<StoreConfig> {
    let store_type = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| anyhow!("missing `type` (\"spin\" or \"redis\")"))?;
    if SPIN_STORE_TYPES_NOT_SUPPORTED.contains(&store_type) {
        bail!(
            "`type = \"{store_type}\"` is not supported by this host (use \"spin\" or \"redis\")"
        );
    }
    let store: StoreConfig = value.clone().try_into().map_err(|e| anyhow!("{e}"))?;
    Ok(match store {
        StoreConfig::Spin { path: Some(path) } => StoreConfig::Spin {
            path: Some(dir.join(path)),
        },
        other => other,
    })
}

fn variables_provider(value: &toml::Value) -> anyhow::Result<VariablesProvider> {
    let provider_type = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| anyhow!("missing `type` (\"env\" or \"static\")"))?;
    if SPIN_PROVIDERS_NOT_SUPPORTED.contains(&provider_type) {
        bail!("`type = \"{provider_type}\"` is not supported by this host (use \"env\" or \"static\")");
    }
    if provider_type == "env" && value.get("dotenv_path").is_some() {
        bail!("`dotenv_path` is not supported by this host; export the variables instead");
    }
    value.clone().try_into().map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<RuntimeConfig> {
        RuntimeConfig::parse(text, Path::new("/etc/app"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn reads_stores_state_dir_and_providers() {
        let config = parse(
            r#"
            state_dir = "data"
            max_instance_memory = 67108864
            [key_value_store.auth]
            type = "redis"
            url = "redis://127.0.0.1:6379"
            [key_value_store.default]
            type = "spin"
            path = "kv/default.db"
            [key_value_store.scratch]
            type = "spin"
            [key_value_store.abs]
            type = "spin"
            path = "/var/lib/abs.db"
            [[variables_provider]]
            type = "static"
            values = { jwt_secret = "from-static" }
            [[variables_provider]]
            type = "env"
            prefix = "TICKETING"
            "#,
        )
        .unwrap();
        assert_eq!(config.state_dir, Some(PathBuf::from("/etc/app/data")));
        assert_eq!(config.max_instance_memory, Some(64 << 20));
        assert_eq!(
            config.key_value_stores["auth"],
            StoreConfig::Redis {
                url: "redis://127.0.0.1:6379".into()
            }
        );
        assert_eq!(
            config.key_value_stores["default"],
            StoreConfig::Spin {
                path: Some("/etc/app/kv/default.db".into())
            }
        );
        assert_eq!(
            config.key_value_stores["scratch"],
            StoreConfig::Spin { path: None }
        );
        assert_eq!(
            config.key_value_stores["abs"],
            StoreConfig::Spin {
                path: Some("/var/lib/abs.db".into())
            }
        );
        assert_eq!(
            config.variables_providers,
            vec![
                VariablesProvider::Static {
                    values: [("jwt_secret".to_owned(), "from-static".to_owned())].into()
                },
                VariablesProvider::Env {
                    prefix: Some("TICKETING".into())
                },
            ]
        );
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), RuntimeConfig::default());
    }

    #[test]
    fn rejects_unknown_top_level_keys_like_spin() {
        let err = error("[nats]\nurl = \"nats://localhost\"\n");
        assert!(err.contains("unknown key `nats`"), "{err}");
    }

    #[test]
    fn spin_keys_this_host_lacks_are_named_as_unsupported() {
        for text in [
            "[sqlite_database.default]\ntype = \"spin\"\n",
            "[llm_compute]\ntype = \"remote_http\"\n",
        ] {
            let err = error(text);
            assert!(err.contains("not supported by this host"), "{err}");
        }
        let err = error("[key_value_store.x]\ntype = \"aws_dynamo\"\nregion = \"x\"\n");
        assert!(err.contains("[key_value_store.x]"), "{err}");
        assert!(err.contains("not supported by this host"), "{err}");
        let err = error("[[variables_provider]]\ntype = \"vault\"\nurl = \"http://v\"\n");
        assert!(err.contains("not supported by this host"), "{err}");
    }

    #[test]
    fn rejects_bad_entries_with_their_location() {
        let err = error("[key_value_store.auth]\ntype = \"redis\"\n");
        assert!(err.contains("[key_value_store.auth]"), "{err}");
        let err = error("[key_value_store.auth]\ntype = \"redis\"\nurl = \"redis://x\"\ndb = 2\n");
        assert!(err.contains("db"), "{err}");
        let err = error("[[variables_provider]]\ntype = \"static\"\nvalues = {}\nextra = 1\n");
        assert!(err.contains("[[variables_provider]] #1"), "{err}");
        let err = error("[[variables_provider]]\ntype = \"env\"\ndotenv_path = \".env\"\n");
        assert!(err.contains("dotenv_path"), "{err}");
    }

    #[test]
    fn the_apps_runtime_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime-config.toml");
        let config = RuntimeConfig::load(&path).unwrap();
        assert!(matches!(
            config.key_value_stores.get("auth"),
            Some(StoreConfig::Redis { .. })
        ));
        assert!(config.path.is_some());
    }
}

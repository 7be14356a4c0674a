//! Key-value stores: the [`KeyValueBackend`] trait, its two implementations (the embedded
//! redb file and Redis) and [`KeyValueStores`], the label → backend map the host builds at
//! start-up from the `[key_value_store.<label>]` entries of Spin's `runtime-config.toml`.

pub mod crash_point;
mod embedded;
mod redis;
pub mod spin_semantics;

pub use self::embedded::{EmbeddedKeyValue, EmbeddedState};
pub use self::redis::RedisKeyValue;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use serde::Deserialize;

/// One key-value store. Keys are raw strings (as in Spin: components namespace their own keys).
///
/// Counters written by [`increment`](Self::increment) are stored as ASCII decimal, like Redis
/// `INCRBY`, so both backends read and write the same representation.
#[async_trait]
pub trait KeyValueBackend: Send + Sync {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;

    async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()>;

    /// Deleting an absent key is not an error.
    async fn delete(&self, key: &str) -> anyhow::Result<()>;

    async fn exists(&self, key: &str) -> anyhow::Result<bool>;

    /// Every key of the store, in no particular order.
    async fn keys(&self) -> anyhow::Result<Vec<String>>;

    /// Atomically adds `delta` to the counter at `key` (absent = 0) and returns the new value.
    /// Fails if the stored value is not an ASCII decimal integer or the sum overflows.
    async fn increment(&self, key: &str, delta: i64) -> anyhow::Result<i64>;

    /// Atomically sets `key` to `new` if its current value equals `expected`, where
    /// `expected == None` means "the key must be absent". Returns whether the swap happened.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> anyhow::Result<bool>;

    /// Values for `keys`, in the same order; not atomic across keys.
    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<(String, Option<Vec<u8>>)>> {
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            entries.push((key.clone(), self.get(key).await?));
        }
        Ok(entries)
    }

    /// Not atomic across keys: on error some entries may already be written.
    async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
        for (key, value) in entries {
            self.set(key, value).await?;
        }
        Ok(())
    }

    /// Not atomic across keys: on error some keys may already be deleted.
    async fn delete_many(&self, keys: &[String]) -> anyhow::Result<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }
}

/// One `[key_value_store.<label>]` entry of Spin's `runtime-config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// `type = "spin"`: the embedded file store. `path` is resolved against the runtime config
    /// file's directory by whoever parses that file; `None` means the host's shared state file
    /// (Spin would use an in-memory store there; ours is durable).
    Spin { path: Option<PathBuf> },
    /// `type = "redis"`: a Redis server, e.g. `redis://localhost:6379`.
    Redis { url: String },
}

/// The key-value stores of one running app: label → backend.
pub struct KeyValueStores {
    stores: BTreeMap<String, OpenStore>,
}

struct OpenStore {
    backend: Arc<dyn KeyValueBackend>,
    /// Where the data lives, for logs and error messages (no secrets).
    summary: String,
}

impl KeyValueStores {
    /// Opens every configured label and every label a component uses. Labels without a config
    /// entry live in `embedded` (Spin provisions only `default` itself; this host does it for
    /// every label so that `ticketing up` needs no runtime config at all).
    ///
    /// Redis servers are connected to here, so an unreachable one fails start-up with an error
    /// naming the label and URL instead of failing the first request.
    pub async fn open(
        configs: &BTreeMap<String, StoreConfig>,
        labels_in_use: &[String],
        embedded: &EmbeddedState,
    ) -> anyhow::Result<Arc<Self>> {
        let mut labels: Vec<&str> = configs.keys().map(String::as_str).collect();
        labels.extend(labels_in_use.iter().map(String::as_str));
        labels.sort_unstable();
        labels.dedup();

        // Labels sharing a file or a Redis server share one handle: redb allows one open
        // `Database` per file, and one multiplexed Redis connection serves any number of labels.
        let mut embedded_files: BTreeMap<PathBuf, EmbeddedState> = BTreeMap::new();
        embedded_files.insert(absolute(embedded.path())?, embedded.clone());
        let mut redis_servers: BTreeMap<String, RedisKeyValue> = BTreeMap::new();

        let spin_semantics = spin_semantics::SpinSemantics::from_env()?;
        if let Some(semantics) = spin_semantics {
            tracing::warn!(
                "test mode: key-value stores behave like Spin 3.6.3's {semantics:?} store ({})",
                spin_semantics::ENV_VAR
            );
        }
        let crash_point = crash_point::from_env();
        if let Some(pattern) = &crash_point {
            tracing::warn!(
                "test mode: the host kills itself after writing a key containing {pattern:?} ({})",
                crash_point::ENV_VAR
            );
        }
        let mut stores = BTreeMap::new();
        for label in labels {
            let store = match configs.get(label) {
                None | Some(StoreConfig::Spin { path: None }) => embedded_store(embedded, label)?,
                Some(StoreConfig::Spin { path: Some(path) }) => {
                    let path = absolute(path)?;
                    let state = match embedded_files.get(&path) {
                        Some(state) => state.clone(),
                        None => {
                            let state = EmbeddedState::open(&path).with_context(|| {
                                format!("key-value store {label:?}: opening {}", path.display())
                            })?;
                            embedded_files.insert(path, state.clone());
                            state
                        }
                    };
                    embedded_store(&state, label)?
                }
                Some(StoreConfig::Redis { url }) => {
                    let shown_url = redact_url(url);
                    let redis = match redis_servers.get(url) {
                        Some(redis) => redis.clone(),
                        None => {
                            let redis = RedisKeyValue::connect(url).await.with_context(|| {
                                format!(
                                    "key-value store {label:?}: cannot reach Redis at {shown_url}"
                                )
                            })?;
                            redis_servers.insert(url.clone(), redis.clone());
                            redis
                        }
                    };
                    OpenStore {
                        backend: Arc::new(redis),
                        summary: format!("Redis at {shown_url}"),
                    }
                }
            };
            let store = match spin_semantics {
                Some(semantics) => OpenStore {
                    backend: semantics.wrap(store.backend),
                    summary: format!("{} with Spin's {semantics:?} semantics", store.summary),
                },
                None => store,
            };
            let store = match &crash_point {
                Some(pattern) => OpenStore {
                    backend: crash_point::wrap(pattern.clone(), store.backend),
                    summary: format!("{}, crashing after writing *{pattern}*", store.summary),
                },
                None => store,
            };
            tracing::info!(label, store = %store.summary, "key-value store ready");
            stores.insert(label.to_owned(), store);
        }
        Ok(Arc::new(Self { stores }))
    }

    /// The backend of `label`, if the app has such a store.
    pub fn get(&self, label: &str) -> Option<Arc<dyn KeyValueBackend>> {
        self.stores.get(label).map(|store| store.backend.clone())
    }

    /// Where `label`'s data lives, e.g. `Redis at redis://cache:6379` (passwords hidden).
    pub fn summary(&self, label: &str) -> Option<&str> {
        self.stores.get(label).map(|store| store.summary.as_str())
    }

    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }
}

fn embedded_store(state: &EmbeddedState, label: &str) -> anyhow::Result<OpenStore> {
    let backend = state
        .key_value(label)
        .with_context(|| format!("key-value store {label:?}: opening its embedded table"))?;
    Ok(OpenStore {
        backend: Arc::new(backend),
        summary: format!("embedded file {}", state.path().display()),
    })
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// `redis://user:secret@host:6379` → `redis://user:***@host:6379`, for messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let hidden = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{hidden}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_config_reads_spin_runtime_config_entries() {
        #[derive(Deserialize)]
        struct RuntimeConfig {
            key_value_store: BTreeMap<String, StoreConfig>,
        }
        let config: RuntimeConfig = toml::from_str(
            r#"
            [key_value_store.default]
            type = "spin"
            path = ".spin/data.db"
            [key_value_store.orders]
            type = "redis"
            url = "redis://localhost:6379"
            [key_value_store.scratch]
            type = "spin"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.key_value_store["default"],
            StoreConfig::Spin {
                path: Some(".spin/data.db".into())
            }
        );
        assert_eq!(
            config.key_value_store["orders"],
            StoreConfig::Redis {
                url: "redis://localhost:6379".into()
            }
        );
        assert_eq!(
            config.key_value_store["scratch"],
            StoreConfig::Spin { path: None }
        );
    }

    #[test]
    fn store_config_rejects_unknown_types_and_keys() {
        let parse = toml::from_str::<StoreConfig>;
        assert!(parse(r#"type = "aws_dynamo""#).is_err());
        assert!(parse("type = \"redis\"\nurl = \"redis://x\"\ndb = 1").is_err());
        assert!(parse(r#"type = "redis""#).is_err());
    }

    #[test]
    fn redact_url_hides_passwords_only() {
        assert_eq!(
            redact_url("redis://localhost:6379"),
            "redis://localhost:6379"
        );
        assert_eq!(
            redact_url("redis://user:s3cret@cache:6379/0"),
            "redis://user:***@cache:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@cache"), "redis://:***@cache");
        assert_eq!(redact_url("rediss://token@cache"), "rediss://***@cache");
    }
}

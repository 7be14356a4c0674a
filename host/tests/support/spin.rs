//! Playing Spin's part: the lock file `spin up` writes from spin.toml, and the `trigger-nats`
//! plugin process started the way `spin up` starts trigger plugins.
//!
//! The converter below is written from Spin 3.6.3's loader (`crates/loader/src/local.rs`,
//! `crates/manifest/src/normalize.rs`, `crates/locked-app/src/locked.rs`) and reads
//! spin.toml as plain TOML, independently of the host's parser, so that a test checks the
//! host's reading of Spin's format rather than agreeing with itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// The LockedApp JSON `spin up` writes for the spin.toml at `manifest`.
pub fn locked_app(manifest: &Path) -> Value {
    let manifest = std::fs::canonicalize(manifest).unwrap();
    let app_dir = manifest.parent().unwrap();
    let doc: toml::Table = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
    let empty = toml::Table::new();
    let application = doc["application"].as_table().unwrap();
    let triggers = doc
        .get("trigger")
        .and_then(|t| t.as_table())
        .unwrap_or(&empty);

    // metadata: empty strings and lists are left out; `triggers` is always there.
    let mut metadata = Map::new();
    for key in ["name", "version", "description"] {
        if let Some(text) = application.get(key).and_then(|v| v.as_str()) {
            if !text.is_empty() {
                metadata.insert(key.into(), text.into());
            }
        }
    }
    if let Some(authors) = application.get("authors").and_then(|a| a.as_array()) {
        if !authors.is_empty() {
            metadata.insert(
                "authors".into(),
                to_json(&toml::Value::Array(authors.clone())),
            );
        }
    }
    metadata.insert("origin".into(), file_url(&manifest).into());
    let app_triggers = application
        .get("trigger")
        .cloned()
        .unwrap_or(toml::Value::Table(toml::Table::new()));
    metadata.insert("triggers".into(), to_json(&app_triggers));
    if triggers.len() == 1 {
        let (only, _) = triggers.iter().next().unwrap();
        let mut legacy = app_triggers
            .get(only)
            .map(to_json)
            .unwrap_or_else(|| json!({}));
        legacy["type"] = only.as_str().into();
        metadata.insert("trigger".into(), legacy);
    }

    // variables: `required` is dropped (no default means required).
    let mut variables = Map::new();
    if let Some(declared) = doc.get("variables").and_then(|v| v.as_table()) {
        for (name, variable) in declared {
            let mut locked = Map::new();
            for key in ["description", "default"] {
                if let Some(text) = variable.get(key).and_then(|v| v.as_str()) {
                    locked.insert(key.into(), text.into());
                }
            }
            if variable.get("secret").and_then(|s| s.as_bool()) == Some(true) {
                locked.insert("secret".into(), true.into());
            }
            variables.insert(name.clone(), Value::Object(locked));
        }
    }

    // triggers: ids normalized as `<component>-<type>-trigger`, else `<type>-trigger<n>`.
    let mut taken: Vec<String> = triggers
        .values()
        .flat_map(|entries| entries.as_array().unwrap().iter())
        .filter_map(|entry| {
            entry
                .get("id")
                .and_then(|id| id.as_str())
                .map(str::to_owned)
        })
        .collect();
    let mut locked_triggers = Vec::new();
    for (trigger_type, entries) in triggers {
        let mut counter = 1;
        for entry in entries.as_array().unwrap() {
            let mut config = entry.as_table().unwrap().clone();
            let id = match config.remove("id") {
                Some(id) => id.as_str().unwrap().to_owned(),
                None => {
                    let natural = config
                        .get("component")
                        .and_then(|c| c.as_str())
                        .map(|c| format!("{c}-{trigger_type}-trigger"))
                        .filter(|id| !taken.contains(id));
                    let id = natural.unwrap_or_else(|| loop {
                        let id = format!("{trigger_type}-trigger{counter}");
                        counter += 1;
                        if !taken.contains(&id) {
                            break id;
                        }
                    });
                    taken.push(id.clone());
                    id
                }
            };
            locked_triggers.push(json!({
                "id": id,
                "trigger_type": trigger_type,
                "trigger_config": to_json(&toml::Value::Table(config)),
            }));
        }
    }

    // components: the source as an absolute file URL, `variables` as `config` (templated),
    // the rest under `metadata`.
    let mut components = Vec::new();
    if let Some(declared) = doc.get("component").and_then(|c| c.as_table()) {
        for (id, component) in declared {
            let component = component.as_table().unwrap();
            let mut metadata = Map::new();
            if let Some(text) = component.get("description").and_then(|d| d.as_str()) {
                if !text.is_empty() {
                    metadata.insert("description".into(), text.into());
                }
            }
            for (toml_key, lock_key) in [
                ("allowed_outbound_hosts", "allowed_outbound_hosts"),
                ("key_value_stores", "key_value_stores"),
                ("sqlite_databases", "databases"),
                ("ai_models", "ai_models"),
            ] {
                if let Some(list) = component.get(toml_key).and_then(|l| l.as_array()) {
                    if !list.is_empty() {
                        metadata
                            .insert(lock_key.into(), to_json(&toml::Value::Array(list.clone())));
                    }
                }
            }
            if let Some(build) = component.get("build") {
                metadata.insert("build".into(), to_json(build));
            }
            let source = component["source"].as_str().expect("a local source");
            let source = app_dir.join(source);
            let source = std::fs::canonicalize(&source).unwrap_or(source);
            let mut locked = json!({
                "id": id,
                "metadata": metadata,
                "source": {
                    "content_type": "application/wasm",
                    "source": file_url(&source),
                },
            });
            for (toml_key, lock_key) in [("environment", "env"), ("variables", "config")] {
                if let Some(table) = component.get(toml_key).and_then(|t| t.as_table()) {
                    if !table.is_empty() {
                        locked[lock_key] = to_json(&toml::Value::Table(table.clone()));
                    }
                }
            }
            components.push(locked);
        }
    }

    let mut locked = json!({ "spin_lock_version": 0, "metadata": metadata });
    if !variables.is_empty() {
        locked["variables"] = Value::Object(variables);
    }
    locked["triggers"] = Value::Array(locked_triggers);
    locked["components"] = Value::Array(components);
    locked
}

/// Writes `<working_dir>/spin.lock` (pretty JSON, as `spin up` does) and returns its URL.
pub fn write_lock_file(manifest: &Path, working_dir: &Path) -> String {
    let path = working_dir.join("spin.lock");
    let json = serde_json::to_vec_pretty(&locked_app(manifest)).unwrap();
    std::fs::write(&path, json).unwrap();
    file_url(&path)
}

/// A runtime config putting each of `labels` on the Redis server at `url`.
pub fn redis_runtime_config(labels: &[&str], url: &str) -> String {
    labels
        .iter()
        .map(|l| format!("[key_value_store.{l}]\ntype = \"redis\"\nurl = \"{url}\"\n"))
        .collect()
}

/// Every key-value label the lock file's components use.
pub fn key_value_labels(locked: &Value) -> Vec<String> {
    let mut labels: Vec<String> = locked["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["metadata"]["key_value_stores"].as_array())
        .flatten()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

/// `file:///abs/path`, percent-encoding what a URL path cannot hold (as `Url::from_file_path`).
pub fn file_url(path: &Path) -> String {
    assert!(path.is_absolute(), "{}", path.display());
    let mut url = String::from("file://");
    for byte in path.to_str().unwrap().bytes() {
        match byte {
            b' ' | b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}' => {
                url.push_str(&format!("%{byte:02X}"))
            }
            0x80.. => url.push_str(&format!("%{byte:02X}")),
            _ => url.push(byte as char),
        }
    }
    url
}

fn to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => s.as_str().into(),
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::Datetime(d) => d.to_string().into(),
        toml::Value::Array(items) => items.iter().map(to_json).collect(),
        toml::Value::Table(table) => table
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect::<Map<_, _>>()
            .into(),
    }
}

/// How `spin up` starts a trigger plugin: its environment and forwarded options.
pub struct PluginLaunch {
    /// `SPIN_LOCKED_URL`.
    pub locked_url: String,
    /// `SPIN_WORKING_DIR`.
    pub working_dir: PathBuf,
    /// `SPIN_LOCAL_APP_DIR`.
    pub local_app_dir: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A running `trigger-nats`, stopped with SIGTERM (as `spin up` stops it) on drop.
pub struct Plugin {
    child: Child,
    log: PathBuf,
}

impl Plugin {
    /// Starts the plugin binary and waits until its NATS trigger runs (its consumers exist).
    pub fn start(launch: &PluginLaunch, log: PathBuf) -> Plugin {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_trigger-nats"))
            .args(&launch.args)
            .env_remove("RUNTIME_CONFIG_FILE")
            .env("SPIN_LOCKED_URL", &launch.locked_url)
            .env("SPIN_WORKING_DIR", &launch.working_dir)
            .env("SPIN_LOCAL_APP_DIR", &launch.local_app_dir)
            // What Spin's plugin launcher adds (`src/commands/external.rs`).
            .env("SPIN_VERSION", "3.6.3")
            .env("SPIN_VERSION_MAJOR", "3")
            .env("SPIN_VERSION_MINOR", "6")
            .env("SPIN_VERSION_PATCH", "3")
            .env("SPIN_TARGET_TRIPLE", "x86_64-unknown-linux-gnu")
            .envs(launch.env.iter().cloned())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start trigger-nats");
        let mut plugin = Plugin { child, log };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !plugin.log().contains("NATS trigger running") {
            if let Some(status) = plugin.child.try_wait().unwrap() {
                panic!("trigger-nats exited ({status}) at start:\n{}", plugin.log());
            }
            assert!(
                Instant::now() < deadline,
                "trigger-nats not running within 120 s:\n{}",
                plugin.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        plugin
    }

    pub fn log(&self) -> String {
        super::read_log(&self.log)
    }

    /// SIGTERM, and the exit status once it has drained.
    pub fn stop(&mut self) -> ExitStatus {
        super::terminate(
            &mut self.child,
            Duration::from_secs(30),
            "trigger-nats",
            &self.log,
        )
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let drain = Duration::from_millis(200);
        super::end_process(&mut self.child, drain, "trigger-nats", &self.log);
    }
}

/// `nats-server -c deploy/nats.conf`, with its ports moved to free ones and its store to a
/// temporary dir; killed on drop.
pub struct ConfiguredNats {
    pub port: u16,
    pub mqtt_port: u16,
    child: super::ServerProcess,
    _dir: tempfile::TempDir,
}

impl ConfiguredNats {
    pub fn start(config: &Path) -> ConfiguredNats {
        let dir = tempfile::tempdir().unwrap();
        let (port, mqtt_port) = (super::free_port(), super::free_port());
        let mut text = std::fs::read_to_string(config).unwrap();
        for (from, to) in [
            ("127.0.0.1:4222", format!("127.0.0.1:{port}")),
            ("127.0.0.1:1883", format!("127.0.0.1:{mqtt_port}")),
            (
                "store_dir: \"nats-data\"",
                format!("store_dir: \"{}\"", dir.path().join("jetstream").display()),
            ),
        ] {
            assert!(
                text.contains(from),
                "{} no longer has {from}",
                config.display()
            );
            text = text.replace(from, &to);
        }
        let rewritten = dir.path().join("nats.conf");
        std::fs::write(&rewritten, text).unwrap();
        let log = dir.path().join("nats.log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&rewritten)
            .arg("-l")
            .arg(&log)
            .spawn()
            .expect("start nats-server");
        let mut nats = ConfiguredNats {
            port,
            mqtt_port,
            child: super::ServerProcess(child),
            _dir: dir,
        };
        for port in [port, mqtt_port] {
            let deadline = Instant::now() + Duration::from_secs(60);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = nats.child.0.try_wait().unwrap() {
                    panic!(
                        "nats-server exited ({status}):\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server not listening on {port}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// One MQTT 3.1.1 QoS 1 publish, as Spin's outbound MQTT sends it: CONNECT (clean
/// session), PUBLISH with a packet id, and the broker's PUBACK, which means it is stored.
pub fn mqtt_publish_qos1(port: u16, client_id: &str, topic: &str, payload: &[u8]) {
    use std::io::{Read as _, Write as _};

    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        let mut length = body.len();
        loop {
            let mut byte = (length % 128) as u8;
            length /= 128;
            if length > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if length == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
        out
    }

    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut connect = Vec::new();
    string(&mut connect, "MQTT");
    connect.extend_from_slice(&[4, 0x02, 0, 60]); // level 4, clean session, keep-alive 60 s
    string(&mut connect, client_id);
    stream.write_all(&packet(0x10, &connect)).unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");

    let mut publish = Vec::new();
    string(&mut publish, topic);
    publish.extend_from_slice(&7u16.to_be_bytes());
    publish.extend_from_slice(payload);
    stream.write_all(&packet(0x32, &publish)).unwrap(); // PUBLISH, QoS 1
    let mut puback = [0u8; 4];
    stream.read_exact(&mut puback).unwrap();
    assert_eq!(puback, [0x40, 2, 0, 7], "PUBACK for packet 7");
    stream.write_all(&[0xE0, 0]).unwrap(); // DISCONNECT
}

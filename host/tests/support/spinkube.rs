//! Reading deploy/spinkube: the SpinApp, the trigger-nats Deployment, the NATS config and the
//! lock file baked into the trigger image, for the manifest test and the replica test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn spinkube_dir() -> PathBuf {
    super::workspace_root().join("deploy/spinkube")
}

/// Every YAML document of `path`, as JSON values.
pub fn read_yaml(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// Every object of the resources listed in deploy/spinkube/kustomization.yaml.
pub fn objects() -> Vec<Value> {
    let kustomization = read_yaml(&spinkube_dir().join("kustomization.yaml")).remove(0);
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|file| read_yaml(&spinkube_dir().join(file.as_str().unwrap())))
        .collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub fn spin_app(objects: &[Value]) -> &Value {
    let apps: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "SpinApp").collect();
    assert_eq!(apps.len(), 1, "one SpinApp");
    apps[0]
}

/// The container of the trigger-nats Deployment.
pub fn trigger_container(objects: &[Value]) -> &Value {
    let deployments: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    assert_eq!(deployments.len(), 1, "one Deployment: trigger-nats");
    let containers = deployments[0]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

/// How a variable or environment variable gets its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Value(String),
    /// `secretKeyRef` name, key.
    Secret(String, String),
}

fn source_of(entry: &Value) -> Source {
    match entry["value"].as_str() {
        Some(value) => Source::Value(value.to_owned()),
        None => {
            let secret = &entry["valueFrom"]["secretKeyRef"];
            Source::Secret(
                secret["name"]
                    .as_str()
                    .expect("a value or a secretKeyRef")
                    .to_owned(),
                secret["key"].as_str().unwrap().to_owned(),
            )
        }
    }
}

/// A list of `{name, value | valueFrom}` (a container's `env`, a SpinApp's `variables`).
pub fn named_sources(list: &Value) -> BTreeMap<String, Source> {
    list.as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| (e["name"].as_str().unwrap().to_owned(), source_of(e)))
                .collect()
        })
        .unwrap_or_default()
}

/// The SpinApp's variables, by Spin variable name.
pub fn spin_app_variables(objects: &[Value]) -> BTreeMap<String, Source> {
    named_sources(&spin_app(objects)["spec"]["variables"])
}

/// The trigger container's environment.
pub fn trigger_env(objects: &[Value]) -> BTreeMap<String, Source> {
    named_sources(&trigger_container(objects)["env"])
}

/// The trigger container's `SPIN_VARIABLE_*` environment, by Spin variable name.
pub fn trigger_variables(objects: &[Value]) -> BTreeMap<String, Source> {
    trigger_env(objects)
        .into_iter()
        .filter_map(|(name, source)| {
            name.strip_prefix("SPIN_VARIABLE_")
                .map(|v| (v.to_lowercase(), source))
        })
        .collect()
}

pub fn trigger_args(objects: &[Value]) -> Vec<String> {
    trigger_container(objects)["args"]
        .as_array()
        .map(|args| {
            args.iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The lock file baked into the trigger image: the one `spin up` would write for the
/// project's spin.toml, were it at `/app/spin.toml` with its components beside it.
pub fn image_lock_file() -> Value {
    let root = std::fs::canonicalize(super::workspace_root()).unwrap();
    let here = super::spin::file_url(&root);
    let mut locked = super::spin::locked_app(&root.join("spin.toml"));
    rebase(&mut locked, &here, "file:///app");
    locked
}

fn rebase(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(text) => {
            if let Some(rest) = text.strip_prefix(from) {
                *text = format!("{to}{rest}");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rebase(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| rebase(v, from, to)),
        _ => {}
    }
}

/// `nats-server -c deploy/spinkube/nats.conf` with the cluster's listeners moved to free
/// local ports and its store to a temporary dir; killed on drop.
pub struct ClusterNats {
    pub port: u16,
    pub mqtt_port: u16,
    child: super::ServerProcess,
    dir: tempfile::TempDir,
}

impl ClusterNats {
    pub fn start() -> ClusterNats {
        let dir = tempfile::tempdir().unwrap();
        let (port, mqtt_port, http_port) =
            (super::free_port(), super::free_port(), super::free_port());
        let mut text = std::fs::read_to_string(spinkube_dir().join("nats.conf")).unwrap();
        for (from, to) in [
            ("0.0.0.0:4222", format!("127.0.0.1:{port}")),
            ("0.0.0.0:1883", format!("127.0.0.1:{mqtt_port}")),
            ("0.0.0.0:8222", format!("127.0.0.1:{http_port}")),
            (
                "store_dir: \"/data\"",
                format!("store_dir: \"{}\"", dir.path().join("jetstream").display()),
            ),
            // Debian's nats-server 2.9 does not know the option (2.10+ does, the cluster's
            // image is 2.11); the durability it sets is not what this test checks.
            ("sync_interval: always", String::new()),
        ] {
            assert!(text.contains(from), "deploy/spinkube/nats.conf: no {from}");
            text = text.replace(from, &to);
        }
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("nats.log");
        let mut child = Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (bash scripts/setup.sh installs it)");
        for port in [port, mqtt_port] {
            super::wait_for_port(port, &mut child, "nats-server", &log);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Server is ready")
        {
            assert!(Instant::now() < deadline, "nats-server not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        ClusterNats {
            port,
            mqtt_port,
            child: super::ServerProcess(child),
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

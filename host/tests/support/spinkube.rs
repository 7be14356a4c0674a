//! Reading deploy/spinkube: the SpinApp, the trigger-nats Deployment and the lock file baked
//! into the trigger image, for the manifest test and the replica test.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::manifests::read_yaml;

pub fn spinkube_dir() -> PathBuf {
    super::workspace_root().join("deploy/spinkube")
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

//! deploy/spinkube agrees with the app: the SpinApp is valid against SpinKube's CRD schema
//! (a copy in deploy/spinkube/crd, see its README), the shim can run what it selects, and the
//! SpinApp, the trigger-nats Deployment, the NATS and Redis servers and the artifacts they
//! run (deploy/spinkube/spin.toml, the lock file in the trigger image) agree with spin.toml
//! and with each other. No cluster: the servers' side is checked by the replica test.
mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use support::manifests::*;
use support::spinkube::*;
use support::workspace_root;
use ticketing_host::backends::key_value::StoreConfig;
use ticketing_host::runtime_config::RuntimeConfig;

/// The trigger types SpinKube's containerd-shim-spin has compiled in
/// (`containerd-shim-spin/src/trigger.rs`, `get_supported_triggers`).
const SHIM_TRIGGER_TYPES: [&str; 5] = ["http", "redis", "sqs", "mqtt", "command"];

fn crd_schema() -> Value {
    let path = workspace_root().join("deploy/spinkube/crd/core.spinkube.dev_spinapps.yaml");
    let crd = read_yaml(&path).remove(0);
    assert_eq!(crd["spec"]["names"]["kind"], "SpinApp");
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1alpha1")
        .expect("CRD version v1alpha1");
    let mut schema = version["schema"]["openAPIV3Schema"].clone();
    strict(&mut schema);
    schema
}

/// Kubernetes rejects unknown fields of a structural schema (`kubectl apply` validates
/// strictly) or prunes them: either way a misspelt field is a mistake. JSON Schema allows
/// them unless told, so every object with declared properties gets
/// `additionalProperties: false`, except where the CRD preserves unknown fields.
fn strict(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves {
        map.insert("additionalProperties".into(), json!(false));
    }
    for key in ["properties", "patternProperties"] {
        if let Some(Value::Object(properties)) = map.get_mut(key) {
            properties.values_mut().for_each(strict);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(inner) = map.get_mut(key) {
            strict(inner);
        }
    }
    for key in ["anyOf", "allOf", "oneOf"] {
        if let Some(Value::Array(list)) = map.get_mut(key) {
            list.iter_mut().for_each(strict);
        }
    }
}

fn schema_errors(validator: &jsonschema::Validator, app: &Value) -> Vec<String> {
    validator
        .iter_errors(app)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_spin_app_is_valid_against_the_crd_schema() {
    let schema = crd_schema();
    let validator = jsonschema::draft4::new(&schema).expect("the CRD schema compiles");
    let objects = objects();
    let app = spin_app(&objects);
    let errors = schema_errors(&validator, app);
    assert!(errors.is_empty(), "SpinApp: {errors:#?}");
    assert_eq!(app["apiVersion"], "core.spinkube.dev/v1alpha1");
    assert_eq!(app["spec"]["executor"], "containerd-shim-spin");
    assert!(app["spec"]["replicas"].as_u64().unwrap() >= 1);

    // The validator bites: a misspelt field, a wrong type, a missing required field.
    let mut misspelt = app.clone();
    misspelt["spec"]["runtimeConfig"]["keyValueStore"] = json!([]);
    let mut wrong_type = app.clone();
    wrong_type["spec"]["replicas"] = json!("2");
    let mut missing = app.clone();
    missing["spec"]["runtimeConfig"]["keyValueStores"][0]
        .as_object_mut()
        .unwrap()
        .remove("type");
    for broken in [misspelt, wrong_type, missing] {
        assert!(
            !schema_errors(&validator, &broken).is_empty(),
            "accepted: {}",
            broken["spec"]
        );
    }
}

/// The triggers the shim would run for `manifest` with SpinApp `components:` `selected`:
/// Spin's `retain_components` keeps every trigger whose component is selected, of any type.
fn shim_trigger_types(manifest: &std::path::Path, selected: &[String]) -> BTreeSet<String> {
    let locked = support::spin::locked_app(manifest);
    locked["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["trigger_config"]["component"]
                .as_str()
                .is_some_and(|c| selected.iter().any(|s| s == c))
        })
        .map(|t| t["trigger_type"].as_str().unwrap().to_owned())
        .collect()
}

fn toml_file(path: &std::path::Path) -> toml::Table {
    std::fs::read_to_string(path).unwrap().parse().unwrap()
}

/// Components named by `[[trigger.<kind>]]` in a spin.toml.
fn triggered(manifest: &toml::Table, kind: &str) -> BTreeSet<String> {
    manifest["trigger"]
        .get(kind)
        .and_then(|t| t.as_array())
        .map(|list| {
            list.iter()
                .map(|t| t["component"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_spin_app_runs_the_http_components_from_an_http_only_artifact() {
    let objects = objects();
    let selected: Vec<String> = spin_app(&objects)["spec"]["components"]
        .as_array()
        .expect("components:")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let root = toml_file(&workspace_root().join("spin.toml"));
    let http = triggered(&root, "http");
    assert_eq!(
        selected.iter().cloned().collect::<BTreeSet<_>>(),
        http,
        "the SpinApp selects exactly the components with HTTP routes"
    );

    // Why the artifact is not the project's spin.toml: the selected components keep their
    // NATS listeners there, and the shim refuses a trigger type it does not have.
    let from_root = shim_trigger_types(&workspace_root().join("spin.toml"), &selected);
    assert!(from_root.contains("nats"), "{from_root:?}");
    let artifact = spinkube_dir().join("spin.toml");
    let types = shim_trigger_types(&artifact, &selected);
    assert_eq!(types, BTreeSet::from(["http".to_owned()]));
    assert!(types
        .iter()
        .all(|t| SHIM_TRIGGER_TYPES.contains(&t.as_str())));

    // deploy/spinkube/spin.toml is spin.toml without the NATS side.
    let mut expected = root.clone();
    expected["application"]
        .as_table_mut()
        .unwrap()
        .remove("trigger");
    expected["trigger"].as_table_mut().unwrap().remove("nats");
    let components = expected["component"].as_table_mut().unwrap();
    components.retain(|id, _| http.contains(id));
    for (_, component) in components.iter_mut() {
        let component = component.as_table_mut().unwrap();
        let source = component["source"].as_str().unwrap();
        component["source"] = format!("../../{source}").into();
        let build = component["build"].as_table_mut().unwrap();
        build.remove("watch");
        build.insert("workdir".into(), "../..".into());
    }
    assert_eq!(
        toml_file(&artifact),
        expected,
        "deploy/spinkube/spin.toml is spin.toml minus [[trigger.nats]], \
         [application.trigger.nats] and the listener-only components"
    );
}

/// `{{ name }}` references in a TOML value.
fn references(value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("{{") {
                let end = rest[start..].find("}}").expect("closed template") + start;
                out.insert(rest[start + 2..end].trim().to_owned());
                rest = &rest[end + 2..];
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        toml::Value::Table(table) => table.values().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// The variables a set of components uses (their `variables` and allowed hosts).
fn variables_used(manifest: &toml::Table, components: &BTreeSet<String>) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for id in components {
        let component = &manifest["component"][id.as_str()];
        for key in ["variables", "allowed_outbound_hosts"] {
            if let Some(value) = component.get(key) {
                references(value, &mut used);
            }
        }
    }
    used
}

#[test]
fn variables_stores_and_addresses_agree_with_spin_toml() {
    let objects = objects();
    let root = toml_file(&workspace_root().join("spin.toml"));
    let declared = root["variables"].as_table().unwrap();
    let http = triggered(&root, "http");
    let listeners = triggered(&root, "nats");
    let http_uses = variables_used(&root, &http);
    let mut nats_uses = variables_used(&root, &listeners);
    references(&root["application"]["trigger"]["nats"], &mut nats_uses);

    let app_vars = spin_app_variables(&objects);
    let trigger_vars = trigger_variables(&objects);
    for (side, given) in [("SpinApp", &app_vars), ("trigger-nats", &trigger_vars)] {
        for name in given.keys() {
            assert!(
                declared.contains_key(name),
                "{side} sets {name}, not a variable of spin.toml"
            );
        }
    }
    for (name, variable) in declared {
        let required = variable.get("default").is_none();
        let secret = variable.get("secret").and_then(|s| s.as_bool()) == Some(true);
        let (on_app, on_trigger) = (app_vars.get(name), trigger_vars.get(name));
        if required && http_uses.contains(name) {
            assert!(on_app.is_some(), "required {name}: the SpinApp sets it");
        }
        if required && nats_uses.contains(name) {
            assert!(
                on_trigger.is_some(),
                "required {name}: trigger-nats sets it"
            );
        }
        for given in [on_app, on_trigger].into_iter().flatten() {
            if secret {
                assert!(
                    matches!(given, Source::Secret(..)),
                    "{name} comes from a Secret"
                );
            }
        }
        // What both sides' components read must be the same on both.
        if http_uses.contains(name) && nats_uses.contains(name) {
            assert_eq!(on_app, on_trigger, "{name}: the same on both sides");
        }
    }

    // The trigger side's servers: events on every server of the NATS cluster (by pod),
    // stream replicas on all three, timers on the Redis Service.
    let conf = std::fs::read_to_string(spinkube_dir().join("nats.conf")).unwrap();
    let cluster = check_nats_cluster(&objects, &conf);
    let Some(Source::Value(nats_url)) = trigger_vars.get("nats_url") else {
        panic!("trigger-nats sets nats_url");
    };
    assert_nats_url(&objects, &cluster, &conf, nats_url);
    assert_eq!(
        trigger_vars.get("nats_stream_replicas"),
        Some(&Source::Value(cluster.servers.len().to_string())),
        "the stream on every server"
    );
    match trigger_vars.get("timers_url") {
        Some(Source::Value(url)) => {
            container_port_of(&objects, url);
        }
        other => panic!("trigger-nats: timers_url is {other:?}"),
    }

    // The HTTP components publish to the NATS client Service's MQTT port (Spin's MQTT takes
    // one address: the Service's, any ready server), and may.
    let Some(Source::Value(mqtt)) = app_vars.get("mqtt_address") else {
        panic!("the SpinApp sets mqtt_address");
    };
    assert!(mqtt.starts_with("mqtt://"), "{mqtt}");
    let mqtt_port = container_port_of(&objects, mqtt);
    let mqtt_service = find(&objects, "Service", &host_and_port(mqtt).0);
    assert_eq!(
        mqtt_service["spec"]["selector"],
        find(&objects, "StatefulSet", "nats")["spec"]["template"]["metadata"]["labels"],
        "MQTT is on the NATS servers"
    );
    assert_eq!(
        mqtt_port,
        listen_port(&nats_conf_value(&conf, "mqtt.listen")),
        "nats.conf listens for MQTT there"
    );
    for id in &http {
        let component = &root["component"][id.as_str()];
        let mut reads = BTreeSet::new();
        if let Some(variables) = component.get("variables") {
            references(variables, &mut reads);
        }
        if reads.contains("mqtt_address") {
            let hosts = component["allowed_outbound_hosts"].as_array().unwrap();
            assert!(
                hosts
                    .iter()
                    .any(|h| h.as_str() == Some("{{ mqtt_address }}")),
                "{id} publishes: allowed_outbound_hosts has {{{{ mqtt_address }}}}"
            );
        }
    }

    // Stores: every label a selected component uses, on the redis Service, in the SpinApp;
    // the listeners' labels on the same URLs in the trigger side's runtime config.
    let labels = |components: &BTreeSet<String>| -> BTreeSet<String> {
        components
            .iter()
            .filter_map(|id| root["component"][id.as_str()].get("key_value_stores"))
            .flat_map(|l| l.as_array().unwrap().iter())
            .map(|l| l.as_str().unwrap().to_owned())
            .collect()
    };
    let mut app_stores = BTreeMap::new();
    for store in spin_app(&objects)["spec"]["runtimeConfig"]["keyValueStores"]
        .as_array()
        .expect("runtimeConfig.keyValueStores")
    {
        assert_eq!(store["type"], "redis", "{store}");
        let url = store["options"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "url")
            .and_then(|o| o["value"].as_str())
            .unwrap_or_else(|| panic!("{store}: a url"));
        container_port_of(&objects, url);
        app_stores.insert(store["name"].as_str().unwrap().to_owned(), url.to_owned());
    }
    let app_labels: BTreeSet<String> = app_stores.keys().cloned().collect();
    assert!(
        labels(&http).is_subset(&app_labels),
        "the SpinApp has a store for each of {:?}",
        labels(&http)
    );
    let all_labels = labels(
        &root["component"]
            .as_table()
            .unwrap()
            .keys()
            .cloned()
            .collect(),
    );
    assert!(app_labels.is_subset(&all_labels), "{app_labels:?}");

    let rc_file = runtime_config_path(&objects);
    let rc = RuntimeConfig::load(&spinkube_dir().join(&rc_file)).unwrap();
    for label in labels(&listeners) {
        match rc.key_value_stores.get(&label) {
            Some(StoreConfig::Redis { url }) => {
                assert_eq!(Some(url), app_stores.get(&label), "{label}: the same Redis");
            }
            other => panic!("trigger-nats store {label}: {other:?}, not Redis"),
        }
    }
}

/// The runtime config file (in the ConfigMap generator) that the trigger's
/// `--runtime-config-file` reads, after checking it is mounted there.
fn runtime_config_path(objects: &[Value]) -> String {
    let args = trigger_args(objects);
    let at = args
        .iter()
        .position(|a| a == "--runtime-config-file")
        .expect("--runtime-config-file");
    let (dir, file) = args[at + 1].rsplit_once('/').unwrap();
    let container = trigger_container(objects);
    let configmap = mounted_configmap(objects, "Deployment", container, dir);
    assert!(generated(&configmap).contains(&file.to_owned()));
    file.to_owned()
}

/// The ConfigMap mounted at `dir` in `container` of the `kind` workload.
fn mounted_configmap(objects: &[Value], kind: &str, container: &Value, dir: &str) -> String {
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("a volume at {dir}"));
    let workload = objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .contains(container)
        })
        .unwrap();
    let volume = workload["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    volume["configMap"]["name"].as_str().unwrap().to_owned()
}

/// The files of the kustomization's generated ConfigMap `name`.
fn generated(name: &str) -> Vec<String> {
    let kustomization = read_yaml(&spinkube_dir().join("kustomization.yaml")).remove(0);
    let generator = kustomization["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no generated ConfigMap {name}"));
    let files: Vec<String> = generator["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    for file in &files {
        assert!(spinkube_dir().join(file).exists(), "{file}");
    }
    files
}

#[test]
fn the_kustomization_the_servers_and_the_trigger_image_fit_together() {
    // Every manifest is applied.
    let kustomization = read_yaml(&spinkube_dir().join("kustomization.yaml")).remove(0);
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut present: Vec<String> = std::fs::read_dir(spinkube_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| {
            n.ends_with(".yaml") && n != "kustomization.yaml" && n != "kustomizeconfig.yaml"
        })
        .collect();
    present.sort();
    assert_eq!(listed, present, "kustomization.yaml lists every manifest");
    let objects = objects();

    // Redis: the same StatefulSet and Service (AOF on a volume) as deploy/kubernetes.
    assert_eq!(
        read_yaml(&spinkube_dir().join("redis.yaml")),
        read_yaml(&workspace_root().join("deploy/kubernetes/redis.yaml"))
    );
    let redis = find(&objects, "StatefulSet", "redis");
    let args = redis["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("\"--appendonly\",\"yes\""), "{args}");

    // NATS: its config from the generated ConfigMap, a three-server cluster.
    let nats = find(&objects, "StatefulSet", "nats");
    let container = &nats["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "-c");
    let (dir, file) = args[1].rsplit_once('/').unwrap();
    let configmap = mounted_configmap(&objects, "StatefulSet", container, dir);
    assert_eq!(generated(&configmap), [file]);
    let conf = std::fs::read_to_string(spinkube_dir().join(file)).unwrap();
    check_nats_cluster(&objects, &conf);
    // The cluster of deploy/kubernetes, plus the MQTT listener.
    let kubernetes = workspace_root().join("deploy/kubernetes/nats.conf");
    let without_mqtt: Vec<(String, String)> = nats_conf_entries(&conf)
        .into_iter()
        .filter(|(key, _)| !key.starts_with("mqtt."))
        .collect();
    assert_eq!(
        without_mqtt,
        nats_conf_entries(&std::fs::read_to_string(kubernetes).unwrap()),
        "deploy/spinkube/nats.conf is deploy/kubernetes/nats.conf with an MQTT listener"
    );

    // The trigger image: the lock file it bakes in is spin.toml's, the app at /app.
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(spinkube_dir().join("spin.lock")).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    let expected = image_lock_file();
    if committed != expected && std::env::var_os("TICKETING_WRITE_SPIN_LOCK").is_some() {
        let text = serde_json::to_string_pretty(&expected).unwrap() + "\n";
        std::fs::write(spinkube_dir().join("spin.lock"), text).unwrap();
    } else {
        assert!(
            committed == expected,
            "deploy/spinkube/spin.lock is not the lock file of spin.toml at /app: rewrite it \
             with TICKETING_WRITE_SPIN_LOCK=1 cargo test -p ticketing-host --test \
             spinkube_manifests"
        );
    }
    let dockerfile = std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).unwrap();
    let stage = dockerfile
        .split("FROM ")
        .find(|s| s.contains("AS trigger-nats"))
        .expect("a trigger-nats stage in deploy/Dockerfile");
    let env = trigger_env(&objects);
    let Some(Source::Value(locked_url)) = env.get("SPIN_LOCKED_URL") else {
        panic!("SPIN_LOCKED_URL")
    };
    let lock_path = locked_url.strip_prefix("file://").unwrap();
    for copied in [
        format!("/src/deploy/spinkube/spin.lock {lock_path}"),
        "/src/target/release/trigger-nats /usr/local/bin/trigger-nats".to_owned(),
        "/src/target/wasm32-wasip2/release/*.wasm /app/target/wasm32-wasip2/release/".to_owned(),
    ] {
        assert!(
            stage.contains(&copied),
            "the trigger-nats image copies {copied}"
        );
    }
    assert!(stage.contains("ENTRYPOINT [\"trigger-nats\"]"));
    for component in expected["components"].as_array().unwrap() {
        let source = component["source"]["source"].as_str().unwrap();
        assert!(
            source.starts_with("file:///app/target/wasm32-wasip2/release/"),
            "{source}"
        );
    }
    assert!(env.contains_key("SPIN_WORKING_DIR"));

    // The probes ask the trigger's admin routes, on the port TICKETING_ADMIN_LISTEN names.
    let container = trigger_container(&objects);
    let Some(Source::Value(admin)) = env.get("TICKETING_ADMIN_LISTEN") else {
        panic!("TICKETING_ADMIN_LISTEN")
    };
    let admin_port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("an `admin` container port")["containerPort"]
        .clone();
    assert_eq!(*admin, format!("0.0.0.0:{admin_port}"));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(
            container[probe]["httpGet"],
            json!({"path": path, "port": "admin"}),
            "{probe}"
        );
    }
}

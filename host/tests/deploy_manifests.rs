//! The Kubernetes manifests under deploy/kubernetes agree with the app, and the host boots
//! and serves as their Deployment configures it: its environment, arguments and runtime
//! config, with the cluster's `nats` and `redis` Services stood in for by real local
//! servers.
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_yaml_ng::Value as Yaml;
use support::*;
use ticketing_host::backends::key_value::StoreConfig;
use ticketing_host::manifest::Manifest;
use ticketing_host::runtime_config::RuntimeConfig;

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

/// Every object of the manifests listed in kustomization.yaml, which must be every
/// manifest in the directory.
fn objects() -> Vec<Yaml> {
    let listed: Vec<String> = kustomization()["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let mut present: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    present.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, present, "kustomization.yaml lists every manifest");
    listed.iter().flat_map(|file| read_yaml(file)).collect()
}

fn kustomization() -> Yaml {
    read_yaml("kustomization.yaml").remove(0)
}

fn read_yaml(file: &str) -> Vec<Yaml> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn find<'a>(objects: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// `(service, port)` of a `scheme://service:port` URL.
fn service_of(url: &str) -> (String, u64) {
    let authority = url.split("://").nth(1).unwrap().trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':').unwrap();
    (host.to_owned(), port.parse().unwrap())
}

fn assert_service(objects: &[Yaml], url: &str) {
    let (name, port) = service_of(url);
    let service = find(objects, "Service", &name);
    let ports: Vec<u64> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert!(
        ports.contains(&port),
        "{url}: Service {name} exposes {ports:?}"
    );
}

/// The pod template of the `ticketing` Deployment.
fn ticketing_pod(objects: &[Yaml]) -> &Yaml {
    &find(objects, "Deployment", "ticketing")["spec"]["template"]["spec"]
}

fn ticketing_container(objects: &[Yaml]) -> &Yaml {
    &ticketing_pod(objects)["containers"][0]
}

/// The container's environment: literal values, and `secret:<name>/<key>` for secrets.
fn environment(container: &Yaml) -> BTreeMap<String, String> {
    container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let value = match e["value"].as_str() {
                Some(value) => value.to_owned(),
                None => {
                    let secret = &e["valueFrom"]["secretKeyRef"];
                    format!(
                        "secret:{}/{}",
                        secret["name"].as_str().unwrap(),
                        secret["key"].as_str().unwrap()
                    )
                }
            };
            (e["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

fn runtime_config() -> RuntimeConfig {
    RuntimeConfig::load(&deploy_dir().join("runtime-config.toml")).unwrap()
}

#[test]
fn the_manifests_agree_with_the_app() {
    let objects = objects();
    let app = Manifest::load(&app_manifest()).unwrap();
    let container = ticketing_container(&objects);
    let env = environment(container);

    for (name, variable) in &app.variables {
        if variable.required && variable.default.is_none() {
            let key = format!("SPIN_VARIABLE_{}", name.to_uppercase());
            assert!(
                env.contains_key(&key),
                "required variable {name}: {key} is set"
            );
        }
        if variable.secret {
            if let Some(value) = env.get(&format!("SPIN_VARIABLE_{}", name.to_uppercase())) {
                assert!(value.starts_with("secret:"), "{name} comes from a Secret");
            }
        }
    }
    // Events and timers on the cluster's servers, not the embedded defaults.
    assert_service(&objects, &env["SPIN_VARIABLE_NATS_URL"]);
    assert_service(&objects, &env["SPIN_VARIABLE_TIMERS_URL"]);

    // Every store label of the app on the `redis` Service.
    let stores = runtime_config().key_value_stores;
    for label in app.key_value_labels() {
        match stores.get(&label) {
            Some(StoreConfig::Redis { url }) => assert_service(&objects, url),
            other => panic!("store {label}: {other:?}, not Redis"),
        }
    }

    // The runtime config reaches the container from the generated ConfigMap.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--runtime-config-file")
        .expect("--runtime-config-file");
    let (dir, file) = args[at + 1].rsplit_once('/').unwrap();
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("a volume at the runtime config's directory");
    let volume = find_volume(&objects, mount["name"].as_str().unwrap());
    let generator = &kustomization()["configMapGenerator"][0];
    assert_eq!(volume["configMap"]["name"], generator["name"]);
    assert!(generator["files"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|f| f.as_str() == Some(file)));

    // The image listens where the Service and probes point.
    let dockerfile = std::fs::read_to_string(workspace_root().join("deploy/Dockerfile")).unwrap();
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert!(
        dockerfile.contains(&format!("\"0.0.0.0:{port}\"")),
        "the image listens on {port}"
    );
    // The probes ask the host's admin routes, on the port --admin-listen names.
    let admin = args
        .iter()
        .position(|a| *a == "--admin-listen")
        .map(|at| args[at + 1])
        .expect("--admin-listen");
    let admin_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("an `admin` container port")["containerPort"]
        .as_u64()
        .unwrap();
    assert_eq!(admin, format!("0.0.0.0:{admin_port}"));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
    }
    let service_ports = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "ticketing")
        .expect("the ticketing Service")["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .clone();
    assert!(
        service_ports.iter().all(|p| p["targetPort"] != "admin"),
        "the admin port stays off the Service"
    );
}

fn find_volume<'a>(objects: &'a [Yaml], name: &str) -> &'a Yaml {
    ticketing_pod(objects)["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

#[test]
fn the_host_serves_as_the_deployment_configures_it() {
    let (nats, redis) = (Nats::start(), Redis::start());
    let objects = objects();
    let container = ticketing_container(&objects);
    // The cluster's Service names, pointed at this test's servers.
    let local = |text: &str| {
        text.replace("nats://nats:4222", &nats.url())
            .replace("redis://redis:6379", &redis.url())
    };
    let state = tempfile::tempdir().unwrap();
    let rc = state.path().join("runtime-config.toml");
    let text = std::fs::read_to_string(deploy_dir().join("runtime-config.toml")).unwrap();
    std::fs::write(&rc, local(&text)).unwrap();

    let mut config = HostConfig::app(Backend::Embedded);
    for (name, value) in environment(container) {
        // Secrets stay out: the test sets its own jwt_secret, the rest are optional.
        if !value.starts_with("secret:") {
            config.env.push((name, local(&value)));
        }
    }
    let admin = free_port();
    let host = config
        .arg("--runtime-config-file")
        .arg(rc.to_str().unwrap())
        .arg("--admin-listen")
        .arg(&format!("127.0.0.1:{admin}"))
        .start();

    // Both probes pass once the host is up (readiness once its consumers are open).
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        let url = format!("http://127.0.0.1:{admin}{path}");
        eventually(&format!("the {probe} passes"), || {
            ureq::get(&url).call().ok().filter(|r| r.status() == 200)
        });
    }
    let mut seller = host.client();
    seller.sign_up();
    let ticket = seller.post("/api/tickets", json!({"title": "Deployed", "price": 3}));
    assert_eq!(ticket.status, 201, "{}", ticket.body);
    // The state went to Redis and the event through NATS: the orders service learns of the
    // ticket and takes an order for it.
    assert_ne!(redis.command("DBSIZE"), ":0", "state is in Redis");
    let mut buyer = host.client();
    buyer.sign_up();
    eventually("an order for the ticket", || {
        let r = buyer.post("/api/orders", json!({"ticketId": ticket.json()["id"]}));
        (r.status == 201).then_some(())
    });
}

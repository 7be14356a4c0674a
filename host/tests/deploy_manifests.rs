//! The Kubernetes manifests under deploy/kubernetes agree with the app, and the host boots
//! and serves as their Deployment configures it: its environment, arguments and runtime
//! config, against the NATS cluster of the manifests (three servers started from
//! deploy/kubernetes/nats.conf, on loopback) and a real local Redis standing in for the
//! `redis` Service.
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use support::manifests::*;
use support::nats_cluster::NatsCluster;
use support::*;
use ticketing_host::backends::key_value::StoreConfig;
use ticketing_host::manifest::Manifest;
use ticketing_host::runtime_config::RuntimeConfig;

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

/// Every object of the manifests listed in kustomization.yaml, which must be every
/// manifest in the directory.
fn objects() -> Vec<Value> {
    let listed: Vec<String> = kustomization()["resources"]
        .as_array()
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

fn kustomization() -> Value {
    read_yaml("kustomization.yaml").remove(0)
}

fn read_yaml(file: &str) -> Vec<Value> {
    support::manifests::read_yaml(&deploy_dir().join(file))
}

fn assert_service(objects: &[Value], url: &str) {
    container_port_of(objects, url);
}

fn nats_conf() -> String {
    std::fs::read_to_string(deploy_dir().join("nats.conf")).unwrap()
}

/// The pod template of the `ticketing` Deployment.
fn ticketing_pod(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", "ticketing")["spec"]["template"]["spec"]
}

fn ticketing_container(objects: &[Value]) -> &Value {
    &ticketing_pod(objects)["containers"][0]
}

/// The container's environment: literal values, and `secret:<name>/<key>` for secrets.
fn environment(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
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
    // Events on every server of the NATS cluster, the stream on all of them; timers on the
    // Redis Service: not the embedded defaults.
    let conf = nats_conf();
    let cluster = check_nats_cluster(&objects, &conf);
    assert_nats_url(&objects, &cluster, &conf, &env["SPIN_VARIABLE_NATS_URL"]);
    assert_eq!(
        env["SPIN_VARIABLE_NATS_STREAM_REPLICAS"],
        cluster.servers.len().to_string(),
        "the stream on every server"
    );
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
        .as_array()
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
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("a volume at the runtime config's directory");
    let volume = find_volume(&objects, mount["name"].as_str().unwrap());
    let generator = &kustomization()["configMapGenerator"][0];
    assert_eq!(volume["configMap"]["name"], generator["name"]);
    assert!(generator["files"]
        .as_array()
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
        .as_array()
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
        .as_array()
        .unwrap()
        .clone();
    assert!(
        service_ports.iter().all(|p| p["targetPort"] != "admin"),
        "the admin port stays off the Service"
    );
}

fn find_volume<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    ticketing_pod(objects)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

#[test]
fn the_host_serves_as_the_deployment_configures_it() {
    // The NATS cluster from the repository's own nats.conf: its routes between the pods,
    // its JetStream, moved to local ports (Debian's nats-server 2.9 runs it without
    // `sync_interval`, which it does not know; see `NatsCluster::from_deploy_conf`).
    let objects = objects();
    let servers = check_nats_cluster(&objects, &nats_conf()).servers;
    let nats = NatsCluster::from_deploy_conf(&deploy_dir().join("nats.conf"), &servers);
    let redis = Redis::start();
    let container = ticketing_container(&objects);
    // The cluster's addresses, pointed at this test's servers.
    let local = |text: &str| {
        nats.localize(text)
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

    // The three servers formed one cluster, and the host made the stream a copy on each.
    let leader = nats.wait_for_stream_leader("TICKETING", None, std::time::Duration::from_secs(60));
    let view = nats.stream_view(leader, "TICKETING").unwrap();
    assert_eq!(view.num_replicas, 3, "{view:?}");
    let mut peers: Vec<String> = view.replicas.iter().map(|(name, _)| name.clone()).collect();
    peers.push(view.leader.clone());
    peers.sort();
    let pods: Vec<String> = servers
        .iter()
        .map(|server| server.split('.').next().unwrap().to_owned())
        .collect();
    assert_eq!(peers, pods, "named after their pods: {view:?}");
    // The StatefulSet's probes ask paths every server answers.
    let nats_container =
        &find(&objects, "StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0];
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            nats_container[probe]["httpGet"]["port"], "monitor",
            "{probe}"
        );
        let path = nats_container[probe]["httpGet"]["path"].as_str().unwrap();
        for node in &nats.nodes {
            let url = format!("http://127.0.0.1:{}{path}", node.http_port);
            eventually(&format!("{} answers its {probe}", node.name), || {
                ureq::get(&url).call().ok().filter(|r| r.status() == 200)
            });
        }
    }
}

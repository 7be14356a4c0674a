//! What the two deployments under deploy/ (kubernetes, spinkube) have in common, read and
//! checked the same way for both: YAML as JSON values, the addresses their clients are given,
//! and the NATS cluster (a StatefulSet, its headless Service, nats.conf's routes).

use std::path::Path;

use serde_json::Value;

/// Every YAML document of `path`, as JSON values.
pub fn read_yaml(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// `(host, port)` of a `scheme://host:port` URL, which must have nothing else.
pub fn host_and_port(url: &str) -> (String, u64) {
    let authority = url
        .split_once("://")
        .unwrap_or_else(|| panic!("{url}: no scheme"))
        .1
        .trim_end_matches('/');
    assert!(
        !authority.contains(['/', '?', '@']),
        "{url}: scheme://host:port only"
    );
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url}: no port"));
    (
        host.to_owned(),
        port.parse().unwrap_or_else(|_| panic!("{url}: port")),
    )
}

/// The StatefulSet whose pods `service` selects.
fn workload_of<'a>(objects: &'a [Value], service: &Value) -> &'a Value {
    let selector = &service["spec"]["selector"];
    objects
        .iter()
        .find(|o| {
            o["kind"] == "StatefulSet" && &o["spec"]["template"]["metadata"]["labels"] == selector
        })
        .unwrap_or_else(|| {
            panic!(
                "no StatefulSet behind Service {}",
                service["metadata"]["name"]
            )
        })
}

/// The container port behind `url` (`scheme://host:port`). The host is a Service, or a pod
/// of a StatefulSet by its stable name through the set's headless Service
/// (`<statefulset>-<n>.<service>`, n below its replicas); either way the Service declares the
/// port, selects the workload's pods, and their container listens there.
#[track_caller]
pub fn container_port_of(objects: &[Value], url: &str) -> u64 {
    let (host, port) = host_and_port(url);
    let (pod, service_name) = match host.split_once('.') {
        Some((pod, service)) => (Some(pod), service),
        None => (None, host.as_str()),
    };
    let service = find(objects, "Service", service_name);
    let workload = workload_of(objects, service);
    if let Some(pod) = pod {
        let set = workload["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            workload["spec"]["serviceName"], service_name,
            "{url}: pods of StatefulSet {set} have names under its serviceName"
        );
        let ordinal: u64 = pod
            .strip_prefix(&format!("{set}-"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{url}: {pod} is no pod of StatefulSet {set}"));
        let replicas = workload["spec"]["replicas"].as_u64().unwrap_or(1);
        assert!(
            ordinal < replicas,
            "{url}: StatefulSet {set} has {replicas} pods"
        );
        assert_eq!(
            service["spec"]["clusterIP"], "None",
            "{url}: pod names resolve through a headless Service"
        );
    }
    let entry = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("{url}: Service {service_name} has no port {port}"));
    let ports = workload["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap();
    let target = &entry["targetPort"];
    let container_port = ports
        .iter()
        .find(|p| (target.is_null() && p["containerPort"] == port) || p["name"] == *target)
        .unwrap_or_else(|| panic!("{url}: no container port for {entry}"));
    container_port["containerPort"].as_u64().unwrap()
}

/// The settings of a nats.conf, flattened: `("listen", "0.0.0.0:4222")`,
/// `("cluster.listen", ...)`, one `("cluster.routes", url)` per route, in file order. Reads
/// the subset of NATS's config syntax the deploy/ files use: `key: value`, `name { ... }`
/// blocks, `name [ ... ]` lists, `#` comments.
pub fn nats_conf_entries(text: &str) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut blocks: Vec<String> = Vec::new();
    let mut list: Option<String> = None;
    let path = |blocks: &[String], key: &str| {
        blocks
            .iter()
            .map(String::as_str)
            .chain([key])
            .collect::<Vec<_>>()
            .join(".")
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(key) = &list {
            if line == "]" {
                list = None;
            } else {
                entries.push((key.clone(), line.trim_end_matches(',').trim().to_owned()));
            }
        } else if line == "}" {
            blocks.pop();
        } else if let Some(name) = line.strip_suffix('{') {
            blocks.push(name.trim().trim_end_matches(':').trim().to_owned());
        } else if let Some(name) = line.strip_suffix('[') {
            list = Some(path(&blocks, name.trim().trim_end_matches(':').trim()));
        } else {
            let (key, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("nats.conf: cannot read {line:?}"));
            entries.push((path(&blocks, key.trim()), value.trim().to_owned()));
        }
    }
    entries
}

/// The one value of `key` in a nats.conf (see [`nats_conf_entries`]).
#[track_caller]
pub fn nats_conf_value(text: &str, key: &str) -> String {
    let values = nats_conf_values(text, key);
    assert_eq!(values.len(), 1, "nats.conf: {key} once, got {values:?}");
    values.into_iter().next().unwrap()
}

/// Every value of `key` in a nats.conf, in order.
pub fn nats_conf_values(text: &str, key: &str) -> Vec<String> {
    nats_conf_entries(text)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// The port of a `host:port` listen address.
pub fn listen_port(address: &str) -> u64 {
    address.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The NATS cluster of a deployment, as its manifests and nats.conf describe it.
pub struct NatsClusterManifest {
    /// The servers' stable names through the headless Service, `nats-0.nats-headless`, ...
    pub servers: Vec<String>,
}

/// Checks the shape of the NATS cluster in `objects` with `conf` (its nats.conf): the
/// StatefulSet `nats` runs 3 servers, started together, each named after its pod, with its
/// JetStream store on its own volume; its headless Service (no cluster IP, addresses
/// published before readiness) carries the route port; nats.conf's routes name every pod of
/// the set through that Service, on the port the cluster listens on; a disruption budget
/// lets one server go at a time; `sync_interval: always` is kept, on an image that knows it.
pub fn check_nats_cluster(objects: &[Value], conf: &str) -> NatsClusterManifest {
    let set = find(objects, "StatefulSet", "nats");
    let spec = &set["spec"];
    assert_eq!(spec["replicas"], 3, "three NATS servers");
    assert_eq!(spec["podManagementPolicy"], "Parallel", "started together");
    let headless_name = spec["serviceName"].as_str().expect("serviceName");
    let headless = find(objects, "Service", headless_name);
    assert_eq!(headless["spec"]["clusterIP"], "None", "{headless_name}");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(
        headless["spec"]["selector"], spec["template"]["metadata"]["labels"],
        "{headless_name} selects the servers"
    );
    let container = &spec["template"]["spec"]["containers"][0];

    // Each server named after its pod.
    assert_eq!(nats_conf_value(conf, "server_name"), "$POD_NAME");
    let pod_name = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "POD_NAME")
        .expect("POD_NAME in the container's env");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
        "POD_NAME is the pod's name"
    );

    // The routes: every pod, through the headless Service, on the cluster's port.
    let route_port = listen_port(&nats_conf_value(conf, "cluster.listen"));
    assert!(nats_conf_value(conf, "cluster.listen").starts_with("0.0.0.0:"));
    assert!(!nats_conf_value(conf, "cluster.name").is_empty());
    let set_name = set["metadata"]["name"].as_str().unwrap();
    let servers: Vec<String> = (0..3)
        .map(|n| format!("{set_name}-{n}.{headless_name}"))
        .collect();
    let expected: Vec<String> = servers
        .iter()
        .map(|server| format!("nats://{server}:{route_port}"))
        .collect();
    let routes = nats_conf_values(conf, "cluster.routes");
    assert_eq!(routes, expected, "nats.conf routes to every server");
    for route in &routes {
        assert_eq!(container_port_of(objects, route), route_port, "{route}");
    }

    // JetStream on the pod's volume, fsynced before it acknowledges.
    let store_dir = nats_conf_value(conf, "jetstream.store_dir");
    let data = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "data")
        .expect("a `data` volume mount");
    assert_eq!(
        store_dir,
        format!("\"{}\"", data["mountPath"].as_str().unwrap())
    );
    assert_eq!(spec["volumeClaimTemplates"][0]["metadata"]["name"], "data");
    assert_eq!(nats_conf_value(conf, "jetstream.sync_interval"), "always");
    let image = container["image"].as_str().unwrap();
    let version: Vec<u64> = image
        .split_once(':')
        .map(|(_, tag)| tag.split('-').next().unwrap())
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        version.as_slice() >= [2, 10].as_slice(),
        "{image}: sync_interval needs NATS 2.10+"
    );

    // One server at a time may go.
    let budget = objects
        .iter()
        .find(|o| {
            o["kind"] == "PodDisruptionBudget"
                && o["spec"]["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
        })
        .expect("a PodDisruptionBudget for the NATS servers");
    assert_eq!(budget["apiVersion"], "policy/v1");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);

    NatsClusterManifest { servers }
}

/// Checks a host's `nats_url`: every server of the cluster by its pod's name, on the client
/// port nats.conf listens on.
#[track_caller]
pub fn assert_nats_url(objects: &[Value], cluster: &NatsClusterManifest, conf: &str, url: &str) {
    let client_port = listen_port(&nats_conf_value(conf, "listen"));
    let servers: Vec<String> = url
        .split(',')
        .map(|server| {
            assert!(server.starts_with("nats://"), "{url}");
            assert_eq!(container_port_of(objects, server), client_port, "{server}");
            host_and_port(server).0
        })
        .collect();
    assert_eq!(servers, cluster.servers, "nats_url names every server");
}

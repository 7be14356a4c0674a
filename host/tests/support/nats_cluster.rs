//! A NATS JetStream cluster of real `nats-server` processes on loopback: each node with its
//! own ports, config file and store dir, routed to the others with nats-server's own cluster
//! configuration. A node can be SIGKILLed and restarted on the same ports and data, and the
//! monitoring endpoint of each tells who leads a stream.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, read_log, require_binary, wait_for_port, ServerProcess};

/// The name nats-server gives the cluster's nodes in the configs this module writes.
const CLUSTER_NAME: &str = "ticketing-test";

/// One node: its ports, config, log, and the process while it runs.
pub struct NatsNode {
    /// Its `server_name` (what the cluster calls it, e.g. as a stream's leader).
    pub name: String,
    /// The client port.
    pub port: u16,
    /// The port the other nodes route to.
    pub route_port: u16,
    /// The monitoring port (`/jsz`, `/connz`, `/healthz`).
    pub http_port: u16,
    /// The MQTT port, if the node's config has an MQTT listener.
    pub mqtt_port: Option<u16>,
    config: PathBuf,
    log: PathBuf,
    child: Option<ServerProcess>,
}

impl NatsNode {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    fn spawn(&mut self) {
        require_binary("nats-server");
        let mut child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .arg("-l")
            .arg(&self.log)
            // Configs written for Kubernetes name the server after its pod.
            .env("POD_NAME", &self.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        wait_for_port(self.port, &mut child, "nats-server", &self.log);
        self.child = Some(ServerProcess(child));
    }

    /// The node's monitoring answer at `path`, or None if it does not answer (down, busy).
    fn monitor(&self, path: &str) -> Option<Value> {
        if !self.is_running() {
            return None;
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let body = agent.get(&url).call().ok()?.into_string().ok()?;
        serde_json::from_str(&body).ok()
    }
}

/// Where each node of a cluster listens, handed to the code that writes its config.
pub struct NodePorts<'a> {
    pub index: usize,
    pub name: &'a str,
    pub port: u16,
    pub route_port: u16,
    pub http_port: u16,
    pub mqtt_port: u16,
    /// Its JetStream store directory.
    pub store_dir: &'a Path,
    /// The route port of every node, this one included (nats-server skips itself).
    pub route_ports: &'a [u16],
}

/// What one node's monitoring endpoint says of a stream.
#[derive(Debug, Clone)]
pub struct StreamView {
    /// The stream's leader as this node knows it ("" while there is none).
    pub leader: String,
    /// The other peers of the stream's group and whether each is caught up.
    pub replicas: Vec<(String, bool)>,
    /// The replica count of the stream's config.
    pub num_replicas: u64,
    /// Messages in the stream.
    pub messages: u64,
    /// Bytes the stream's messages take in this node's store.
    pub bytes: u64,
}

/// A JetStream cluster on loopback, every node killed on drop.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    /// For a cluster from a deployment's config, the servers' addresses there (e.g.
    /// `nats-0.nats-headless`), node by node.
    deployed_as: Vec<String>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// `size` nodes configured here: JetStream, a route to every node, monitoring.
    pub fn start(size: usize) -> NatsCluster {
        let names: Vec<String> = (0..size).map(|i| format!("nats-{i}")).collect();
        NatsCluster::start_with(&names, false, |node| {
            let routes: Vec<String> = node
                .route_ports
                .iter()
                .map(|port| format!("        nats://127.0.0.1:{port}"))
                .collect();
            format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n\
                 jetstream {{\n    store_dir: \"{store}\"\n}}\n\
                 cluster {{\n    name: {CLUSTER_NAME}\n    listen: 127.0.0.1:{route}\n    \
                 routes [\n{routes}\n    ]\n}}\n",
                name = node.name,
                port = node.port,
                http = node.http_port,
                store = node.store_dir.display(),
                route = node.route_port,
                routes = routes.join("\n"),
            )
        })
    }

    /// The cluster a deployment runs with `conf` (deploy/*/nats.conf), on loopback: one node
    /// per server address the deployment routes to (`servers`, e.g. `nats-0.nats-headless`,
    /// named after its pod as `$POD_NAME` would), with the config's listeners moved from
    /// their `0.0.0.0` ports to free local ones, the routes to the nodes' route ports and
    /// the store to the node's dir. Any other difference is the config's own.
    pub fn from_deploy_conf(conf: &Path, servers: &[String]) -> NatsCluster {
        let text = std::fs::read_to_string(conf).unwrap();
        let mqtt = text.contains("0.0.0.0:1883");
        let names: Vec<String> = servers
            .iter()
            .map(|server| server.split('.').next().unwrap().to_owned())
            .collect();
        let mut cluster = NatsCluster::start_with(&names, mqtt, |node| {
            let mut text = text.clone();
            let mut replace = |from: &str, to: String| {
                assert!(text.contains(from), "{}: no {from}", conf.display());
                text = text.replace(from, &to);
            };
            replace("0.0.0.0:4222", format!("127.0.0.1:{}", node.port));
            replace("0.0.0.0:8222", format!("127.0.0.1:{}", node.http_port));
            replace("0.0.0.0:6222", format!("127.0.0.1:{}", node.route_port));
            if mqtt {
                replace("0.0.0.0:1883", format!("127.0.0.1:{}", node.mqtt_port));
            }
            replace(
                "store_dir: \"/data\"",
                format!("store_dir: \"{}\"", node.store_dir.display()),
            );
            for (server, port) in servers.iter().zip(node.route_ports) {
                replace(&format!("{server}:6222"), format!("127.0.0.1:{port}"));
            }
            // Debian's nats-server 2.9 rejects the option (2.10+ knows it; the deployments'
            // image is 2.11). It sets when JetStream fsyncs, which no test here can observe.
            replace("sync_interval: always", String::new());
            text
        });
        cluster.deployed_as = servers.to_vec();
        cluster
    }

    /// `names.len()` nodes with these server names, each with the config `config` writes
    /// for it; with `mqtt`, the nodes' MQTT ports are in use. Returns once every node listens
    /// and the cluster has a JetStream meta leader.
    pub fn start_with(
        names: &[String],
        mqtt: bool,
        config: impl Fn(&NodePorts) -> String,
    ) -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let size = names.len();
        let ports: Vec<[u16; 4]> = (0..size)
            .map(|_| [free_port(), free_port(), free_port(), free_port()])
            .collect();
        let route_ports: Vec<u16> = ports.iter().map(|p| p[1]).collect();
        let mut nodes = Vec::new();
        for (index, [port, route_port, http_port, mqtt_port]) in ports.into_iter().enumerate() {
            let node_dir = dir.path().join(&names[index]);
            let store_dir = node_dir.join("jetstream");
            std::fs::create_dir_all(&store_dir).unwrap();
            let text = config(&NodePorts {
                index,
                name: &names[index],
                port,
                route_port,
                http_port,
                mqtt_port,
                store_dir: &store_dir,
                route_ports: &route_ports,
            });
            let config = node_dir.join("nats.conf");
            std::fs::write(&config, text).unwrap();
            nodes.push(NatsNode {
                name: names[index].clone(),
                port,
                route_port,
                http_port,
                mqtt_port: mqtt.then_some(mqtt_port),
                config,
                log: node_dir.join("nats.log"),
                child: None,
            });
        }
        let mut cluster = NatsCluster {
            nodes,
            deployed_as: Vec::new(),
            dir,
        };
        for node in &mut cluster.nodes {
            node.spawn();
        }
        cluster.wait_for_meta_leader();
        cluster
    }

    /// The client URLs of every node, comma-separated (the form `nats_url` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `text` (a URL, an environment value) with the deployment's server addresses on their
    /// client port (`nats-0.nats-headless:4222`) turned into the nodes' local ones.
    pub fn localize(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (server, node) in self.deployed_as.iter().zip(&self.nodes) {
            text = text.replace(
                &format!("{server}:4222"),
                &format!("127.0.0.1:{}", node.port),
            );
        }
        text
    }

    /// SIGKILLs node `i`; it stays down until `restart`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill();
        }
    }

    /// Starts node `i` again on the same ports, config and store.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.nodes[i].spawn();
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("---- {} log ----\n{}", node.name, node.log()))
            .collect()
    }

    /// Waits until every running node knows the cluster's JetStream meta leader, a running
    /// node (the cluster has formed, or elected a new one, and can create streams).
    pub fn wait_for_meta_leader(&self) {
        let running = self.running_names();
        self.poll_until(
            Duration::from_secs(120),
            Duration::from_millis(100),
            "the NATS cluster did not form",
            || {
                self.nodes.iter().filter(|n| n.is_running()).all(|node| {
                    node.monitor("/jsz").is_some_and(|jsz| {
                        jsz["meta_cluster"]["leader"]
                            .as_str()
                            .is_some_and(|leader| running.contains(&leader))
                    })
                })
            },
        );
    }

    /// The names of the nodes running now.
    fn running_names(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.name.as_str())
            .collect()
    }

    /// Asks `check` every `every` until it holds; fails with `what` and the nodes' logs
    /// after `bound`.
    #[track_caller]
    fn poll_until(
        &self,
        bound: Duration,
        every: Duration,
        what: &str,
        mut check: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + bound;
        while !check() {
            assert!(
                Instant::now() < deadline,
                "{what} within {bound:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(every);
        }
    }

    /// What node `i` says of `stream`, if it is up and has it.
    pub fn stream_view(&self, i: usize, stream: &str) -> Option<StreamView> {
        let jsz = self.nodes[i].monitor("/jsz?streams=true&consumers=false&config=true")?;
        let detail = jsz["account_details"]
            .as_array()?
            .iter()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == stream)?
            .clone();
        let cluster = &detail["cluster"];
        Some(StreamView {
            leader: cluster["leader"].as_str().unwrap_or("").to_owned(),
            replicas: cluster["replicas"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|peer| {
                    (
                        peer["name"].as_str().unwrap_or("").to_owned(),
                        peer["current"] == true,
                    )
                })
                .collect(),
            num_replicas: detail["config"]["num_replicas"].as_u64().unwrap_or(0),
            messages: detail["state"]["messages"].as_u64().unwrap_or(0),
            bytes: detail["state"]["bytes"].as_u64().unwrap_or(0),
        })
    }

    /// The node that leads `stream` now: a running node that says it is the leader.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.stream_view(i, stream)
                .is_some_and(|view| view.leader == self.nodes[i].name)
        })
    }

    /// Waits (up to `bound`) for `stream` to have a leader other than node `not`.
    #[track_caller]
    pub fn wait_for_stream_leader(
        &self,
        stream: &str,
        not: Option<usize>,
        bound: Duration,
    ) -> usize {
        let mut leader = None;
        self.poll_until(
            bound,
            Duration::from_millis(50),
            &format!("stream {stream} had no leader"),
            || {
                leader = self.stream_leader(stream).filter(|&l| Some(l) != not);
                leader.is_some()
            },
        );
        leader.expect("found by the poll")
    }

    /// Waits (up to `bound`) until every consumer of `stream` has a leader that runs, as
    /// the stream's leader sees them (after a node is lost, its consumers elect new leaders
    /// one by one, each in seconds).
    #[track_caller]
    pub fn wait_for_consumer_leaders(&self, stream: &str, bound: Duration) {
        let running = self.running_names();
        let what = format!("the consumers of stream {stream} had no leaders");
        self.poll_until(bound, Duration::from_millis(100), &what, || {
            self.stream_leader(stream).is_some_and(|leader| {
                let Some(jsz) = self.nodes[leader].monitor("/jsz?streams=true&consumers=true")
                else {
                    return false;
                };
                let consumers: Vec<Value> = jsz["account_details"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
                    .filter(|s| s["name"] == stream)
                    .flat_map(|s| s["consumer_detail"].as_array().cloned().unwrap_or_default())
                    .collect();
                consumers.iter().all(|consumer| {
                    consumer["cluster"]["leader"]
                        .as_str()
                        .is_some_and(|leader| running.contains(&leader))
                })
            })
        });
    }

    /// Waits (up to `bound`) until the leader of `stream` sees every other peer of it
    /// caught up, e.g. a restarted node.
    #[track_caller]
    pub fn wait_until_stream_current(&self, stream: &str, bound: Duration) {
        let what = format!("the peers of stream {stream} did not catch up");
        self.poll_until(bound, Duration::from_millis(100), &what, || {
            self.stream_leader(stream).is_some_and(|leader| {
                self.stream_view(leader, stream).is_some_and(|view| {
                    view.replicas.len() + 1 == view.num_replicas as usize
                        && view.replicas.iter().all(|(_, current)| *current)
                })
            })
        });
    }

    /// Asks the leader of `stream` to hand its leadership to another peer, as an operator
    /// can (`$JS.API.STREAM.LEADER.STEPDOWN`); returns once a new leader is elected.
    pub fn step_down(&self, stream: &str) {
        let leader = self.stream_leader(stream);
        let servers: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(NatsNode::url)
            .collect();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let client = async_nats::connect(servers).await.unwrap();
            let reply = client
                .request(
                    format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                    "".into(),
                )
                .await
                .expect("an answer to the step-down");
            let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
            assert_eq!(reply["success"], true, "step-down: {reply}");
        });
        self.wait_for_stream_leader(stream, leader, Duration::from_secs(180));
    }

    /// How many client connections named `name` node `i` has (0 if it does not answer).
    pub fn connections(&self, i: usize, name: &str) -> usize {
        self.nodes[i]
            .monitor("/connz?limit=1024")
            .and_then(|connz| {
                connz["connections"]
                    .as_array()
                    .map(|all| all.iter().filter(|c| c["name"] == name).count())
            })
            .unwrap_or(0)
    }
}

//! Test support: real processes on free ports. Each test starts its own `redis-server` (own
//! data dir) and its own `ticketing` host (own state dir), and talks HTTP to it.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod manifests;
pub mod nats_cluster;
pub mod scenarios;
pub mod spin;
pub mod spinkube;
pub mod stripe;
pub mod traffic;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// The secret every test host signs sessions with (tests forge tokens with it too).
pub const JWT_SECRET: &str = "integration-test-secret";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn app_manifest() -> PathBuf {
    workspace_root().join("spin.toml")
}

pub fn testbed_manifest() -> PathBuf {
    workspace_root().join("host/tests/fixtures/testbed.toml")
}

/// Builds the components of both manifests once per test binary, through the host's own
/// `ticketing build` (the same path as `ticketing up --build`).
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        for manifest in [app_manifest(), testbed_manifest()] {
            let status = Command::new(env!("CARGO_BIN_EXE_ticketing"))
                .arg("build")
                .arg("--from")
                .arg(&manifest)
                .status()
                .expect("run `ticketing build`");
            assert!(
                status.success(),
                "`ticketing build -f {}` failed",
                manifest.display()
            );
        }
    });
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port} within 120 s");
}

fn require_binary(name: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed: run `bash scripts/setup.sh` first"
    );
}

/// A real `redis-server` on a free port with its own empty data dir, killed on drop.
pub struct Redis {
    pub port: u16,
    child: ServerProcess,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl Redis {
    /// An in-memory server (no snapshots, no append-only file).
    pub fn start() -> Redis {
        Redis::launch(false)
    }

    /// A server that keeps every write in its append-only file, fsynced before it answers
    /// (`appendfsync always`), so that it can be killed and restarted without losing any
    /// acknowledged write: the setting docs/DESIGN.md asks of a deployment.
    pub fn start_persistent() -> Redis {
        Redis::launch(true)
    }

    fn launch(persistent: bool) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Redis::spawn(port, dir.path(), persistent);
        Redis {
            port,
            child: ServerProcess(child),
            dir,
            persistent,
        }
    }

    fn spawn(port: u16, dir: &Path, persistent: bool) -> Child {
        require_binary("redis-server");
        let log = dir.join("redis.log");
        let persistence: &[&str] = if persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(persistence)
            .arg("--logfile")
            .arg(&log)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_for_port(port, &mut child, "redis-server", &log);
        child
    }

    /// SIGKILLs the server; it stays down until `restart`.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts the (killed) server again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill();
        self.child = ServerProcess(Redis::spawn(self.port, self.dir.path(), self.persistent));
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one inline command and returns the raw reply (enough for DBSIZE/PING checks).
    pub fn command(&self, cmd: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).trim().to_string()
    }

    /// Sends `signal` to the server: `STOP` makes it hang (connections open, no answers),
    /// `CONT` lets it go on.
    pub fn signal(&self, signal: &str) {
        send_signal(&self.child.0, signal);
    }
}

/// A real `nats-server` with JetStream on a free port, its own store dir, killed on drop.
pub struct Nats {
    pub port: u16,
    child: ServerProcess,
    dir: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Nats::spawn(port, dir.path());
        Nats {
            port,
            child: ServerProcess(child),
            dir,
        }
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        require_binary("nats-server");
        let log = dir.join("nats.log");
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(dir.join("jetstream"))
            .args(["--server_name", "test", "-l"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        wait_for_port(port, &mut child, "nats-server", &log);
        child
    }

    /// SIGKILLs the server; it stays down until `restart`.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Starts the (killed) server again on the same port and JetStream store.
    pub fn restart(&mut self) {
        self.kill();
        self.child = ServerProcess(Nats::spawn(self.port, self.dir.path()));
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Sends `signal` to the server (`STOP`: it hangs; `CONT`: it goes on).
    pub fn signal(&self, signal: &str) {
        send_signal(&self.child.0, signal);
    }
}

/// Where a host keeps its key-value data.
#[derive(Clone)]
pub enum Backend {
    Embedded,
    Redis(String),
}

/// How to start a host: manifest, backend, extra arguments and variables.
#[derive(Clone)]
pub struct HostConfig {
    pub manifest: PathBuf,
    pub backend: Backend,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl HostConfig {
    pub fn app(backend: Backend) -> HostConfig {
        HostConfig {
            manifest: app_manifest(),
            backend,
            args: vec![],
            env: vec![("SPIN_VARIABLE_JWT_SECRET".into(), JWT_SECRET.into())],
        }
    }

    pub fn testbed(backend: Backend) -> HostConfig {
        HostConfig {
            manifest: testbed_manifest(),
            ..HostConfig::app(backend)
        }
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn var(mut self, name: &str, value: &str) -> Self {
        let key = format!("SPIN_VARIABLE_{}", name.to_uppercase());
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    pub fn start(self) -> Host {
        ensure_built();
        Host::launch(self, tempfile::tempdir().unwrap())
    }
}

/// A running `ticketing up`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Host {
    pub port: u16,
    pub config: HostConfig,
    child: Child,
    state: tempfile::TempDir,
    log: PathBuf,
}

impl Host {
    fn launch(config: HostConfig, state: tempfile::TempDir) -> Host {
        let port = free_port();
        let log = state.path().join(format!("host-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ticketing"));
        cmd.arg("up")
            .arg("--from")
            .arg(&config.manifest)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state.path().join("state"))
            .args(&config.args)
            .envs(config.env.iter().cloned())
            .env_remove("RUNTIME_CONFIG_FILE")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap());
        if let Backend::Redis(url) = &config.backend {
            let rc = state.path().join("runtime-config.toml");
            std::fs::write(&rc, runtime_config(&config.manifest, url)).unwrap();
            cmd.arg("--runtime-config-file").arg(rc);
        }
        let mut child = cmd.spawn().expect("start the ticketing host");
        wait_for_port(port, &mut child, "ticketing up", &log);
        Host {
            port,
            config,
            child,
            state,
            log,
        }
    }

    /// Stops this host gracefully and starts a new one on the same state dir (and backend).
    pub fn restart(self) -> Host {
        self.restart_with(|_| {})
    }

    /// `restart`, with `change` made to its config first (e.g. a test mode turned off).
    pub fn restart_with(mut self, change: impl FnOnce(&mut HostConfig)) -> Host {
        self.stop();
        let mut config = self.config.clone();
        change(&mut config);
        let state = std::mem::replace(&mut self.state, tempfile::tempdir().unwrap());
        Host::launch(config, state)
    }

    /// Waits for a host that is going down by itself (a test-mode crash) to be gone.
    pub fn wait_for_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the host is still running:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit status once the host has shut down.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child, Duration::from_secs(20), "host", &self.log)
    }

    pub fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url(""))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        end_process(
            &mut self.child,
            Duration::from_millis(100),
            "host",
            &self.log,
        );
    }
}

/// A server the test starts (Redis, NATS): SIGKILLed and reaped by `kill` and on drop.
pub struct ServerProcess(pub Child);

impl ServerProcess {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (`TERM`, `KILL`, ...) to a child process.
pub fn send_signal(child: &Child, signal: &str) {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

/// SIGTERM, and the exit status once the process has exited; a process still running after
/// `grace` fails the test with its log.
pub fn terminate(child: &mut Child, grace: Duration, what: &str, log: &Path) -> ExitStatus {
    send_signal(child, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{what} did not stop within {grace:?} of SIGTERM:\n{}",
        read_log(log)
    );
}

/// For `Drop`: a process still running gets SIGTERM, `drain` to finish, then SIGKILL; when
/// the test is failing, its log is printed.
pub fn end_process(child: &mut Child, drain: Duration, what: &str, log: &Path) {
    if child.try_wait().unwrap().is_none() {
        send_signal(child, "TERM");
        std::thread::sleep(drain);
        let _ = child.kill();
        let _ = child.wait();
    }
    if std::thread::panicking() {
        eprintln!("---- {what} log ----\n{}", read_log(log));
    }
}

/// A process's log file, or nothing if it was never written.
pub fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// A runtime config putting every store label of the manifest on one Redis server.
fn runtime_config(manifest: &Path, redis_url: &str) -> String {
    let manifest: toml::Table = std::fs::read_to_string(manifest).unwrap().parse().unwrap();
    let mut labels: Vec<String> = manifest["component"]
        .as_table()
        .unwrap()
        .values()
        .filter_map(|c| c.get("key_value_stores")?.as_array().cloned())
        .flatten()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    labels.sort();
    labels.dedup();
    labels
        .iter()
        .map(|l| format!("[key_value_store.{l}]\ntype = \"redis\"\nurl = \"{redis_url}\"\n"))
        .collect()
}

/// An HTTP response as tests see it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {:?}",
                self.status, self.body
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path of the next page from a `Link: <...>; rel="next"` header, if any.
    pub fn next_page(&self) -> Option<String> {
        let link = self.header("link")?;
        let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        params
            .split(';')
            .any(|param| param.trim() == "rel=\"next\"")
            .then(|| target.to_owned())
    }

    /// The `{"errors": [...]}` messages, in order.
    pub fn error_messages(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array in {}", self.body))
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    }

    /// Asserts the status and that the body is the error envelope with exactly `messages`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, messages: &[&str]) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.error_messages(), messages, "body: {}", self.body);
    }

    /// Asserts a 400 validation error naming exactly these (field, message) pairs.
    #[track_caller]
    pub fn assert_fields(&self, expected: &[(&str, &str)]) {
        assert_eq!(self.status, 400, "body: {}", self.body);
        let got: Vec<(String, String)> = self.json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let field = e["field"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no field in {e}"));
                (
                    field.to_string(),
                    e["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(f, m)| (f.to_string(), m.to_string()))
            .collect();
        assert_eq!(got, want, "body: {}", self.body);
    }
}

/// A small HTTP client that keeps the session cookie like a browser would.
#[derive(Clone)]
pub struct Client {
    base: String,
    pub cookie: Option<String>,
    pub bearer: Option<String>,
}

impl Client {
    /// A client of the app at `base` (`http://host:port`), signed out.
    pub fn new(base: &str) -> Client {
        Client {
            base: base.to_owned(),
            cookie: None,
            bearer: None,
        }
    }

    pub fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, None, None)
    }

    pub fn delete(&mut self, path: &str) -> Reply {
        self.send("DELETE", path, None, None)
    }

    pub fn post(&mut self, path: &str, body: Value) -> Reply {
        self.send(
            "POST",
            path,
            Some(body.to_string()),
            Some("application/json"),
        )
    }

    pub fn put(&mut self, path: &str, body: Value) -> Reply {
        self.send(
            "PUT",
            path,
            Some(body.to_string()),
            Some("application/json"),
        )
    }

    /// `post`, but a request that gets no answer at all (connection refused or cut, as when
    /// the server dies) is an `Err` instead of a panic.
    pub fn try_post(&mut self, path: &str, body: Value) -> Result<Reply, String> {
        self.try_send(
            "POST",
            path,
            Some(body.to_string()),
            Some("application/json"),
        )
    }

    /// Any method, raw body and content type.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
        content_type: Option<&str>,
    ) -> Reply {
        self.try_send(method, path, body, content_type)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `send`, with a request that got no answer as an `Err`.
    pub fn try_send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
        content_type: Option<&str>,
    ) -> Result<Reply, String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let mut req = agent.request(method, &format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.set("Content-Type", ct);
        }
        if let Some(cookie) = &self.cookie {
            req = req.set("Cookie", cookie);
        }
        if let Some(token) = &self.bearer {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Some(b) => req.send_string(&b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .flat_map(|n| {
                resp.all(&n)
                    .into_iter()
                    .map(move |v| (n.clone(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let body = resp.into_string().unwrap_or_default();
        let reply = Reply {
            status,
            headers,
            body,
        };
        if let Some(set) = reply.header("set-cookie") {
            let pair = set.split(';').next().unwrap().to_string();
            self.cookie = if pair == "session=" { None } else { Some(pair) };
        }
        Ok(reply)
    }

    /// Every item of a paged listing (`/api/tickets`, `/api/orders`), following its `next`
    /// links from `path` to the last page.
    pub fn get_all(&mut self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        while let Some(path) = next {
            let reply = self.get(&path);
            assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
            items.extend(
                reply
                    .json()
                    .as_array()
                    .expect("a JSON array")
                    .iter()
                    .cloned(),
            );
            next = reply.next_page();
        }
        items
    }

    /// Signs up a fresh user (unique email) and keeps its session; returns the user JSON.
    pub fn sign_up(&mut self) -> Value {
        let email = unique_email();
        let reply = self.post(
            "/api/users/signup",
            json!({"email": email, "password": "secret1"}),
        );
        assert_eq!(reply.status, 201, "signup: {}", reply.body);
        reply.json()
    }

    /// A client of `host` with this client's session (the hosts of one deployment share
    /// their sessions).
    pub fn on(&self, host: &Host) -> Client {
        Client {
            base: host.url(""),
            ..self.clone()
        }
    }

    /// The session token of this client (from its cookie).
    pub fn token(&self) -> String {
        self.cookie
            .as_deref()
            .expect("signed in")
            .trim_start_matches("session=")
            .to_string()
    }
}

pub fn unique_email() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "user{}-{}-{}@example.com",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Retries `f` until it returns Some (30 s at most), for events to make their way through
/// the platform.
#[track_caller]
pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_within(Duration::from_secs(30), what, f)
}

/// `eventually` with its own bound.
#[track_caller]
pub fn eventually_within<T>(bound: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `f` on `n` threads released at the same moment; returns their results in order.
pub fn at_once<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// What a host of the whole app runs on: nothing but its state dir, or NATS + Redis started
/// for the test.
pub enum Platform {
    Embedded,
    Servers { nats: Nats, redis: Redis },
}

impl Platform {
    pub fn servers() -> Platform {
        Platform::Servers {
            nats: Nats::start(),
            redis: Redis::start(),
        }
    }

    /// The app with an order window of `window_secs`, paying through `stripe`.
    pub fn host(&self, window_secs: u32, stripe: &stripe::StripeFake) -> HostConfig {
        let backend = match self {
            Platform::Embedded => Backend::Embedded,
            Platform::Servers { redis, .. } => Backend::Redis(redis.url()),
        };
        let config = HostConfig::app(backend)
            .var("expiration_window_seconds", &window_secs.to_string())
            .var("stripe_secret_key", stripe::SECRET_KEY)
            .var("stripe_api_base", &stripe.base_url());
        match self {
            Platform::Embedded => config,
            Platform::Servers { nats, redis } => config
                .var("nats_url", &nats.url())
                .var("timers_url", &redis.url()),
        }
    }
}

/// Declares each scenario `fn name(host: &Host)` as one test per key-value backend: the
/// embedded on-disk store and a real Redis server started for the test. The hosts are
/// `HostConfig::app(backend)`, or `config(backend)` with `on_every_backend!(configured_by
/// config; ...)`, `config` being a `fn(Backend) -> HostConfig` of the test file.
#[macro_export]
macro_rules! on_every_backend {
    (configured_by $config:path; $($name:ident),* $(,)?) => {
        mod embedded {
            #[allow(unused_imports)]
            use super::*;
            $( #[test] fn $name() { super::$name(&$config($crate::support::Backend::Embedded).start()) } )*
        }
        mod redis {
            #[allow(unused_imports)]
            use super::*;
            $( #[test] fn $name() {
                let redis = $crate::support::Redis::start();
                super::$name(&$config($crate::support::Backend::Redis(redis.url())).start())
            } )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::on_every_backend!(configured_by $crate::support::HostConfig::app; $($name),*);
    };
}

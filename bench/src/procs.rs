//! The processes the bench starts and stops itself: the release `ticketing` host,
//! `redis-server`, `nats-server` and `wasmtime serve`, each on a free port with its own
//! directory, killed when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn on_path(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A child process listening on `port`, killed (SIGTERM, then SIGKILL) on drop.
pub struct Service {
    pub name: String,
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Service {
    /// Spawns `cmd` (stdout and stderr to `log`) and waits until `port` accepts connections.
    pub fn spawn(name: &str, mut cmd: Command, port: u16, log: PathBuf) -> anyhow::Result<Service> {
        let out = std::fs::File::create(&log)?;
        cmd.stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null());
        // With RUST_BACKTRACE=1 inherited, wasmtime captures a backtrace at every store drop
        // (an error value built in its fiber clean-up), i.e. once per request: servers run
        // as deployed, without it.
        cmd.env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let mut service = Service {
            name: name.into(),
            port,
            log,
            child,
        };
        service.wait_listening(Duration::from_secs(120))?;
        Ok(service)
    }

    fn wait_listening(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let addr = self.addr();
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            // Short: restart times are measured through this wait.
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!(
            "{} did not listen on {} within {limit:?}",
            self.name,
            self.port
        )
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits for the process to be gone (a crash, for the recovery figures).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Resident set size of the process, from /proc/<pid>/status (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn redis(dir: &Path) -> anyhow::Result<Service> {
    let port = free_port();
    let data = dir.join(format!("redis-{port}"));
    std::fs::create_dir_all(&data)?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&data);
    Service::spawn("redis-server", cmd, port, data.join("redis.log"))
}

pub fn nats(dir: &Path) -> anyhow::Result<Service> {
    let port = free_port();
    let data = dir.join(format!("nats-{port}"));
    std::fs::create_dir_all(&data)?;
    let mut cmd = Command::new("nats-server");
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .arg("-sd")
        .arg(data.join("jetstream"))
        .args(["--server_name", "bench"]);
    Service::spawn("nats-server", cmd, port, data.join("nats.log"))
}

/// `nats-server` with JetStream and an MQTT listener (what Spin's components publish to);
/// returns the server and its MQTT port. MQTT needs a config file and a server name.
pub fn nats_with_mqtt(dir: &Path) -> anyhow::Result<(Service, u16)> {
    let (port, mqtt_port) = (free_port(), free_port());
    let data = dir.join(format!("nats-{port}"));
    std::fs::create_dir_all(&data)?;
    let config = data.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "server_name: bench\nlisten: 127.0.0.1:{port}\n\
             jetstream {{ store_dir: {:?} }}\nmqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n",
            data.join("jetstream")
        ),
    )?;
    let mut cmd = Command::new("nats-server");
    cmd.arg("-c").arg(&config);
    let service = Service::spawn("nats-server (MQTT)", cmd, port, data.join("nats.log"))?;
    Ok((service, mqtt_port))
}

/// How a host is started.
pub struct HostSpec<'a> {
    pub binary: &'a Path,
    pub manifest: &'a Path,
    /// `redis://...` puts every key-value store on that server.
    pub redis_url: Option<String>,
    /// SPIN_VARIABLE_* overrides.
    pub vars: Vec<(&'a str, String)>,
    /// The host's state directory, to start a host on an earlier one's data [default: a new
    /// one].
    pub state_dir: Option<&'a Path>,
    /// `--admin-listen`: the admin routes, and metrics recorded [default: none].
    pub admin_listen: Option<SocketAddr>,
}

pub const JWT_SECRET: &str = "bench-secret";
/// Key-value store labels of the app's spin.toml.
const STORE_LABELS: [&str; 4] = ["auth", "tickets", "orders", "payments"];

pub fn host(dir: &Path, spec: HostSpec<'_>) -> anyhow::Result<Service> {
    let port = free_port();
    let state = match spec.state_dir {
        Some(state) => state.to_owned(),
        None => dir.join(format!("host-{port}")),
    };
    std::fs::create_dir_all(&state)?;
    let mut cmd = Command::new(spec.binary);
    cmd.arg("up")
        .arg("--from")
        .arg(spec.manifest)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state.join("state"))
        .env("SPIN_VARIABLE_JWT_SECRET", JWT_SECRET)
        .env_remove("RUNTIME_CONFIG_FILE");
    for (name, value) in &spec.vars {
        cmd.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
    }
    if let Some(admin) = spec.admin_listen {
        cmd.arg("--admin-listen").arg(admin.to_string());
    }
    if let Some(url) = &spec.redis_url {
        let rc = state.join("runtime-config.toml");
        let text: String = STORE_LABELS
            .iter()
            .map(|l| format!("[key_value_store.{l}]\ntype = \"redis\"\nurl = \"{url}\"\n"))
            .collect();
        std::fs::write(&rc, text)?;
        cmd.arg("--runtime-config-file").arg(rc);
    }
    Service::spawn(
        "ticketing up",
        cmd,
        port,
        state.join(format!("host-{port}.log")),
    )
}

/// `wasmtime serve` of `component` with the pooling allocator, like the host, and
/// `wasi:cli` linked (spin-sdk components import its environment and stdio interfaces).
pub fn wasmtime_serve(dir: &Path, component: &Path) -> anyhow::Result<Service> {
    let port = free_port();
    let mut cmd = Command::new("wasmtime");
    cmd.arg("serve")
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .args(["-O", "pooling-allocator=y", "-S", "cli=y"])
        .arg(component);
    Service::spawn(
        "wasmtime serve",
        cmd,
        port,
        dir.join(format!("wasmtime-{port}.log")),
    )
}

/// The process listening on TCP `port` (from `/proc/net/tcp{,6}` and the processes' open
/// sockets), unless it is the bench itself (the native servers run in-process).
pub fn listener_pid(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields.get(1)?.rsplit(':').next()?;
                // State 0A is LISTEN.
                (u16::from_str_radix(local_port, 16).ok()? == port && fields.get(3)? == &"0A")
                    .then(|| fields.get(9).map(|inode| inode.to_string()))
                    .flatten()
            })
        })?;
    let socket = format!("socket:[{inode}]");
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.as_os_str() == socket.as_str())
                })
                .then_some(pid)
                .filter(|&pid| pid != me)
        })
}

/// CPU time (user + system, all threads, the dead ones included) `pid` has used, in
/// microseconds.
pub fn cpu_time_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `/proc/<pid>/stat` counts in USER_HZ ticks, 100 per second on Linux.
    cpu_ticks(&stat).map(|ticks| ticks * 10_000)
}

/// CPU time of `pid` and of every process descended from it (e.g. Spin and the trigger
/// plugin it starts), in microseconds.
pub fn tree_cpu_time_us(pid: u32) -> Option<u64> {
    let own = cpu_time_us(pid)?;
    // Parent of every process, from /proc/<pid>/stat's field 4.
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let after_name = stat.get(stat.rfind(')')? + 1..)?;
            let parent = after_name.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut tree = vec![pid];
    let mut total = own;
    let mut i = 0;
    while let Some(&parent) = tree.get(i) {
        for &(child, p) in &parents {
            if p == parent && !tree.contains(&child) {
                tree.push(child);
                total += cpu_time_us(child).unwrap_or(0);
            }
        }
        i += 1;
    }
    Some(total)
}

/// utime + stime of a `/proc/<pid>/stat` line, in ticks.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count the fields after
    // its last closing parenthesis, where field 3 (the state) comes first.
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(field(14)? + field(15)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_an_odd_command_name() {
        let stat = "4242 (tokio (rt) 2) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    731 269 0 0 20 0 17 0 123456 0 0";
        assert_eq!(cpu_ticks(stat), Some(731 + 269));
        assert_eq!(cpu_ticks("4242 (truncated) S 1"), None);
    }

    #[test]
    fn the_cpu_time_of_this_process_grows_as_it_works() {
        let me = std::process::id();
        let before = cpu_time_us(me).expect("own /proc stat");
        // Work until the count moves (a tick is 10 ms of CPU); the bound is only there so
        // that a count that never moves fails instead of hanging.
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut x = 0u64;
        while cpu_time_us(me).expect("own /proc stat") == before {
            assert!(
                Instant::now() < give_up,
                "no CPU time counted in 60 s of work"
            );
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }
}

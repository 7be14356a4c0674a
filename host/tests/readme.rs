//! The commands README.md gives a new user work as written. They are read from README.md
//! (never re-typed here) and run from a clean copy of the repository: its tracked files and
//! nothing beside them, so a command that needs a file outside the clone fails here too.
//!
//! The test runs in namespaces of its own (`unshare`: a network namespace, so the ports the
//! README names, 3000, 4222 and 6379, are free whatever else runs on this machine, and a
//! mount namespace with a private /tmp for the copy and for `/tmp/nats-data`). The copy
//! shares this workspace's `target/` (a symlink), so what the test run has built is reused
//! as the README says; the copy always sits at the same path, so later runs rebuild nothing.
//!
//! What runs, in order:
//! 1. "The two commands": the run command, until the app answers `/` and an API route; then
//!    "Try it", every `curl` of it, with the ids it prints put where it says `<...>`; then
//!    the app is stopped as a user stops it (SIGINT to the foreground process group). The
//!    test command must be what `.ci/run` runs.
//! 2. "Run on NATS JetStream and Redis": the whole block (the two servers and the host),
//!    then a purchase through it, paid at once.
//!
//! Not run: the `spin up` block (no Spin binary in the test run; see
//! `host/tests/spin_plugin.rs` for what stands in for it) and the deploy steps (no cluster).
mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{eventually, json, workspace_root, Client, Value};

/// Set in the re-run of this test inside its namespaces.
const INSIDE: &str = "TICKETING_README_TEST_INSIDE";
/// Where the clean copy sits, in the private /tmp.
const COPY: &str = "/tmp/ticketing";
/// The address the README's commands serve on.
const APP: &str = "127.0.0.1:3000";
/// A first build of the copy's own crates (the host and the components) on a small machine.
const FIRST_START: Duration = Duration::from_secs(30 * 60);

#[test]
fn the_readme_commands_work_as_written() {
    if std::env::var_os(INSIDE).is_none() {
        rerun_in_namespaces("the_readme_commands_work_as_written");
        return;
    }
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let copy = clean_copy();

    let (run, test) = the_two_commands(&readme);
    let ci = std::fs::read_to_string(workspace_root().join(".ci/run")).unwrap();
    assert_eq!(
        ci.lines().map(str::trim).rfind(|line| !line.is_empty()),
        Some(test.as_str()),
        ".ci/run must run the README's test command"
    );

    let mut app = Background::start("the run command", &run, &copy);
    app.wait_until_serving(FIRST_START);
    let page = get("/");
    assert_eq!(page.0, 200, "GET / after `{run}`");
    assert!(
        page.1.contains("<html"),
        "GET / is the web client's page: {}",
        page.1
    );
    let tickets = get("/api/tickets");
    assert_eq!(tickets.0, 200, "GET /api/tickets: {}", tickets.1);
    assert!(serde_json::from_str::<Value>(&tickets.1)
        .unwrap()
        .is_array());
    try_it(&section_block(&readme, "## Try it"), &copy);
    app.stop();

    let nats_and_redis = section_block(&readme, "## Run on NATS JetStream and Redis");
    let mut app = Background::start("the NATS + Redis block", &nats_and_redis, &copy);
    app.wait_until_serving(Duration::from_secs(5 * 60));
    buy_and_pay_at_once();
    app.stop();
}

/// Runs this very test again under `unshare` (a user namespace mapping us to root, so no
/// privilege is needed where user namespaces are allowed) and fails with its output if it
/// fails there.
fn rerun_in_namespaces(test: &str) {
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(INSIDE, "1")
        .status()
        .expect("run `unshare` (util-linux)");
    assert!(
        status.success(),
        "the README's commands failed (output above), or `unshare --user --net --mount` is not \
         allowed here ({status})"
    );
}

/// Inside the namespaces: loopback up, a fresh /tmp, and the repository's tracked files
/// copied there (with their times, so cargo sees the sources it already built).
fn clean_copy() -> PathBuf {
    let root = workspace_root();
    // A clone under /tmp would vanish under the fresh /tmp: hold it open, and bind it back
    // to its path there (the kernel follows the /proc link to the hidden directory; `-c`
    // keeps `mount` from resolving the path itself).
    let root_dir = std::fs::File::open(&root).unwrap();
    run_ok("ip", &["link", "set", "lo", "up"]);
    run_ok("mount", &["-t", "tmpfs", "tmpfs", "/tmp"]);
    if root.starts_with("/tmp") {
        std::fs::create_dir_all(&root).unwrap();
        let held = format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            std::os::fd::AsRawFd::as_raw_fd(&root_dir)
        );
        run_ok("mount", &["-c", "--bind", &held, root.to_str().unwrap()]);
    }
    let copy = PathBuf::from(COPY);
    std::fs::create_dir(&copy).unwrap();
    let files = Command::new("git")
        .current_dir(&root)
        .args(["ls-files", "-z"])
        .output()
        .expect("run git");
    assert!(files.status.success(), "git ls-files failed");
    let mut pack = Command::new("tar")
        .current_dir(&root)
        .args(["--null", "--ignore-failed-read", "-T", "-", "-cf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut list = pack.stdin.take().unwrap();
    let listed = files.stdout;
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut list, &listed));
    let unpacked = Command::new("tar")
        .current_dir(&copy)
        .args(["-xf", "-"])
        .stdin(pack.stdout.take().unwrap())
        .status()
        .unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        pack.wait().unwrap().success() && unpacked.success(),
        "copying the repository"
    );
    // This workspace's target dir (the test binary's build), not a new one.
    let target = Path::new(env!("CARGO_BIN_EXE_ticketing"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf();
    std::os::unix::fs::symlink(target, copy.join("target")).unwrap();
    copy
}

/// Without what `cargo test` adds to a test's environment (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, ...), as a user's shell has it. Some build scripts rerun when those
/// change (ring's does for `CARGO_MANIFEST_DIR`), so a `cargo run` launched with them would
/// rebuild what the test build made, and the next build would rebuild it back.
fn as_in_a_users_shell(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO") && name != "CARGO_HOME") || name == "OUT_DIR" {
            command.env_remove(name.as_ref());
        }
    }
    command.env_remove(INSIDE);
}

fn run_ok(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "`{program} {}` failed: {status:?}",
        args.join(" ")
    );
}

/// The two commands of "The two commands": (run the app, run the tests).
fn the_two_commands(readme: &str) -> (String, String) {
    let commands = shell_commands(&section_block(readme, "## The two commands"));
    let [run, test] = commands.as_slice() else {
        panic!(
            "README's \"The two commands\" has {} commands: {commands:?}",
            commands.len()
        );
    };
    (run.clone(), test.clone())
}

/// The first ```sh block after the heading `heading`.
fn section_block(readme: &str, heading: &str) -> String {
    let section = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {heading:?}"))
        .1;
    let block = section
        .split_once("```sh\n")
        .unwrap_or_else(|| panic!("README's {heading:?} has no ```sh block"))
        .1;
    block.split_once("```").unwrap().0.to_owned()
}

/// The commands of a shell block: continuation lines joined, comments dropped.
fn shell_commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = without_comment(line);
        let (line, continues) = match line.trim_end().strip_suffix('\\') {
            Some(start) => (start.trim().to_owned(), true),
            None => (line.trim().to_owned(), false),
        };
        if !line.is_empty() {
            current = if current.is_empty() {
                line
            } else {
                format!("{current} {line}")
            };
        }
        if !continues && !current.is_empty() {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

/// The line without a `# comment` (a `#` outside quotes, at the start or after a blank).
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// "Try it", command by command, each checked for what the README's comment above it says.
/// The ids a command prints go where a later one says `<id from above>` (the ticket) or
/// `<order id>`.
fn try_it(block: &str, copy: &Path) {
    let commands = shell_commands(block);
    let shapes: Vec<(bool, String)> = commands.iter().map(|c| request_of(c)).collect();
    let expected = [
        (true, "/api/users/signup"),
        (false, "/api/users/currentuser"),
        (true, "/api/tickets"),
        (false, "/api/tickets"),
        (true, "/api/orders"),
        (true, "/api/payments"),
        (false, "/api/orders"),
    ];
    assert_eq!(
        shapes,
        expected.map(|(post, path)| (post, path.to_owned())),
        "README's \"Try it\" changed: (is a POST, path) of each command; update this test"
    );
    let scratch = copy.join("try-it");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut ticket_id = String::new();
    let mut order_id = String::new();
    for (i, command) in commands.iter().enumerate() {
        let command = command
            .replace("<id from above>", &ticket_id)
            .replace("<order id>", &order_id);
        assert!(
            !command.contains('<'),
            "an unknown placeholder in {command:?}"
        );
        let output = sh(&command, &scratch);
        match i {
            0 => assert!(
                output.starts_with("HTTP/1.1 201") && output.contains("set-cookie: session="),
                "signup: {output}"
            ),
            1 => assert_eq!(json_of(&output)["currentUser"]["email"], "ada@example.com"),
            2 => ticket_id = string_field(&json_of(&output), "id"),
            3 => assert!(
                json_of(&output)
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["id"] == ticket_id),
                "the new ticket is on sale: {output}"
            ),
            4 => {
                let order = json_of(&output);
                assert_eq!(order["status"], "created", "{output}");
                order_id = string_field(&order, "id");
            }
            // Paid right after ordering, as a reader pasting the block does.
            5 => assert!(json_of(&output)["id"].is_string(), "payment: {output}"),
            _ => {
                // The payment's event completes the order moments later; the README's
                // reader looks again, so does this.
                eventually("the paid order is complete", || {
                    let orders = json_of(&sh(&command, &scratch));
                    (orders[0]["status"] == "complete").then_some(())
                });
            }
        }
    }
}

/// (has a body, i.e. a POST; the URL's path) of a `curl` command.
fn request_of(command: &str) -> (bool, String) {
    assert!(
        command.starts_with("curl "),
        "not a curl command: {command}"
    );
    let url = command
        .split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("http://{APP}")))
        .unwrap_or_else(|| panic!("no URL on {APP} in {command}"));
    (command.contains(" -d "), url.to_owned())
}

fn sh(command: &str, dir: &Path) -> String {
    let output = Command::new("bash")
        .args(["-c", command])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "`{command}` failed: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn json_of(output: &str) -> Value {
    serde_json::from_str(output).unwrap_or_else(|e| panic!("not JSON ({e}): {output}"))
}

fn string_field(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_owned()
}

/// A purchase on the app at 3000: a seller's ticket, a buyer's order, paid at once.
fn buy_and_pay_at_once() {
    let base = format!("http://{APP}");
    let mut seller = Client::new(&base);
    seller.sign_up();
    let ticket = seller.post("/api/tickets", json!({"title": "Opera", "price": 35}));
    assert_eq!(ticket.status, 201, "{}", ticket.body);
    let ticket_id = ticket.json()["id"].as_str().unwrap().to_owned();
    let mut buyer = Client::new(&base);
    buyer.sign_up();
    // The orders service learns of the ticket through NATS.
    let order = eventually("the orders service knows the ticket", || {
        let reply = buyer.post("/api/orders", json!({ "ticketId": ticket_id }));
        (reply.status == 201).then(|| reply.json())
    });
    let order_id = order["id"].as_str().unwrap().to_owned();
    let paid = buyer.post(
        "/api/payments",
        json!({"token": "tok_visa", "orderId": order_id}),
    );
    assert_eq!(
        paid.status, 201,
        "payment right after the order: {}",
        paid.body
    );
    eventually("the order is complete", || {
        let order = buyer.get(&format!("/api/orders/{order_id}")).json();
        (order["status"] == "complete").then_some(())
    });
}

/// `(status, body)` of a GET on the app.
fn get(path: &str) -> (u16, String) {
    let mut client = Client::new(&format!("http://{APP}"));
    let reply = client.get(path);
    (reply.status, reply.body)
}

/// A README block running in the background, in a process group of its own (as a shell
/// runs a foreground job), with its output kept for failure messages.
struct Background {
    what: &'static str,
    child: Child,
    log: PathBuf,
}

impl Background {
    fn start(what: &'static str, script: &str, dir: &Path) -> Background {
        let log = dir.join(format!("{}.log", what.replace(' ', "-")));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new("bash");
        as_in_a_users_shell(&mut command);
        let child = command
            .args(["-c", script])
            .current_dir(dir)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        eprintln!("started {what}:\n{script}");
        Background { what, child, log }
    }

    fn wait_until_serving(&mut self, bound: Duration) {
        let deadline = Instant::now() + bound;
        let address: SocketAddr = APP.parse().unwrap();
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before serving:\n{}",
                    self.what,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not serve on {APP} within {bound:?}:\n{}",
                self.what,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Ctrl-C, as a user stops the app: SIGINT to the foreground job's process group; the
    /// app must be gone within 30 s. (Servers the block started with `&` ignore it, as in a
    /// terminal; the drop kills them.)
    fn stop(&mut self) {
        run_ok("kill", &["-INT", "--", &format!("-{}", self.child.id())]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{} still running 30 s after Ctrl-C:\n{}",
                self.what,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill_group();
    }

    fn kill_group(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    fn log(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} output ----\n{}", self.what, self.log());
        }
    }
}

#[test]
fn shell_blocks_split_into_commands() {
    let block = "a --x 1     # first\n# only a comment\nb 'c # not a comment' \\\n  -d \"#\"\n";
    assert_eq!(
        shell_commands(block),
        ["a --x 1", "b 'c # not a comment' -d \"#\""]
    );
}

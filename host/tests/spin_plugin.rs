//! The `trigger-nats` Spin plugin, started the way `spin up` starts trigger plugins, with
//! the test playing Spin's part: it writes the lock file from the project's spin.toml,
//! starts the plugin with Spin's environment and forwarded options, and serves the HTTP
//! routes from a second process (the host with only its HTTP trigger, standing in for
//! Spin's HTTP trigger, with Spin 3.6.3's Redis key-value semantics) on the same Redis and
//! NATS. The whole purchase and the race for one ticket then run across the two processes.
mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::spin::*;
use support::stripe::StripeFake;
use support::*;

fn plugin_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trigger-nats"));
    for name in [
        "SPIN_LOCKED_URL",
        "SPIN_WORKING_DIR",
        "SPIN_LOCAL_APP_DIR",
        "RUNTIME_CONFIG_FILE",
    ] {
        command.env_remove(name);
    }
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_args_only_lists_the_options_without_spins_environment() {
    // As `spin up --help` asks each trigger.
    let out: Output = plugin_command()
        .arg("--help-args-only")
        .env("SPIN_PLUGINS_SUPPRESS_COMPATIBILITY_WARNINGS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for option in [
        "--runtime-config-file",
        "--state-dir",
        "--log-dir",
        "--follow",
        "--quiet",
        "--disable-pooling",
        "--variable",
    ] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
    assert!(
        !help.contains("--help-args-only"),
        "hidden as in Spin:\n{help}"
    );
}

#[test]
fn launch_metadata_is_json_on_stderr() {
    let out = plugin_command()
        .arg("--launch-metadata-only")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stderr)));
    let flags = metadata["all_flags"].as_array().expect("all_flags");
    let has = |flag: Value| flags.contains(&flag);
    assert!(has(json!({"long": "--runtime-config-file"})), "{metadata}");
    assert!(has(json!({"long": "--state-dir"})), "{metadata}");
    assert!(
        has(json!({"long": "--log-dir", "short": "-L"})),
        "{metadata}"
    );
    assert!(has(json!({"long": "--quiet", "short": "-q"})), "{metadata}");
    assert!(has(json!({"long": "--follow"})), "{metadata}");
    assert!(has(json!({"long": "--disable-pooling"})), "{metadata}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));
}

#[test]
fn outside_spin_it_says_how_it_is_started() {
    let out = plugin_command().output().unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("SPIN_LOCKED_URL"), "{stderr}");
    assert!(stderr.contains("spin up"), "{stderr}");
}

#[test]
fn without_a_runtime_config_it_refuses_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let locked_url = write_lock_file(&app_manifest(), dir.path());
    let out = plugin_command()
        .args(["--some-future-flag", "value", "--state-dir"])
        .arg(dir.path().join("state"))
        .env("SPIN_LOCKED_URL", &locked_url)
        .env("SPIN_WORKING_DIR", dir.path())
        .env("SPIN_LOCAL_APP_DIR", workspace_root())
        .env("SPIN_VARIABLE_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--runtime-config-file"), "{stderr}");
    assert!(stderr.contains("type = \"redis\""), "{stderr}");
    assert!(
        stderr.contains("ignoring `--some-future-flag value`"),
        "{stderr}"
    );
}

#[test]
fn the_lock_file_is_shaped_like_spins() {
    let locked = locked_app(&app_manifest());
    assert_eq!(locked["spin_lock_version"], 0);
    assert_eq!(locked["metadata"]["name"], "ticketing");
    assert_eq!(
        locked["metadata"]["triggers"]["nats"]["url"],
        "{{ nats_url }}"
    );
    assert!(
        locked["metadata"].get("trigger").is_none(),
        "two trigger types: no legacy `trigger`"
    );
    assert!(locked["variables"]["jwt_secret"].get("default").is_none());
    let triggers = locked["triggers"].as_array().unwrap();
    assert!(triggers.iter().any(|t| t["id"] == "tickets-nats-trigger"
        && t["trigger_type"] == "nats"
        && t["trigger_config"]["component"] == "tickets"));
    let orders = locked["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "orders")
        .unwrap();
    assert!(orders["source"]["source"]
        .as_str()
        .unwrap()
        .starts_with("file:///"));
    assert_eq!(orders["config"]["jwt_secret"], "{{ jwt_secret }}");
    assert_eq!(orders["metadata"]["key_value_stores"], json!(["orders"]));
    assert_eq!(
        key_value_labels(&locked),
        ["auth", "orders", "payments", "tickets"]
    );
}

/// `spin up --runtime-config-file ... --state-dir ... -L ...` on the project's spin.toml,
/// played by the test: the plugin for the events and the timers, and the host with only
/// its HTTP trigger for the routes.
struct SpinUp {
    http: Host,
    plugin: Plugin,
    stripe: StripeFake,
    _servers: (Box<dyn std::any::Any>, Redis),
    _dir: tempfile::TempDir,
}

impl SpinUp {
    fn start(window_secs: u32) -> SpinUp {
        let nats = Nats::start();
        SpinUp::start_on(window_secs, nats.url(), Box::new(nats))
    }

    /// With the NATS server at `nats_url` (kept alive by `nats`).
    fn start_on(window_secs: u32, nats_url: String, nats: Box<dyn std::any::Any>) -> SpinUp {
        let redis = Redis::start();
        let stripe = StripeFake::start();
        ensure_built();
        let dir = tempfile::tempdir().unwrap();
        let working_dir = dir.path().join("spinup-working-dir");
        std::fs::create_dir_all(&working_dir).unwrap();
        let locked_url = write_lock_file(&app_manifest(), &working_dir);
        let labels = key_value_labels(&locked_app(&app_manifest()));
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let runtime_config = dir.path().join("runtime-config.toml");
        std::fs::write(&runtime_config, redis_runtime_config(&labels, &redis.url())).unwrap();

        let variables = [
            ("jwt_secret", JWT_SECRET.to_owned()),
            ("nats_url", nats_url),
            ("timers_url", redis.url()),
            ("expiration_window_seconds", window_secs.to_string()),
            ("stripe_secret_key", support::stripe::SECRET_KEY.to_owned()),
            ("stripe_api_base", stripe.base_url()),
        ];
        let env: Vec<(String, String)> = variables
            .iter()
            .map(|(name, value)| {
                (
                    format!("SPIN_VARIABLE_{}", name.to_uppercase()),
                    value.clone(),
                )
            })
            .collect();

        let launch = PluginLaunch {
            locked_url,
            working_dir: working_dir.clone(),
            local_app_dir: workspace_root(),
            args: [
                "--runtime-config-file",
                runtime_config.to_str().unwrap(),
                "--state-dir",
                dir.path().join("spin-state").to_str().unwrap(),
                "-L",
                dir.path().join("logs").to_str().unwrap(),
                "--some-future-flag",
                "value",
                "--follow-all",
            ]
            .map(str::to_owned)
            .to_vec(),
            env: env.clone(),
        };
        let plugin = Plugin::start(&launch, dir.path().join("trigger-nats.log"));

        // Spin's HTTP trigger, played by the host with only its HTTP trigger, reading the
        // same lock file, with the key-value semantics Spin 3.6.3's Redis store really has.
        let mut http = HostConfig::app(Backend::Embedded);
        http.manifest = working_dir.join("spin.lock");
        http.args = vec![
            "--triggers".into(),
            "http".into(),
            "--runtime-config-file".into(),
            runtime_config.to_str().unwrap().into(),
        ];
        http.env = env;
        http.env
            .push(("TICKETING_TEST_KV_SEMANTICS".into(), "spin-redis".into()));
        let http = http.start();

        SpinUp {
            http,
            plugin,
            stripe,
            _servers: (nats, redis),
            _dir: dir,
        }
    }

    /// Stops both processes as `spin up` does on Ctrl-C; the plugin drains and exits 0.
    fn stop(mut self) {
        let status = self.plugin.stop();
        assert!(
            status.success(),
            "trigger-nats exit: {status}\n{}",
            self.plugin.log()
        );
        let status = self.http.stop();
        assert!(status.success(), "HTTP side exit: {status}");
        let log = self.plugin.log();
        assert!(
            log.contains("ignoring `--some-future-flag value`"),
            "the unknown option is named:\n{log}"
        );
        assert!(log.contains("ignoring `--follow-all`"), "{log}");
    }
}

/// Polls `f` until it returns Some, for up to a minute (events cross two processes and a
/// loaded machine).
#[track_caller]
fn within_a_minute<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sell(app: &SpinUp, title: &str, price: f64) -> Value {
    let mut seller = app.http.client();
    seller.sign_up();
    let reply = seller.post("/api/tickets", json!({ "title": title, "price": price }));
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.json()
}

/// Orders `ticket_id`, once the orders service has heard of it (ticket.created, handled by
/// the plugin's orders listener).
fn place_order(buyer: &mut Client, ticket_id: &str) -> Value {
    within_a_minute("the orders service knows the ticket", || {
        let reply = buyer.post("/api/orders", json!({ "ticketId": ticket_id }));
        match reply.status {
            201 => Some(reply.json()),
            404 => None,
            _ => panic!("order: {} {}", reply.status, reply.body),
        }
    })
}

fn order_status(buyer: &mut Client, order_id: &str) -> String {
    buyer.get(&format!("/api/orders/{order_id}")).json()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_purchase_across_spins_http_trigger_and_the_plugin() {
    let app = SpinUp::start(120);
    let ticket = sell(&app, "Opera", 20.1);
    let ticket_id = ticket["id"].as_str().unwrap();
    let ticket_path = format!("/api/tickets/{ticket_id}");

    let mut buyer = app.http.client();
    buyer.sign_up();
    let order = place_order(&mut buyer, ticket_id);
    assert_eq!(order["status"], "created");
    let order_id = order["id"].as_str().unwrap();

    // order.created went from the HTTP process through NATS to the plugin's listeners.
    within_a_minute("the ticket shows the order", || {
        let shown = buyer.get(&ticket_path).json();
        (shown["orderId"] == order["id"]).then_some(())
    });
    let paid = within_a_minute("the payments service knows the order", || {
        let reply = buyer.post(
            "/api/payments",
            json!({ "token": "tok_visa", "orderId": order_id }),
        );
        (reply.status != 404).then_some(reply)
    });
    assert_eq!(paid.status, 201, "{}", paid.body);
    let charges = app.stripe.charges();
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0].form["amount"], "2010");
    within_a_minute("the order is complete", || {
        (order_status(&mut buyer, order_id) == "complete").then_some(())
    });
    buyer
        .post(
            "/api/payments",
            json!({ "token": "tok_visa", "orderId": order_id }),
        )
        .assert_error(400, &["Order already paid"]);
    app.stop();
}

#[test]
fn an_unpaid_order_expires_across_the_two_processes() {
    let app = SpinUp::start(2);
    let ticket = sell(&app, "Ballet", 30.0);
    let ticket_id = ticket["id"].as_str().unwrap();
    let mut buyer = app.http.client();
    buyer.sign_up();
    let order = place_order(&mut buyer, ticket_id);
    let order_id = order["id"].as_str().unwrap();

    // The plugin's expiration listener schedules the timer, its timer driver fires it, its
    // orders listener cancels, its tickets listener releases the ticket.
    within_a_minute("the order expires", || {
        (order_status(&mut buyer, order_id) == "cancelled").then_some(())
    });
    within_a_minute("the ticket is on sale again", || {
        let listed = buyer.get("/api/tickets").json();
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == ticket["id"] && t.get("orderId").is_none())
            .then_some(())
    });
    buyer
        .post(
            "/api/payments",
            json!({ "token": "tok_visa", "orderId": order_id }),
        )
        .assert_error(400, &["Order has expired"]);
    assert!(app.stripe.charges().is_empty());
    app.stop();
}

#[test]
fn twenty_buyers_one_ticket_across_the_two_processes() {
    let app = SpinUp::start(900);
    let ticket = sell(&app, "Final", 99.0);
    let ticket_id = ticket["id"].as_str().unwrap().to_owned();
    let buyers: Vec<Client> = (0..20)
        .map(|_| {
            let mut buyer = app.http.client();
            buyer.sign_up();
            buyer
        })
        .collect();
    // A canary sold after the contested ticket: once orders knows it, it knows the other.
    let canary = sell(&app, "Canary", 1.0);
    let mut probe = app.http.client();
    probe.sign_up();
    place_order(&mut probe, canary["id"].as_str().unwrap());

    let contenders = buyers.clone();
    let wanted = ticket_id.clone();
    let replies = at_once(contenders.len(), move |i| {
        contenders[i]
            .clone()
            .post("/api/orders", json!({ "ticketId": wanted }))
    });
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one buyer wins: {statuses:?}");
    for reply in replies.iter().filter(|r| r.status != 201) {
        reply.assert_error(400, &["Ticket is already reserved"]);
    }
    let order = winners[0].json();
    let mut reader = app.http.client();
    within_a_minute("the ticket is reserved by the winning order", || {
        let shown = reader.get(&format!("/api/tickets/{ticket_id}")).json();
        (shown["orderId"] == order["id"]).then_some(())
    });
    app.stop();
}

/// `scripts/install-spin-plugin.sh` with a debug build of the plugin (the release build
/// is the script's own business, too slow for the test run): what it packs is what Spin's
/// plugin installer checks, and it hands the manifest to `$SPIN plugins install`.
#[test]
fn the_install_script_packs_the_plugin_as_spin_expects() {
    use sha2::{Digest as _, Sha256};
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = workspace_root().join("scripts/install-spin-plugin.sh");
    let binary = env!("CARGO_BIN_EXE_trigger-nats");
    let run = |spin: &std::path::Path| {
        Command::new("bash")
            .arg(&script)
            .env("TRIGGER_NATS_BIN", binary)
            .env("SPIN_PLUGIN_OUT", &out)
            .env("SPIN", spin)
            .output()
            .unwrap()
    };

    // No Spin: the package is still made, and the message says where and what to run.
    let missing = run(&dir.path().join("no-such-spin"));
    let stderr = text(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-spin"), "{stderr}");
    assert!(stderr.contains("spin plugins install --file"), "{stderr}");

    let manifest_path = out.join("trigger-nats.json");
    let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["name"], "trigger-nats");
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["license"], "Apache-2.0");
    // Spin 3.6.x and 4.0.x run it (README, "Run with `spin up`"); Spin refuses a plugin
    // whose range leaves its own version out.
    assert_eq!(manifest["spinCompatibility"], ">=3.6, <5.0");
    assert!(manifest["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    let packages = manifest["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 1);
    let package = &packages[0];
    let os = match std::env::consts::OS {
        "macos" => "macos",
        _ => "linux",
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        other => other,
    };
    assert_eq!(package["os"], os);
    assert_eq!(package["arch"], arch);
    let url = package["url"].as_str().unwrap();
    let tarball = std::path::PathBuf::from(url.strip_prefix("file://").expect("a file URL"));
    let bytes = std::fs::read(&tarball).unwrap();
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(package["sha256"], digest);

    // The tarball holds the binary named `trigger-nats`, executable, and the licence.
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let mut entries: Vec<String> = std::fs::read_dir(&unpacked)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["LICENSE", "trigger-nats"]);
    let packed = unpacked.join("trigger-nats");
    assert_eq!(
        std::fs::read(&packed).unwrap(),
        std::fs::read(binary).unwrap()
    );
    assert_ne!(
        std::fs::metadata(&packed).unwrap().permissions().mode() & 0o111,
        0
    );
    let licence = std::fs::read_to_string(unpacked.join("LICENSE")).unwrap();
    assert!(licence.contains("Apache License"), "{licence:.200}");

    // With a Spin: `spin plugins install --file <manifest> --yes`.
    let fake_spin = dir.path().join("spin");
    let recorded = dir.path().join("spin-args");
    std::fs::write(
        &fake_spin,
        format!("#!/bin/sh\necho \"$@\" > {}\n", recorded.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake_spin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let installed = run(&fake_spin);
    assert!(installed.status.success(), "{}", text(&installed.stderr));
    assert_eq!(
        std::fs::read_to_string(&recorded).unwrap().trim(),
        format!("plugins install --file {} --yes", manifest_path.display())
    );
}

/// deploy/nats.conf: NATS with JetStream and its MQTT listener. A QoS 1 MQTT publish to
/// `ticketing/order/created`, as Spin's outbound MQTT sends it from an HTTP component, lands
/// on the stream the plugin created, and the plugin's listener acts on it.
#[test]
fn an_mqtt_publish_reaches_the_plugins_stream_and_listeners() {
    let nats = ConfiguredNats::start(&workspace_root().join("deploy/nats.conf"));
    let (nats_url, mqtt_port) = (nats.url(), nats.mqtt_port);
    let app = SpinUp::start_on(900, nats_url.clone(), Box::new(nats));
    let ticket = sell(&app, "Jazz", 12.5);
    let ticket_id = ticket["id"].as_str().unwrap();

    let order_id = "65f0c0de0123456789abcdef";
    let event = json!({
        "id": order_id,
        "version": 0,
        "status": "created",
        "userId": "65f0c0de00000000000000aa",
        "expiresAt": "2099-01-01T00:00:00Z",
        "ticket": { "id": ticket_id, "price": 12.5 },
    })
    .to_string();
    mqtt_publish_qos1(
        mqtt_port,
        "orders-test-0001",
        "ticketing/order/created",
        event.as_bytes(),
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stored = runtime.block_on(async {
        // The plugin created the stream.
        support::traffic::ticketing_stream(&nats_url)
            .await
            .get_last_raw_message_by_subject("ticketing.order.created")
            .await
            .expect("the publish is on the stream")
    });
    assert_eq!(stored.payload, event.as_bytes());

    let mut reader = app.http.client();
    within_a_minute("the plugin's tickets listener reserved the ticket", || {
        let shown = reader.get(&format!("/api/tickets/{ticket_id}")).json();
        (shown["orderId"] == order_id).then_some(())
    });
    app.stop();
}

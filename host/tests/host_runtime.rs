//! The host itself, through a test-only component (`components/testbed`): runaway and
//! crashing components fail only their own request, key-value semantics through the real
//! Wasm interfaces on both backends, variables, restarts and graceful shutdown.
mod support;

use std::time::{Duration, Instant};
use support::*;

fn testbed(backend: Backend) -> Host {
    HostConfig::testbed(backend)
        .arg("--request-timeout")
        .arg("2")
        .start()
}

#[test]
fn a_runaway_component_fails_its_own_request_and_the_host_keeps_serving() {
    let mut host = testbed(Backend::Embedded);
    let client = host.client();
    let busy = {
        let mut c = client.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            (c.get("/testbed/loop"), started.elapsed())
        })
    };
    // While the loop burns its deadline, other requests are served.
    std::thread::sleep(Duration::from_millis(300));
    let mut c = client.clone();
    for _ in 0..5 {
        let ok = c.get("/testbed/ok");
        assert_eq!((ok.status, ok.body.as_str()), (200, "ok"));
    }
    let (reply, took) = busy.join().unwrap();
    assert!(
        reply.status == 500 || reply.status == 503,
        "{} {}",
        reply.status,
        reply.body
    );
    assert_eq!(reply.error_messages().len(), 1, "{}", reply.body);
    assert!(
        took < Duration::from_secs(10),
        "stopped at the 2 s deadline, took {took:?}"
    );
    assert!(host.is_running());
    assert_eq!(c.get("/testbed/ok").status, 200);
    assert!(
        host.log().contains("testbed"),
        "the failure is logged with the component id"
    );
}

#[test]
fn a_trap_or_memory_hog_is_a_500_with_the_error_envelope() {
    let mut host = testbed(Backend::Embedded);
    let mut c = host.client();
    for path in ["/testbed/trap", "/testbed/memory", "/testbed/trap"] {
        c.get(path).assert_error(500, &["Something went wrong"]);
        assert_eq!(c.get("/testbed/ok").status, 200, "served after {path}");
    }
    assert!(host.is_running());
    let log = host.log();
    assert!(
        log.contains("testbed") && log.to_lowercase().contains("panic"),
        "trap logged:\n{log}"
    );
}

#[test]
fn concurrent_crashes_do_not_disturb_healthy_requests() {
    // None of these paths loops, so the deadline only has to outlast a loaded machine: eight
    // guests filling their memory at once may take seconds, and a request past its deadline
    // answers 503, not the 500 of a failed guest.
    let host = HostConfig::testbed(Backend::Embedded)
        .arg("--request-timeout")
        .arg("60")
        .start();
    let client = host.client();
    let replies = at_once(24, move |i| {
        let path = ["/testbed/trap", "/testbed/ok", "/testbed/memory"][i % 3];
        (path, client.clone().get(path).status)
    });
    for (path, status) in replies {
        let want = if path == "/testbed/ok" { 200 } else { 500 };
        assert_eq!(status, want, "{path}");
    }
}

#[test]
fn key_value_semantics_hold_on_both_backends() {
    let redis = Redis::start();
    for backend in [Backend::Embedded, Backend::Redis(redis.url())] {
        let host = testbed(backend);
        let mut c = host.client();
        assert_eq!(c.get("/testbed/kv/missing").status, 404);
        assert_eq!(
            c.send("PUT", "/testbed/kv/k1", Some("v1".into()), None)
                .status,
            200
        );
        assert_eq!(c.get("/testbed/kv/k1").body, "v1");
        // Spin's key-value interface and wasi:keyvalue see the same store.
        assert_eq!(c.get("/testbed/spin-kv/k1").body, "v1");
        assert_eq!(
            c.send("PUT", "/testbed/spin-kv/k2", Some("v2".into()), None)
                .status,
            200
        );
        assert_eq!(c.get("/testbed/kv/k2").body, "v2");
        let mut keys: Vec<String> = serde_json::from_str(&c.get("/testbed/keys").body).unwrap();
        keys.sort();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(c.delete("/testbed/kv/k1").status, 200);
        assert_eq!(c.get("/testbed/kv/k1").status, 404);

        assert_eq!(
            c.send("POST", "/testbed/kv/n/increment?by=5", None, None)
                .body,
            "5"
        );
        assert_eq!(
            c.send("POST", "/testbed/kv/n/increment?by=-2", None, None)
                .body,
            "3"
        );

        // Compare-and-swap makes read-modify-write atomic across concurrent instances.
        let client = host.client();
        let replies = at_once(20, move |_| {
            client
                .clone()
                .send("POST", "/testbed/kv/counter/cas-increment", None, None)
        });
        let mut written: Vec<u64> = replies
            .iter()
            .map(|r| {
                assert_eq!(r.status, 200, "{}", r.body);
                r.json()["value"].as_u64().unwrap()
            })
            .collect();
        written.sort();
        assert_eq!(written, (1..=20).collect::<Vec<_>>(), "no lost update");
        assert_eq!(c.get("/testbed/kv/counter").body, "20");
    }
    assert_eq!(
        redis.command("EXISTS counter"),
        ":1",
        "the Redis backend wrote to Redis"
    );
}

#[test]
fn variables_resolve_templates_and_environment_overrides() {
    let host = testbed(Backend::Embedded);
    let mut c = host.client();
    assert_eq!(c.get("/testbed/var/greeting").body, "hello, world");
    assert_eq!(c.get("/testbed/var/secret_length_check").body, JWT_SECRET);
    assert_eq!(c.get("/testbed/var/not_declared").status, 404);

    let host = HostConfig::testbed(Backend::Embedded)
        .var("greeting", "bonjour")
        .start();
    assert_eq!(
        host.client().get("/testbed/var/greeting").body,
        "bonjour, world"
    );
}

#[test]
fn without_runtime_config_a_missing_secret_gets_a_logged_development_value() {
    let mut config = HostConfig::testbed(Backend::Embedded);
    config.env.clear();
    let host = config.start();
    let secret = host.client().get("/testbed/var/secret_length_check").body;
    assert!(
        secret.len() >= 32,
        "a random development secret: {secret:?}"
    );
    assert!(
        host.log().contains("jwt_secret"),
        "the development secret is announced:\n{}",
        host.log()
    );
    // It is kept in the state dir, so sessions survive a restart.
    let host = host.restart();
    assert_eq!(
        host.client().get("/testbed/var/secret_length_check").body,
        secret
    );
}

#[test]
fn with_a_runtime_config_a_missing_secret_is_a_startup_error() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("runtime-config.toml");
    std::fs::write(
        &rc,
        format!(
            "[key_value_store.testbed]\ntype = \"redis\"\nurl = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ticketing"))
        .args(["up", "--listen", "127.0.0.1:0", "--from"])
        .arg(testbed_manifest())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-config-file")
        .arg(&rc)
        .env_remove("SPIN_VARIABLE_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("jwt_secret") && stderr.contains("SPIN_VARIABLE_JWT_SECRET"),
        "{stderr}"
    );
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let run = |manifest: &str, rc: Option<&str>| {
        let m = dir.path().join("spin.toml");
        std::fs::write(&m, manifest).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ticketing"));
        cmd.args(["up", "--listen", "127.0.0.1:0", "--from"])
            .arg(&m)
            .arg("--state-dir")
            .arg(dir.path().join("s"));
        if let Some(rc) = rc {
            let p = dir.path().join("rc.toml");
            std::fs::write(&p, rc).unwrap();
            cmd.arg("--runtime-config-file").arg(p);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "accepted:\n{manifest}");
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
    };
    let base = std::fs::read_to_string(testbed_manifest())
        .unwrap()
        .replace(
            "../../../target",
            &format!("{}/target", workspace_root().display()),
        );
    assert!(run(&format!("{base}\n[surprise]\nkey = 1\n"), None).contains("surprise"));
    assert!(
        run(&base.replace("key_value_stores", "key_value_storez"), None)
            .contains("key_value_storez")
    );
    assert!(run(&base, Some("[nats]\nurl = \"nats://x\"\n")).contains("nats"));
    assert!(run(&base, Some("[key_value_store.testbed]\ntype = \"redis\"\n")).contains("url"));
}

#[test]
fn embedded_data_survives_a_restart() {
    let host = testbed(Backend::Embedded);
    let mut c = host.client();
    c.send(
        "PUT",
        "/testbed/kv/kept",
        Some("across restarts".into()),
        None,
    );
    let host = host.restart();
    assert_eq!(
        host.client().get("/testbed/kv/kept").body,
        "across restarts"
    );
}

#[test]
fn ctrl_c_finishes_requests_in_flight() {
    let mut host = testbed(Backend::Embedded);
    let c = host.client();
    let slow = std::thread::spawn(move || c.clone().get("/testbed/sleep?ms=1500"));
    std::thread::sleep(Duration::from_millis(400));
    host.signal("INT");
    let reply = slow.join().unwrap();
    assert_eq!(
        reply.status, 200,
        "the request in flight completes: {}",
        reply.body
    );
    let status = host.stop();
    assert!(status.success(), "clean exit: {status}");
}

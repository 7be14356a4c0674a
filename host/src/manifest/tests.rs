use super::*;

fn parse(text: &str) -> anyhow::Result<Manifest> {
    Manifest::parse(text, "/app/spin.toml".into(), "/app".into())
}

fn error(text: &str) -> String {
    format!("{:#}", parse(text).unwrap_err())
}

const VALID: &str = r#"
spin_manifest_version = 2

[application]
name = "ticketing"
version = "0.1.0"
authors = ["someone"]
[application.trigger.nats]
url = "nats://localhost:4222"

[variables]
jwt_secret = { required = true, secret = true }
greeting = { default = "hello", description = "said first" }

[[trigger.http]]
route = "/api/users/..."
component = "auth"

[[trigger.http]]
id = "hidden"
route = { private = true }
component = "auth"

[[trigger.nats]]
component = "orders"
subject = "ticketing.ticket.*"

[component.auth]
source = "target/auth.wasm"
key_value_stores = ["auth", "my-store"]
allowed_outbound_hosts = ["https://api.stripe.com"]
environment = { RUST_LOG = "info" }
[component.auth.variables]
jwt_secret = "{{ jwt_secret }}"
hello = "{{ greeting }}, world"
[component.auth.build]
command = ["echo one", "echo two"]
workdir = "components/auth"
watch = ["src/**/*.rs"]

[component.orders]
source = "target/orders.wasm"
"#;

#[test]
fn reads_a_full_manifest() {
    let m = parse(VALID).unwrap();
    assert_eq!(m.application.name, "ticketing");
    assert_eq!(
        m.application.trigger["nats"]["url"].as_str(),
        Some("nats://localhost:4222")
    );
    assert!(m.variables["jwt_secret"].required && m.variables["jwt_secret"].secret);
    assert_eq!(m.variables["greeting"].default.as_deref(), Some("hello"));
    assert_eq!(
        m.http_triggers,
        vec![
            HttpTrigger {
                id: None,
                component: "auth".into(),
                route: HttpRoute::Path("/api/users/...".into()),
            },
            HttpTrigger {
                id: Some("hidden".into()),
                component: "auth".into(),
                route: HttpRoute::Private,
            },
        ]
    );
    assert_eq!(m.other_triggers["nats"].len(), 1);
    assert_eq!(
        m.other_triggers["nats"][0]["subject"].as_str(),
        Some("ticketing.ticket.*")
    );
    let auth = &m.components["auth"];
    assert_eq!(auth.key_value_stores, ["auth", "my-store"]);
    assert_eq!(auth.environment["RUST_LOG"], "info");
    let build = auth.build.as_ref().unwrap();
    assert_eq!(build.command.as_slice(), ["echo one", "echo two"]);
    assert_eq!(build.workdir.as_deref(), Some("components/auth"));
    assert_eq!(
        m.component_source("auth").unwrap(),
        PathBuf::from("/app/target/auth.wasm")
    );
    assert_eq!(m.key_value_labels(), ["auth", "my-store"]);
}

#[test]
fn single_build_command() {
    let m = parse(&VALID.replace(
        r#"command = ["echo one", "echo two"]"#,
        r#"command = "cargo build""#,
    ))
    .unwrap();
    let build = m.components["auth"].build.as_ref().unwrap();
    assert_eq!(build.command.as_slice(), ["cargo build"]);
}

#[test]
fn unknown_keys_are_errors_where_spin_rejects_them() {
    let cases = [
        (
            "spin_manifest_version = 2",
            "spin_manifest_version = 2\nextra = 1",
        ),
        (
            "version = \"0.1.0\"",
            "version = \"0.1.0\"\nlicense = \"x\"",
        ),
        (
            "greeting = { default = \"hello\", description = \"said first\" }",
            "greeting = { default = \"hello\", sensitive = true }",
        ),
        (
            "source = \"target/orders.wasm\"",
            "source = \"target/orders.wasm\"\nmemory = 5",
        ),
        (
            "watch = [\"src/**/*.rs\"]",
            "watch = [\"src/**/*.rs\"]\nenv = 1",
        ),
        (
            "component = \"auth\"\n\n[[trigger.http]]",
            "component = \"auth\"\nmethod = \"GET\"\n\n[[trigger.http]]",
        ),
    ];
    for (from, to) in cases {
        let text = VALID.replacen(from, to, 1);
        assert_ne!(text, VALID, "test case {from:?} did not apply");
        let err = error(&text);
        assert!(err.contains("unknown field"), "{to:?}: {err}");
    }
}

#[test]
fn other_trigger_types_keep_any_keys() {
    let text = VALID.replace(
        "subject = \"ticketing.ticket.*\"",
        "subject = \"x\"\nanything = { goes = true }",
    );
    let m = parse(&text).unwrap();
    assert!(m.other_triggers["nats"][0].contains_key("anything"));
}

#[test]
fn variables_need_exactly_one_of_required_and_default() {
    for bad in [
        "greeting = { description = \"neither\" }",
        "greeting = { required = true, default = \"both\" }",
        "greeting = { required = false }",
    ] {
        let text = VALID.replace(
            "greeting = { default = \"hello\", description = \"said first\" }",
            bad,
        );
        let err = error(&text);
        assert!(err.contains("[variables.greeting]"), "{bad}: {err}");
        assert!(err.contains("exactly one"), "{bad}: {err}");
    }
}

#[test]
fn variable_and_component_ids_follow_spin_syntax() {
    let err = error(&VALID.replace("greeting = {", "Greeting = {"));
    assert!(err.contains("lower_snake_case"), "{err}");
    let err = error(&VALID.replace("[component.orders]", "[component.Orders]"));
    assert!(err.contains("kebab-case"), "{err}");
    let err = error(&VALID.replace("[component.orders]", "[component.orders_svc]"));
    assert!(err.contains("kebab-case"), "{err}");
}

#[test]
fn component_variables_must_refer_to_declared_application_variables() {
    let err = error(&VALID.replace("{{ greeting }}, world", "{{ farewell }}"));
    assert!(err.contains("[component.auth]"), "{err}");
    assert!(err.contains("farewell"), "{err}");
    let err = error(&VALID.replace("{{ greeting }}, world", "{{ greeting"));
    assert!(err.contains("unclosed"), "{err}");
}

#[test]
fn triggers_must_name_declared_components() {
    let err = error(&VALID.replace(
        "component = \"auth\"\n\n[[trigger.http]]",
        "component = \"nope\"\n\n[[trigger.http]]",
    ));
    assert!(err.contains("[[trigger.http]] #1"), "{err}");
    assert!(err.contains("nope"), "{err}");
    let err = error(&VALID.replace("component = \"orders\"", "component = \"nope\""));
    assert!(err.contains("[[trigger.nats]] #1"), "{err}");
}

#[test]
fn wrong_version_and_unsupported_features_are_explained() {
    let err = error(&VALID.replace("spin_manifest_version = 2", "spin_manifest_version = 1"));
    assert!(err.contains("must be 2"), "{err}");
    let err = error(&VALID.replace(
        "source = \"target/orders.wasm\"",
        "source = { url = \"https://x/y.wasm\", digest = \"sha256:00\" }",
    ));
    assert!(err.contains("not supported by this host"), "{err}");
    let err = error(&VALID.replace(
        "source = \"target/orders.wasm\"",
        "source = \"o.wasm\"\nfiles = [\"assets/*\"]",
    ));
    assert!(err.contains("`files` is not supported"), "{err}");
    let err = error(&VALID.replace("route = \"/api/users/...\"", "route = \"api/users\""));
    assert!(err.contains("must start with `/`"), "{err}");
}

#[test]
fn the_apps_manifest_and_testbed_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let m = Manifest::load(&root.join("spin.toml")).unwrap();
    assert!(!m.http_triggers.is_empty());
    assert!(m.variables.contains_key("jwt_secret"));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/testbed.toml");
    if fixture.exists() {
        Manifest::load(&fixture).unwrap();
    }
}

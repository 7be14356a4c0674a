use super::*;

fn declared() -> BTreeMap<String, Variable> {
    let text = r#"
        jwt_secret = { required = true, secret = true }
        api_key = { required = true }
        session_ttl_seconds = { default = "86400" }
    "#;
    toml::from_str(text).unwrap()
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn resolve(
    providers: &[VariablesProvider],
    env: &[(&str, &str)],
    dev: Option<&DevSecrets>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let env = env_of(env);
    resolve_application(
        &declared(),
        &Sources {
            providers,
            env: &env,
            dev_secrets: dev,
        },
    )
}

#[test]
fn env_then_default() {
    let values = resolve(
        &[],
        &[
            ("SPIN_VARIABLE_JWT_SECRET", "from-env"),
            ("SPIN_VARIABLE_API_KEY", "k"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(values["jwt_secret"], "from-env");
    assert_eq!(values["api_key"], "k");
    assert_eq!(values["session_ttl_seconds"], "86400");

    let values = resolve(
        &[],
        &[
            ("SPIN_VARIABLE_JWT_SECRET", "s"),
            ("SPIN_VARIABLE_API_KEY", "k"),
            ("SPIN_VARIABLE_SESSION_TTL_SECONDS", "60"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(values["session_ttl_seconds"], "60", "env beats default");
}

#[test]
fn static_provider_beats_env_and_env_prefixes_apply() {
    let providers = [
        VariablesProvider::Env {
            prefix: Some("TICKETING".into()),
        },
        VariablesProvider::Static {
            values: [("jwt_secret".to_owned(), "from-static".to_owned())].into(),
        },
    ];
    let values = resolve(
        &providers,
        &[
            ("SPIN_VARIABLE_JWT_SECRET", "from-env"),
            ("TICKETING_API_KEY", "prefixed"),
        ],
        None,
    )
    .unwrap();
    assert_eq!(values["jwt_secret"], "from-static");
    assert_eq!(values["api_key"], "prefixed");
}

#[test]
fn missing_required_variables_are_named_with_how_to_set_them() {
    let err = format!("{:#}", resolve(&[], &[], None).unwrap_err());
    assert!(err.contains("`api_key`"), "{err}");
    assert!(err.contains("SPIN_VARIABLE_API_KEY"), "{err}");
    assert!(err.contains("`jwt_secret`"), "{err}");
    assert!(err.contains("SPIN_VARIABLE_JWT_SECRET"), "{err}");
}

#[test]
fn development_mode_generates_and_keeps_required_secrets_only() {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevSecrets::in_state_dir(&dir.path().join("state"));

    // A required non-secret variable is still an error in development mode.
    let err = format!("{:#}", resolve(&[], &[], Some(&dev)).unwrap_err());
    assert!(err.contains("`api_key`"), "{err}");
    assert!(!err.contains("`jwt_secret`"), "{err}");

    let env = [("SPIN_VARIABLE_API_KEY", "k")];
    let first = resolve(&[], &env, Some(&dev)).unwrap();
    let secret = first["jwt_secret"].clone();
    assert_eq!(secret.len(), 64);
    assert!(dev.path().exists());

    // Restarting reuses the kept value.
    let again = resolve(&[], &env, Some(&dev)).unwrap();
    assert_eq!(again["jwt_secret"], secret);

    // A real value wins over the generated one.
    let env = [
        ("SPIN_VARIABLE_API_KEY", "k"),
        ("SPIN_VARIABLE_JWT_SECRET", "real"),
    ];
    assert_eq!(
        resolve(&[], &env, Some(&dev)).unwrap()["jwt_secret"],
        "real"
    );
}

#[test]
fn component_variables_render_application_variables() {
    let component: Component = toml::from_str(
        r#"
        source = "x.wasm"
        [variables]
        jwt_secret = "{{ jwt_secret }}"
        greeting = "{{ greeting }}, world"
        constant = "plain"
        "#,
    )
    .unwrap();
    let app: BTreeMap<String, String> = [("jwt_secret", "s"), ("greeting", "hello")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let values = resolve_component("x", &component, &app).unwrap();
    assert_eq!(values["jwt_secret"], "s");
    assert_eq!(values["greeting"], "hello, world");
    assert_eq!(values["constant"], "plain");
}

//! What the HTTP components need from their host is what Spin 3.6 and Spin 4.0 both provide,
//! so `spin up` (either version) and SpinKube's shim (Spin 3.6.3) can run them: every
//! import of every component routed by spin.toml is in the set of interfaces both
//! versions link, and each exports `wasi:http/incoming-handler@0.2.x`.
//!
//! The set, from spinframework/spin at v3.6.3 and v4.0.2 (`crates/world`, the
//! `fermyon:spin@2.0.0` platform world; `crates/factor-key-value` and
//! `crates/factor-outbound-mqtt` link the 2.0.0 interfaces and `wasi:keyvalue@0.2.0-draft2`
//! in both; `crates/factor-outbound-http`; WASI 0.2 through wasmtime): WASI 0.2.x
//! (`io`, `clocks`, `random`, `cli`, `filesystem`, `sockets`, `http` outgoing),
//! `fermyon:spin/{key-value, variables, mqtt}@2.0.0`, `wasi:keyvalue/{store, atomics,
//! batch}@0.2.0-draft2`. What else may differ between the two, the WASI HTTP resource rules,
//! is covered by `compat/spin-wasmtime42`: wasmtime 44 (Spin 4.0.2) only relaxed wasmtime
//! 42's (Spin 3.6.3) rule that a request's headers are its children (wasmtime PR #12754), so
//! a component that runs on 42's rules runs on 44's.
mod support;

use std::collections::BTreeMap;

use support::{app_manifest, ensure_built, workspace_root};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// Interfaces both Spin 3.6.x and 4.0.x provide to an HTTP component, as
/// `(package and interface, allowed versions)`: `0.2` allows any 0.2.x (WASI 0.2 is
/// semver-compatible), anything else must match exactly.
const PROVIDED_BY_SPIN_3_6_AND_4_0: &[(&str, &str)] = &[
    ("wasi:io/", "0.2"),
    ("wasi:clocks/", "0.2"),
    ("wasi:random/", "0.2"),
    ("wasi:cli/", "0.2"),
    ("wasi:filesystem/", "0.2"),
    ("wasi:sockets/", "0.2"),
    ("wasi:http/types", "0.2"),
    ("wasi:http/outgoing-handler", "0.2"),
    ("fermyon:spin/key-value", "2.0.0"),
    ("fermyon:spin/variables", "2.0.0"),
    ("fermyon:spin/mqtt", "2.0.0"),
    ("wasi:keyvalue/store", "0.2.0-draft2"),
    ("wasi:keyvalue/atomics", "0.2.0-draft2"),
    ("wasi:keyvalue/batch", "0.2.0-draft2"),
];

fn provided(name: &str) -> bool {
    let Some((interface, version)) = name.split_once('@') else {
        return false;
    };
    PROVIDED_BY_SPIN_3_6_AND_4_0
        .iter()
        .any(|(prefix, allowed)| {
            let interface_matches = if prefix.ends_with('/') {
                interface.starts_with(prefix)
            } else {
                interface == *prefix
            };
            interface_matches
                && (version == *allowed || version.starts_with(&format!("{allowed}.")))
        })
}

/// The components spin.toml routes HTTP to, with their `.wasm` files.
fn http_components() -> BTreeMap<String, std::path::PathBuf> {
    let manifest: toml::Table = std::fs::read_to_string(app_manifest())
        .unwrap()
        .parse()
        .unwrap();
    manifest["trigger"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|trigger| {
            let id = trigger["component"].as_str().unwrap().to_owned();
            let source = manifest["component"][&id]["source"].as_str().unwrap();
            (id, workspace_root().join(source))
        })
        .collect()
}

#[test]
fn the_http_components_use_only_what_spin_3_6_and_4_0_both_provide() {
    ensure_built();
    let mut config = Config::new();
    config.wasm_component_model(true);
    let engine = Engine::new(&config).unwrap();
    let mut problems = Vec::new();
    let components = http_components();
    assert!(components.len() >= 5, "{components:?}");
    for (id, path) in &components {
        let component = Component::from_file(&engine, path)
            .unwrap_or_else(|e| panic!("{id}: loading {}: {e:#}", path.display()));
        let ty = component.component_type();
        if ty.imports(&engine).len() == 0 {
            problems.push(format!(
                "{id}: no imports read (the check would prove nothing)"
            ));
        }
        for (name, item) in ty.imports(&engine) {
            if !matches!(item.ty, ComponentItem::ComponentInstance(_)) || !provided(name) {
                problems.push(format!("{id} imports {name}, which Spin 3.6 or 4.0 lacks"));
            }
        }
        let handler = ty
            .exports(&engine)
            .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2."));
        if !handler {
            problems.push(format!("{id} exports no wasi:http/incoming-handler@0.2.x"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_tells_spins_interfaces_from_others() {
    assert!(provided("wasi:io/streams@0.2.0"));
    assert!(provided("wasi:http/types@0.2.6"));
    assert!(provided("fermyon:spin/key-value@2.0.0"));
    assert!(provided("wasi:keyvalue/atomics@0.2.0-draft2"));
    assert!(!provided("wasi:http/types@0.3.0-rc-2026-03-15"));
    assert!(!provided("wasi:io/streams@0.20.0"));
    assert!(!provided("fermyon:spin/key-value@3.0.0"));
    assert!(!provided("ticketing:platform/scheduler"));
    assert!(!provided("wasi:keyvalue/store@0.2.0-draft"));
}

//! `cargo run` after `cargo test --workspace` (and the other way round) compiles nothing
//! twice: every unit `cargo build` needs for the host is one the test build has already
//! compiled, with the same features and dependencies. `workspace-hack/Cargo.toml` keeps it
//! so; this test names the units that differ when a dependency change breaks it.
//!
//! The unit graphs come from cargo itself (`--unit-graph`, which plans a build without
//! running it). That flag is still unstable, hence `RUSTC_BOOTSTRAP=1` on the toolchain
//! rust-toolchain.toml pins.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn unit_graph(args: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(root)
        .args(args)
        .args(["--locked", "-Z", "unstable-options", "--unit-graph"])
        .env("RUSTC_BOOTSTRAP", "1")
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo {args:?} --unit-graph failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("unit graph JSON")
}

/// Each unit as a string that is equal for two units exactly when cargo would build them
/// the same: package, target, mode, features, profile settings (not the profile's name,
/// which cargo leaves out of its hashes too) and, recursively, the same for its
/// dependencies. Mapped to a readable name.
fn units(graph: &Value) -> HashMap<String, String> {
    let units = graph["units"].as_array().expect("units");
    let mut ids: Vec<Option<String>> = vec![None; units.len()];
    fn id(i: usize, units: &[Value], ids: &mut Vec<Option<String>>) -> String {
        if let Some(id) = &ids[i] {
            return id.clone();
        }
        let mut unit = units[i].clone();
        let dependencies = unit
            .as_object_mut()
            .unwrap()
            .remove("dependencies")
            .unwrap_or_default();
        unit["profile"].as_object_mut().unwrap().remove("name");
        let mut deps: Vec<String> = dependencies
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let index = d["index"].as_u64().unwrap() as usize;
                format!("{}={}", d["extern_crate_name"], id(index, units, ids))
            })
            .collect();
        deps.sort();
        // serde_json's maps are sorted, so equal units print equally.
        let text = format!("{unit}|{}", deps.join(","));
        let digest = format!("{:x}", fnv1a(text.as_bytes()));
        ids[i] = Some(digest.clone());
        digest
    }
    (0..units.len())
        .map(|i| {
            let unit = &units[i];
            let package = unit["pkg_id"].as_str().unwrap();
            let package = package.rsplit('#').next().unwrap_or(package);
            let name = format!(
                "{package} {} ({})",
                unit["target"]["name"].as_str().unwrap(),
                unit["mode"].as_str().unwrap()
            );
            (id(i, units, &mut ids), name)
        })
        .collect()
}

/// A stable digest without another dependency: FNV-1a over 128 bits is plenty to tell a
/// few thousand unit descriptions apart.
fn fnv1a(bytes: &[u8]) -> u128 {
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for byte in bytes {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
    }
    hash
}

#[test]
fn cargo_run_reuses_the_test_build() {
    let run = units(&unit_graph(&["build"]));
    let test = units(&unit_graph(&["test", "--workspace", "--no-run"]));
    let rebuilt: BTreeSet<&String> = run
        .iter()
        .filter(|(id, _)| !test.contains_key(*id))
        .map(|(_, name)| name)
        .collect();
    assert!(
        run.len() > 100,
        "the host's build has {} units: not a real plan",
        run.len()
    );
    assert!(
        rebuilt.is_empty(),
        "`cargo build` would compile {} units that `cargo test --workspace` builds \
         differently (add the features the test build gives them to workspace-hack/Cargo.toml; \
         compare with `cargo tree -e features -i <crate>` in both modes):\n{}",
        rebuilt.len(),
        rebuilt
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

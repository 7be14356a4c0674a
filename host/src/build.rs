//! `ticketing build` (and `ticketing up --build`): runs each component's
//! `[component.<id>.build] command`s like `spin build` does.
//!
//! Each command runs through `sh -c` in the component's `workdir` (relative to spin.toml's
//! directory, which is also the default), in order, with its output streamed to ours. The
//! first failing command stops the build with an error naming the component.

use std::process::Command;

use anyhow::{bail, Context as _};

use crate::manifest::Manifest;

pub fn build_components(manifest: &Manifest) -> anyhow::Result<()> {
    let mut built = 0;
    for (id, component) in &manifest.components {
        let Some(build) = &component.build else {
            tracing::info!(component = %id, "no build command; skipping");
            continue;
        };
        let workdir = match &build.workdir {
            Some(workdir) => manifest.dir.join(workdir),
            None => manifest.dir.clone(),
        };
        for command in build.command.as_slice() {
            tracing::info!(component = %id, workdir = %workdir.display(), "building: {command}");
            let status = Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(&workdir)
                .status()
                .with_context(|| {
                    format!(
                        "component `{id}`: cannot run `{command}` in {}",
                        workdir.display()
                    )
                })?;
            if !status.success() {
                bail!("build of component `{id}` failed: `{command}` exited with {status}");
            }
        }
        built += 1;
    }
    tracing::info!(components = built, "build finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn manifest(dir: &Path, components: &str) -> Manifest {
        let text = format!("spin_manifest_version = 2\n[application]\nname = \"t\"\n{components}");
        Manifest::parse(&text, dir.join("spin.toml"), dir.to_path_buf()).unwrap()
    }

    #[test]
    fn runs_commands_in_order_in_the_workdir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let m = manifest(
            dir.path(),
            r#"
            [component.a]
            source = "a.wasm"
            [component.a.build]
            command = ["echo one > out.txt", "echo two >> out.txt"]
            workdir = "sub"
            [component.b]
            source = "b.wasm"
            [component.b.build]
            command = "pwd > where.txt"
            [component.c]
            source = "c.wasm"
            "#,
        );
        build_components(&m).unwrap();
        let out = std::fs::read_to_string(dir.path().join("sub/out.txt")).unwrap();
        assert_eq!(out, "one\ntwo\n");
        let wd = std::fs::read_to_string(dir.path().join("where.txt")).unwrap();
        assert_eq!(
            Path::new(wd.trim()).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }

    #[test]
    fn a_failing_command_names_the_component_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest(
            dir.path(),
            r#"
            [component.broken]
            source = "x.wasm"
            [component.broken.build]
            command = ["exit 3", "touch never"]
            "#,
        );
        let err = build_components(&m).unwrap_err().to_string();
        assert!(err.contains("component `broken`"), "{err}");
        assert!(err.contains("exit 3"), "{err}");
        assert!(!dir.path().join("never").exists());
    }
}

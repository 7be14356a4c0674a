//! The repository depends on nothing beside it: no tracked file names a path that leaves the
//! repository (`../something` climbing above its root, from the file's own directory), so a
//! user's clone has everything its commands and tests read.
mod support;

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use support::workspace_root;

/// Climbing paths that are no reference to anything outside, each with why.
const NOT_REFERENCES: [(&str, &str); 2] = [
    // A path traversal probe: test data, checked to be no id.
    ("components/common/src/ids.rs", "../../../../etc/passwd0000"),
    // The fixture manifest's component paths, relative to host/tests/fixtures/.
    ("host/tests/host_runtime.rs", "../../../target"),
];

#[test]
fn no_tracked_file_refers_to_a_path_outside_the_repository() {
    let root = workspace_root();
    let listed = Command::new("git")
        .current_dir(&root)
        .args(["ls-files", "-z"])
        .output()
        .expect("run git");
    assert!(listed.status.success(), "git ls-files failed");
    let mut outside = Vec::new();
    for file in listed.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let file = Path::new(std::str::from_utf8(file).unwrap());
        // This file names such paths to check them.
        if file == Path::new("host/tests/self_contained.rs") {
            continue;
        }
        // Deleted in the work tree, or not text: nothing to read.
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        let dir = file.parent().unwrap_or(Path::new(""));
        for (line_number, line) in text.lines().enumerate() {
            for reference in climbing_paths(line) {
                let known = NOT_REFERENCES
                    .iter()
                    .any(|(path, text)| file == Path::new(path) && reference == *text);
                if !known && leaves_the_root(&dir.join(&reference)) {
                    outside.push(format!(
                        "{}:{}: {reference}",
                        file.display(),
                        line_number + 1
                    ));
                }
            }
        }
    }
    assert!(
        outside.is_empty(),
        "tracked files refer to paths outside the repository:\n{}",
        outside.join("\n")
    );
}

/// Every relative path in `line` that starts by going up (`../x`, `../../x/y`).
fn climbing_paths(line: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("../") {
        let starts_a_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_path_char(c));
        let end = rest[at..]
            .find(|c: char| !is_path_char(c))
            .map_or(rest.len(), |n| at + n);
        if starts_a_word {
            found.push(rest[at..end].to_owned());
        }
        rest = &rest[end.max(at + 3)..];
    }
    found
}

/// Whether a path relative to the repository's root climbs above it.
fn leaves_the_root(path: &Path) -> bool {
    let mut depth: i32 = 0;
    for component in path.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

#[test]
fn climbing_paths_are_found_and_resolved_from_their_file() {
    assert_eq!(
        climbing_paths("see ../elsewhere/x.yaml and (../../a/b) but not a/../b"),
        ["../elsewhere/x.yaml", "../../a/b"]
    );
    assert!(leaves_the_root(&PathBuf::from("host/../../elsewhere/x")));
    assert!(!leaves_the_root(&PathBuf::from("host/../wit")));
    assert!(leaves_the_root(&PathBuf::from("../elsewhere")));
}

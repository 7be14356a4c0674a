//! The running app conforms to its OpenAPI document: the host serves docs/openapi.json at
//! `/api/openapi.json`, and schemathesis (installed by scripts/setup.sh) generates requests
//! from it, signed in as a user, and checks every answer: no 5xx, only documented status
//! codes, content types, headers and bodies that match their schemas. A fixed seed and a
//! bounded number of examples per operation keep the run reproducible and within a couple
//! of minutes on a loaded machine.
mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

/// Test cases schemathesis generates per operation and phase.
const MAX_EXAMPLES: u32 = 40;
const SEED: u64 = 12;

/// The checks of the contract: nothing else is accepted as a pass.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

fn schemathesis() -> PathBuf {
    let path = workspace_root().join("target/tools/schemathesis/bin/schemathesis");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/setup.sh` first",
        path.display()
    );
    path
}

#[test]
fn the_app_conforms_to_its_openapi_document() {
    let schemathesis = schemathesis();
    let host = HostConfig::app(Backend::Embedded).start();

    // The document served is the one in the repository.
    let served = host.client().get("/api/openapi.json");
    assert_eq!(served.status, 200, "{}", served.body);
    assert_eq!(
        served.header("content-type"),
        Some("application/json"),
        "the document's content type"
    );
    let committed = std::fs::read_to_string(workspace_root().join("docs/openapi.json")).unwrap();
    assert_eq!(
        served.body, committed,
        "the served document is docs/openapi.json"
    );

    let mut user = host.client();
    user.sign_up();
    let token = user.token();

    let work = tempfile::tempdir().unwrap();
    let output = Command::new(&schemathesis)
        .current_dir(work.path())
        .arg("run")
        .arg(host.url("/api/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--header", &format!("Cookie: session={token}")])
        .args(["--seed", &SEED.to_string()])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        // One worker: hypothesis reads lambdas' sources with `ast.parse`, and CPython 3.11
        // can fail that in a threaded program with "AST constructor recursion depth mismatch"
        // (python/cpython#106905, seen here with two workers): an error of the tool's.
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--generation-database", "none", "--no-color"])
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found contract violations:\n{report}\n{}\nhost log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        host.log()
    );
    // It did test the API: every operation of the document.
    let number_after = |label: &str| -> u32 {
        let at = report
            .find(label)
            .unwrap_or_else(|| panic!("{label}: {report}"))
            + label.len();
        let digits: String = report[at..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{label}: {report}"))
    };
    let (selected, tested) = (number_after("Selected:"), number_after("Tested:"));
    assert!(selected >= 13, "every operation is selected: {report}");
    assert_eq!(tested, selected, "every operation is tested: {report}");
}

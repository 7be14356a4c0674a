//! The web client in a real browser: Debian's chromium, driven by playwright-core
//! (host/tests/browser/journey.mjs), against real hosts on the embedded default. A seller
//! and a buyer sign up, sell, buy, pay and sign out through the pages; on a host with a
//! short order window an order expires and its ticket goes back on sale; on a host with a
//! Stripe publishable key the order page takes the card in Stripe's form (a stand-in for
//! Stripe.js, served in place of js.stripe.com). A screenshot of each page lands in
//! target/tmp/browser-screenshots/.
//!
//! `bash scripts/setup.sh` installs chromium and playwright-core; without them this test
//! fails (it does not skip).
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// How long an order holds its ticket on the expiry host: long enough to see the order page
/// count, short enough to wait for.
const SHORT_WINDOW_SECS: &str = "15";

/// The whole journey may take this long on a loaded machine; each step has its own timeout
/// (a minute) in the script.
const JOURNEY_DEADLINE: Duration = Duration::from_secs(15 * 60);

fn browser_dir() -> PathBuf {
    workspace_root().join("host/tests/browser")
}

/// chromium and playwright-core, or a failure saying how to get them.
fn chromium() -> PathBuf {
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    assert!(
        chromium.exists(),
        "{} is missing: run `bash scripts/setup.sh` (it installs Debian's chromium)",
        chromium.display()
    );
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.exists(),
        "playwright-core is missing: run `bash scripts/setup.sh` (npm ci in host/tests/browser)"
    );
    chromium
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_seller_and_a_buyer_use_the_app_in_a_browser() {
    let chromium = chromium();
    let app = HostConfig::app(Backend::Embedded).start();
    let expiry = HostConfig::app(Backend::Embedded)
        .var("expiration_window_seconds", SHORT_WINDOW_SECS)
        .start();
    // The script stands in for Stripe.js (no internet here); payments stay in test mode.
    let stripe = HostConfig::app(Backend::Embedded)
        .var("stripe_publishable_key", "pk_test_browser")
        .start();
    let screenshots = screenshots_dir();

    let started = Instant::now();
    let mut node = Command::new("node")
        .arg("journey.mjs")
        .current_dir(browser_dir())
        .env("APP_URL", app.url("/"))
        .env("EXPIRY_URL", expiry.url("/"))
        .env("STRIPE_URL", stripe.url("/"))
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", &screenshots)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node (installed with the machine, or by scripts/setup.sh)");
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > JOURNEY_DEADLINE {
            let _ = node.kill();
            let _ = node.wait();
            panic!(
                "the browser journey ran past {JOURNEY_DEADLINE:?}\napp log:\n{}",
                app.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "the browser journey failed (its output is above; screenshots in {})\n\
         app host log:\n{}\nexpiry host log:\n{}",
        screenshots.display(),
        app.log(),
        expiry.log()
    );
    let shots = std::fs::read_dir(&screenshots).unwrap().count();
    assert!(shots >= 10, "{shots} screenshots");
}

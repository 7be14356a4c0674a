//! The web component over plain HTTP: which paths are pages, API 404s and assets, and the
//! headers browsers rely on (media types, caching, Content-Security-Policy). The browser
//! journey itself is host/tests/browser.rs.
mod support;

use std::time::Duration;
use support::*;

/// A GET with extra headers, as (status, headers, body).
fn get(host: &Host, path: &str, headers: &[(&str, &str)]) -> ureq::Response {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .redirects(0)
        .build();
    let mut request = agent.get(&host.url(path));
    for (name, value) in headers {
        request = request.set(name, value);
    }
    match request.call() {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("GET {path}: {error}"),
    }
}

/// The `/assets/...` URLs a page refers to (its stylesheet, icon and modules).
fn asset_urls(html: &str) -> Vec<String> {
    html.split("\"/assets/")
        .skip(1)
        .map(|rest| format!("/assets/{}", rest.split('"').next().unwrap()))
        .collect()
}

#[test]
fn pages_assets_and_api_404s() {
    let host = HostConfig::app(Backend::Embedded).start();
    let mut client = host.client();

    for path in [
        "/",
        "/auth/signup",
        "/auth/signin",
        "/tickets/new",
        "/tickets/abc",
        "/orders",
        "/orders/abc",
    ] {
        let page = get(&host, path, &[]);
        assert_eq!(page.status(), 200, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(page.header("cache-control"), Some("no-cache"), "{path}");
        let csp = page.header("content-security-policy").unwrap().to_owned();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("stripe"), "no Stripe without a key: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let html = page.into_string().unwrap();
        assert!(
            html.contains("<script type=\"module\" src=\"/assets/"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "no inline script: {html}");
        assert!(!html.contains("stripe-publishable-key"));
    }

    // Unknown pages: an HTML 404 page.
    let missing = get(&host, "/no/such/page", &[]);
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(missing.into_string().unwrap().contains("Page not found"));

    // Under /api/, the API's JSON 404, for any method.
    for path in ["/api", "/api/", "/api/nothing/here", "/api/openapi.yaml"] {
        client.get(path).assert_error(404, &["Not Found"]);
    }
    client
        .post("/api/nothing", json!({}))
        .assert_error(404, &["Not Found"]);
    client.delete("/api/x").assert_error(404, &["Not Found"]);
    // Pages are only read.
    let posted = client.post("/", json!({}));
    assert_eq!(posted.status, 405);
    assert_eq!(posted.header("allow"), Some("GET, HEAD"));

    // Assets: one content per URL, cached for good, revalidated by ETag.
    let html = get(&host, "/", &[]).into_string().unwrap();
    let urls = asset_urls(&html);
    for wanted in ["app.css", "icon.svg", "app.js", "api.js", "orders.js"] {
        assert!(
            urls.iter().any(|u| u.ends_with(&format!("/{wanted}"))),
            "{wanted} in {urls:?}"
        );
    }
    for url in &urls {
        let asset = get(&host, url, &[]);
        assert_eq!(asset.status(), 200, "{url}");
        let expected_type = match url.rsplit('.').next().unwrap() {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("{url}: .{other}"),
        };
        assert_eq!(asset.header("content-type"), Some(expected_type), "{url}");
        assert_eq!(
            asset.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
        let etag = asset.header("etag").expect("an ETag").to_owned();
        assert!(!asset.into_string().unwrap().is_empty());
        let again = get(&host, url, &[("If-None-Match", &etag)]);
        assert_eq!(again.status(), 304, "{url}");
        assert_eq!(again.into_string().unwrap(), "");
    }
    // A module's relative imports resolve next to it.
    let app_js = urls.iter().find(|u| u.ends_with("/app.js")).unwrap();
    let source = get(&host, app_js, &[]).into_string().unwrap();
    assert!(source.contains("from './api.js'"), "{source}");
    // Another build's asset URL, or no such file: not found.
    let stale = app_js.replacen("/assets/", "/assets/0", 1);
    assert_eq!(get(&host, &stale, &[]).status(), 404);
    let stamp = app_js.trim_end_matches("app.js");
    assert_eq!(get(&host, &format!("{stamp}nope.js"), &[]).status(), 404);
}

#[test]
fn a_stripe_publishable_key_lets_the_pages_load_stripe_js() {
    let host = HostConfig::app(Backend::Embedded)
        .var("stripe_publishable_key", "pk_test_TYooMQauvdEDq54NiTphI7jx")
        .start();
    let page = get(&host, "/orders/abc", &[]);
    assert_eq!(page.status(), 200);
    let csp = page.header("content-security-policy").unwrap().to_owned();
    assert!(
        csp.contains("script-src 'self' https://js.stripe.com"),
        "{csp}"
    );
    assert!(csp.contains("frame-src https://js.stripe.com"), "{csp}");
    assert!(
        csp.contains("connect-src 'self' https://api.stripe.com"),
        "{csp}"
    );
    let html = page.into_string().unwrap();
    assert!(
        html.contains(
            "<meta name=\"stripe-publishable-key\" content=\"pk_test_TYooMQauvdEDq54NiTphI7jx\">"
        ),
        "{html}"
    );

    // Anything else in the variable is a configuration mistake, not markup to pass on.
    let host = HostConfig::app(Backend::Embedded)
        .var("stripe_publishable_key", "\"><script>alert(1)</script>")
        .start();
    host.client()
        .get("/")
        .assert_error(500, &["Something went wrong"]);
}

//! The pages: which paths are pages, and the HTML shell each one gets. The shell names the
//! page (`data-page` on `<main>`) and loads the modules that render it in the browser
//! (assets/app.js); a path that is no page gets a 404 page rendered here.
//!
//! Every page carries a Content-Security-Policy that allows only this origin's scripts,
//! styles and API, plus Stripe.js and its frames when a Stripe publishable key is set
//! (variable `stripe_publishable_key`). Pages are never cached without revalidation: they
//! name the current build's asset URLs.

use spin_sdk::http::Response;
use ticketing_common::{config::variable_or, http::path_segments, ApiError};

use crate::assets;

/// A page of the client; `as_str` is the `data-page` value app.js dispatches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Tickets,
    SignUp,
    SignIn,
    SignOut,
    NewTicket,
    Ticket,
    Orders,
    Order,
    NotFound,
}

impl Page {
    fn for_path(path: &str) -> Page {
        match path_segments(path).as_slice() {
            [] => Page::Tickets,
            ["auth", "signup"] => Page::SignUp,
            ["auth", "signin"] => Page::SignIn,
            ["auth", "signout"] => Page::SignOut,
            ["tickets", "new"] => Page::NewTicket,
            ["tickets", id] if !id.is_empty() => Page::Ticket,
            ["orders"] => Page::Orders,
            ["orders", id] if !id.is_empty() => Page::Order,
            _ => Page::NotFound,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Page::Tickets => "tickets",
            Page::SignUp => "signup",
            Page::SignIn => "signin",
            Page::SignOut => "signout",
            Page::NewTicket => "new-ticket",
            Page::Ticket => "ticket",
            Page::Orders => "orders",
            Page::Order => "order",
            Page::NotFound => "not-found",
        }
    }

    /// The document title until the page knows better (a ticket's title, say).
    fn title(self) -> &'static str {
        match self {
            Page::Tickets => "Tickets on sale",
            Page::SignUp => "Sign up",
            Page::SignIn => "Sign in",
            Page::SignOut => "Signing out",
            Page::NewTicket => "Sell a ticket",
            Page::Ticket => "Ticket",
            Page::Orders => "My orders",
            Page::Order => "Order",
            Page::NotFound => "Page not found",
        }
    }
}

/// The page at `path`, or the 404 page.
pub fn serve(path: &str) -> Response {
    let stripe_key = match stripe_publishable_key() {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let page = Page::for_path(path);
    let status = if page == Page::NotFound { 404 } else { 200 };
    html(status, page, stripe_key.as_deref())
}

/// The 404 page, for paths that are neither pages nor assets.
pub fn not_found() -> Response {
    html(404, Page::NotFound, None)
}

/// `stripe_publishable_key`, if set. It goes into the page, so anything but the shape of a
/// Stripe key (`pk_test_...`, `pk_live_...`) is a configuration mistake: a logged 500.
fn stripe_publishable_key() -> Result<Option<String>, ApiError> {
    let key: String = variable_or("stripe_publishable_key", String::new())?;
    let key = key.trim();
    if key.is_empty() {
        return Ok(None);
    }
    if !key.starts_with("pk_") || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "stripe_publishable_key is not a Stripe publishable key (pk_...)"
        )));
    }
    Ok(Some(key.to_owned()))
}

fn html(status: u16, page: Page, stripe_key: Option<&str>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-cache")
        .header(
            "content-security-policy",
            content_security_policy(stripe_key),
        )
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "same-origin")
        .body(shell(page, stripe_key))
        .build()
}

/// Only what the pages use: this origin's modules, styles, icon and API; Stripe.js, its
/// frames and its API only with a key. No inline script or style anywhere.
fn content_security_policy(stripe_key: Option<&str>) -> String {
    let (script, frame, connect) = match stripe_key {
        Some(_) => (
            " https://js.stripe.com https://*.js.stripe.com",
            "https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com",
            " https://api.stripe.com",
        ),
        None => ("", "'none'", ""),
    };
    format!(
        "default-src 'none'; script-src 'self'{script}; style-src 'self'; img-src 'self'; \
         connect-src 'self'{connect}; frame-src {frame}; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    )
}

fn shell(page: Page, stripe_key: Option<&str>) -> String {
    let mut head = String::new();
    if let Some(key) = stripe_key {
        // The key's characters were checked: nothing to escape.
        head.push_str(&format!(
            "<meta name=\"stripe-publishable-key\" content=\"{key}\">\n"
        ));
    }
    for module in assets::modules() {
        head.push_str(&format!(
            "<link rel=\"modulepreload\" href=\"{}\">\n",
            assets::url(module)
        ));
    }
    let main = match page {
        Page::NotFound => "<h1>Page not found</h1>\n<p>There is no page at this address. \
                           <a href=\"/\">See the tickets on sale</a>.</p>"
            .to_owned(),
        _ => "<p class=\"loading\" role=\"status\">Loading…</p>".to_owned(),
    };
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Ticketing</title>
<meta name="color-scheme" content="light dark">
<link rel="icon" href="{icon}" type="image/svg+xml">
<link rel="stylesheet" href="{css}">
{head}<script type="module" src="{app}"></script>
</head>
<body>
<a class="skip-link" href="#main">Skip to content</a>
<header class="site-header">
<nav aria-label="Main">
<a class="brand" href="/">Ticketing</a>
<ul class="nav-links" id="nav-links"></ul>
</nav>
</header>
<main id="main" data-page="{page}"{busy} tabindex="-1">
{main}
</main>
<noscript><p class="noscript">This site needs JavaScript to show tickets and orders.</p></noscript>
</body>
</html>
"##,
        title = page.title(),
        icon = assets::url("icon.svg"),
        css = assets::url("app.css"),
        app = assets::url("app.js"),
        page = page.as_str(),
        // app.js clears it once it has rendered the page.
        busy = if page == Page::NotFound {
            ""
        } else {
            " aria-busy=\"true\""
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_pages() {
        assert_eq!(Page::for_path("/"), Page::Tickets);
        assert_eq!(Page::for_path("/auth/signup"), Page::SignUp);
        assert_eq!(Page::for_path("/tickets/new"), Page::NewTicket);
        assert_eq!(Page::for_path("/tickets/abc/"), Page::Ticket);
        assert_eq!(Page::for_path("/orders"), Page::Orders);
        assert_eq!(Page::for_path("/orders/abc"), Page::Order);
        for path in ["/nope", "/tickets", "/tickets/a/b", "/orders//", "/auth"] {
            assert_eq!(Page::for_path(path), Page::NotFound, "{path}");
        }
    }

    #[test]
    fn stripe_is_allowed_only_with_a_key() {
        let without = content_security_policy(None);
        assert!(!without.contains("stripe"), "{without}");
        assert!(without.contains("frame-src 'none'"));
        let with = content_security_policy(Some("pk_test_123"));
        assert!(
            with.contains("script-src 'self' https://js.stripe.com"),
            "{with}"
        );
        assert!(
            with.contains("connect-src 'self' https://api.stripe.com"),
            "{with}"
        );
    }
}

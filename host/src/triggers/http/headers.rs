//! The request headers Spin adds for HTTP components, so a component reads the same
//! `spin-*` headers here as under `spin up`.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::router::RouteMatch;

/// Sets Spin's headers on `headers` (replacing any a client sent) for a request routed by
/// `route`. `path_and_query` is the request target, e.g. `/api/users/signup?x=1`.
pub fn set_spin_headers(
    headers: &mut HeaderMap,
    path_and_query: &str,
    route: &RouteMatch<'_, '_>,
    client: SocketAddr,
) {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let values = [
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", route.path_info.to_owned()),
        ("spin-matched-route", route.raw_route.to_owned()),
        ("spin-raw-component-route", route.raw_route.to_owned()),
        ("spin-component-route", route.component_route.to_owned()),
        ("spin-base-path", "/".to_owned()),
        ("spin-client-addr", client.to_string()),
    ];
    for (name, value) in values {
        // Request targets are visible ASCII, so this only skips values hyper would never
        // have accepted in the first place.
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_spins_headers_for_a_wildcard_route() {
        let route = RouteMatch {
            component: "auth",
            raw_route: "/api/users/...",
            component_route: "/api/users",
            path_info: "/signup",
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::HOST,
            HeaderValue::from_static("example.com:3000"),
        );
        headers.insert("spin-path-info", HeaderValue::from_static("/spoofed"));
        set_spin_headers(
            &mut headers,
            "/api/users/signup?next=1",
            &route,
            "127.0.0.1:8777".parse().unwrap(),
        );
        let get = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            get("spin-full-url"),
            "http://example.com:3000/api/users/signup?next=1"
        );
        assert_eq!(get("spin-path-info"), "/signup");
        assert_eq!(get("spin-matched-route"), "/api/users/...");
        assert_eq!(get("spin-raw-component-route"), "/api/users/...");
        assert_eq!(get("spin-component-route"), "/api/users");
        assert_eq!(get("spin-base-path"), "/");
        assert_eq!(get("spin-client-addr"), "127.0.0.1:8777");
        assert_eq!(headers.get_all("spin-path-info").iter().count(), 1);
    }

    #[test]
    fn full_url_defaults_the_host_to_localhost() {
        let route = RouteMatch {
            component: "probe",
            raw_route: "/health",
            component_route: "/health",
            path_info: "",
        };
        let mut headers = HeaderMap::new();
        set_spin_headers(&mut headers, "/health", &route, "[::1]:1".parse().unwrap());
        assert_eq!(headers["spin-full-url"], "http://localhost/health");
        assert_eq!(headers["spin-path-info"], "");
        assert_eq!(headers["spin-client-addr"], "[::1]:1");
    }
}

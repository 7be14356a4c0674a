//! Which component serves a request path, with Spin's route rules:
//! - `/x/...` is a wildcard: it matches `/x` and every path below it (`/...` matches all);
//! - any other route matches exactly that path;
//! - the most specific match wins: an exact route over a wildcard, a longer wildcard prefix
//!   over a shorter one.
//!
//! Private routes (`route = { private = true }`) are never served, so they are not here.

use anyhow::bail;

use crate::manifest::{HttpRoute, HttpTrigger};

#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    pattern: Pattern,
    /// As written in spin.toml, e.g. `/api/users/...`.
    raw: String,
    component: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// `/api/users/...` → prefix `/api/users`; `/...` → prefix ``.
    Wildcard(String),
}

/// The result of routing one path: parts of the router (`'r`) and of the path (`'p`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'r, 'p> {
    pub component: &'r str,
    /// The route as written (`spin-matched-route`, `spin-raw-component-route`).
    pub raw_route: &'r str,
    /// The route without a trailing `/...` (`spin-component-route`).
    pub component_route: &'r str,
    /// The rest of the path after the route's prefix (`spin-path-info`); empty for exact
    /// routes.
    pub path_info: &'p str,
}

impl Router {
    pub fn new(triggers: &[HttpTrigger]) -> anyhow::Result<Router> {
        let mut routes: Vec<Route> = Vec::new();
        for trigger in triggers {
            let HttpRoute::Path(raw) = &trigger.route else {
                continue;
            };
            let pattern = Pattern::parse(raw)?;
            if let Some(existing) = routes.iter().find(|r| r.pattern == pattern) {
                bail!(
                    "route {raw:?} of component `{}` duplicates route {:?} of component `{}`",
                    trigger.component,
                    existing.raw,
                    existing.component
                );
            }
            routes.push(Route {
                pattern,
                raw: raw.clone(),
                component: trigger.component.clone(),
            });
        }
        Ok(Router { routes })
    }

    pub fn route<'r, 'p>(&'r self, path: &'p str) -> Option<RouteMatch<'r, 'p>> {
        let mut best: Option<(&Route, usize)> = None;
        for route in &self.routes {
            let Some(specificity) = route.pattern.matches(path) else {
                continue;
            };
            if best.is_none_or(|(_, s)| specificity > s) {
                best = Some((route, specificity));
            }
        }
        let (route, _) = best?;
        let (component_route, path_info) = match &route.pattern {
            Pattern::Exact(exact) => (exact.as_str(), ""),
            Pattern::Wildcard(prefix) => (
                if prefix.is_empty() {
                    "/"
                } else {
                    prefix.as_str()
                },
                &path[prefix.len()..],
            ),
        };
        Some(RouteMatch {
            component: &route.component,
            raw_route: &route.raw,
            component_route,
            path_info,
        })
    }

    /// `(route as written, component)` for the start-up log.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes
            .iter()
            .map(|r| (r.raw.as_str(), r.component.as_str()))
    }
}

impl Pattern {
    fn parse(raw: &str) -> anyhow::Result<Pattern> {
        if !raw.starts_with('/') {
            bail!("route {raw:?} must start with `/`");
        }
        let (base, wildcard) = match raw.strip_suffix("/...") {
            Some(base) => (base, true),
            None => (raw, false),
        };
        if base.contains("...") {
            bail!("route {raw:?}: `...` is only allowed as the last segment, as in `/api/...`");
        }
        if base.split('/').any(|segment| segment.starts_with(':')) {
            bail!("route {raw:?}: `:name` route parameters are not supported by this host");
        }
        Ok(if wildcard {
            Pattern::Wildcard(base.to_owned())
        } else {
            Pattern::Exact(base.to_owned())
        })
    }

    /// How specific the match is (higher wins), or `None` when `path` does not match.
    fn matches(&self, path: &str) -> Option<usize> {
        match self {
            // Above any wildcard, whose specificity is at most the path length.
            Pattern::Exact(exact) => (path == exact).then_some(usize::MAX),
            Pattern::Wildcard(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then_some(prefix.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        let triggers: Vec<HttpTrigger> = routes
            .iter()
            .map(|(route, component)| HttpTrigger {
                id: None,
                component: component.to_string(),
                route: HttpRoute::Path(route.to_string()),
            })
            .collect();
        Router::new(&triggers).unwrap()
    }

    fn component<'a>(r: &'a Router, path: &'a str) -> Option<&'a str> {
        r.route(path).map(|m| m.component)
    }

    #[test]
    fn wildcard_matches_its_base_and_everything_below() {
        let r = router(&[("/api/users/...", "auth")]);
        assert_eq!(component(&r, "/api/users"), Some("auth"));
        assert_eq!(component(&r, "/api/users/"), Some("auth"));
        assert_eq!(component(&r, "/api/users/signup"), Some("auth"));
        assert_eq!(component(&r, "/api/users/a/b/c"), Some("auth"));
        assert_eq!(component(&r, "/api/usersx"), None);
        assert_eq!(component(&r, "/api"), None);
        assert_eq!(component(&r, "/"), None);
    }

    #[test]
    fn exact_routes_match_only_their_path() {
        let r = router(&[("/health", "probe")]);
        assert_eq!(component(&r, "/health"), Some("probe"));
        assert_eq!(component(&r, "/health/"), None);
        assert_eq!(component(&r, "/health/x"), None);
        assert_eq!(component(&r, "/healthz"), None);
    }

    #[test]
    fn most_specific_match_wins() {
        let r = router(&[
            ("/...", "fallback"),
            ("/api/...", "api"),
            ("/api/tickets/...", "tickets"),
            ("/api/tickets/special", "special"),
        ]);
        assert_eq!(component(&r, "/"), Some("fallback"));
        assert_eq!(component(&r, "/index.html"), Some("fallback"));
        assert_eq!(component(&r, "/api/orders"), Some("api"));
        assert_eq!(component(&r, "/api/tickets"), Some("tickets"));
        assert_eq!(component(&r, "/api/tickets/123"), Some("tickets"));
        assert_eq!(component(&r, "/api/tickets/special"), Some("special"));
        assert_eq!(component(&r, "/api/tickets/special/x"), Some("tickets"));
    }

    #[test]
    fn match_carries_spins_route_details() {
        let r = router(&[
            ("/api/users/...", "auth"),
            ("/health", "probe"),
            ("/...", "all"),
        ]);
        let m = r.route("/api/users/signup").unwrap();
        assert_eq!(
            m,
            RouteMatch {
                component: "auth",
                raw_route: "/api/users/...",
                component_route: "/api/users",
                path_info: "/signup",
            }
        );
        assert_eq!(r.route("/api/users").unwrap().path_info, "");
        let m = r.route("/health").unwrap();
        assert_eq!((m.component_route, m.path_info), ("/health", ""));
        let m = r.route("/a/b").unwrap();
        assert_eq!((m.component_route, m.path_info), ("/", "/a/b"));
    }

    #[test]
    fn private_routes_are_not_served() {
        let triggers = [HttpTrigger {
            id: None,
            component: "internal".into(),
            route: HttpRoute::Private,
        }];
        let r = Router::new(&triggers).unwrap();
        assert_eq!(r.route("/"), None);
        assert_eq!(r.routes().count(), 0);
    }

    #[test]
    fn rejects_duplicate_and_unsupported_routes() {
        let triggers: Vec<HttpTrigger> = [("/a/...", "x"), ("/a/...", "y")]
            .iter()
            .map(|(route, c)| HttpTrigger {
                id: None,
                component: c.to_string(),
                route: HttpRoute::Path(route.to_string()),
            })
            .collect();
        let err = Router::new(&triggers).unwrap_err().to_string();
        assert!(err.contains("duplicates"), "{err}");
        for bad in ["/users/:id", "/a/.../b", "relative"] {
            let t = [HttpTrigger {
                id: None,
                component: "x".into(),
                route: HttpRoute::Path(bad.into()),
            }];
            assert!(Router::new(&t).is_err(), "{bad} should be rejected");
        }
    }
}

//! Outbound HTTP from guests, limited to the component's `allowed_outbound_hosts`.
//!
//! Entries look like Spin's: `scheme://host[:port]`, where the scheme, the host and the port
//! may each be `*`, a host may be `*.example.com` (any subdomain, not the domain itself), and
//! an omitted port means the scheme's default port (80 for http, 443 for https). A request
//! to anything else fails in the guest with `error-code.http-request-denied`, and is logged.
//! An empty list denies all outbound HTTP.

use std::future::Future;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::observability::metrics::{self, OutboundOutcome};

/// A component's parsed `allowed_outbound_hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `None` = any scheme.
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com` → `.example.com`.
    Subdomain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    /// No port given: the default port of the request's scheme.
    SchemeDefault,
    Exact(u16),
}

impl AllowedHosts {
    /// Parses entries whose `{{ }}` templates are already resolved.
    pub fn parse(entries: &[String]) -> anyhow::Result<AllowedHosts> {
        let rules = entries
            .iter()
            .map(|entry| {
                Rule::parse(entry).map_err(|e| anyhow!("allowed_outbound_hosts {entry:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(AllowedHosts { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a request to `scheme://host[:port]` is allowed.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        let port = port.or_else(|| default_port(&scheme));
        self.rules
            .iter()
            .any(|rule| rule.allows(&scheme, &host, port))
    }
}

impl Rule {
    fn parse(entry: &str) -> anyhow::Result<Rule> {
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("expected `scheme://host[:port]`, e.g. \"https://api.example.com\"");
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            bail!("paths are not allowed, only `scheme://host[:port]`");
        }
        if scheme.is_empty() || rest.is_empty() {
            bail!("expected `scheme://host[:port]`");
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal without a port ends in `]`.
            Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
            _ => (rest, None),
        };
        let host = host.to_ascii_lowercase();
        if host == "self" {
            bail!("service chaining (`self`) is not supported by this host");
        }
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                bail!("bad host wildcard");
            }
            HostPattern::Subdomain(format!(".{domain}"))
        } else if host.contains('*') {
            bail!("`*` is allowed only as the whole host or as a `*.` prefix");
        } else {
            HostPattern::Exact(host)
        };
        let port = match port {
            None => PortPattern::SchemeDefault,
            Some("*") => PortPattern::Any,
            Some(port) => PortPattern::Exact(
                port.parse()
                    .map_err(|_| anyhow!("port {port:?} is not a number or `*`"))?,
            ),
        };
        let scheme = (scheme != "*").then(|| scheme.to_ascii_lowercase());
        Ok(Rule { scheme, host, port })
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(exact) => exact == host,
            HostPattern::Subdomain(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::SchemeDefault => port.is_some() && port == default_port(scheme),
            PortPattern::Exact(p) => port == Some(p),
        };
        scheme_ok && host_ok && port_ok
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The `wasi:http` hooks of one instance: checks each outgoing request against the
/// component's allowed hosts before handing it to wasmtime's default client.
pub struct OutboundHttp {
    component: String,
    allowed: Arc<AllowedHosts>,
}

impl OutboundHttp {
    pub fn new(component: String, allowed: Arc<AllowedHosts>) -> OutboundHttp {
        OutboundHttp { component, allowed }
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https");
        let host = uri.host().unwrap_or("");
        if !self.allowed.allows(scheme, host, uri.port_u16()) {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
            tracing::warn!(
                component = %self.component,
                "outbound request to {scheme}://{authority} denied: not in allowed_outbound_hosts"
            );
            metrics::outbound_http(&self.component, OutboundOutcome::Denied);
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let component = self.component.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            // What the guest has written so far becomes durable before another system hears
            // of it (a payment provider charging for an order, say).
            if let Err(error) = crate::backends::durable_barrier().await {
                tracing::error!("cannot make the state file durable: {error:#}");
                return Err(wasmtime_wasi_http::Error::InternalError(Some(
                    error.to_string(),
                )));
            }
            let sent = wasmtime_wasi_http::default_send_request(request, options).await;
            let outcome = match &sent {
                Ok((response, _)) => OutboundOutcome::Status(response.status().as_u16()),
                Err(_) => OutboundOutcome::Error,
            };
            metrics::outbound_http(&component, outcome);
            let (response, io) = sent?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn empty_list_denies_everything() {
        let allowed = hosts(&[]);
        assert!(allowed.is_empty());
        assert!(!allowed.allows("https", "example.com", None));
    }

    #[test]
    fn exact_host_with_the_schemes_default_port() {
        let allowed = hosts(&["https://api.stripe.com"]);
        assert!(allowed.allows("https", "api.stripe.com", None));
        assert!(allowed.allows("https", "API.Stripe.com", Some(443)));
        assert!(!allowed.allows("https", "api.stripe.com", Some(8443)));
        assert!(!allowed.allows("http", "api.stripe.com", None));
        assert!(!allowed.allows("https", "evil.com", None));
        assert!(!allowed.allows("https", "x.api.stripe.com", None));
    }

    #[test]
    fn wildcards() {
        let allowed = hosts(&[
            "https://*.example.com",
            "http://localhost:*",
            "*://10.0.0.1:8080",
        ]);
        assert!(allowed.allows("https", "a.example.com", None));
        assert!(allowed.allows("https", "a.b.example.com", None));
        assert!(!allowed.allows("https", "example.com", None));
        assert!(!allowed.allows("https", "badexample.com", None));
        assert!(allowed.allows("http", "localhost", Some(3000)));
        assert!(allowed.allows("http", "localhost", None));
        assert!(!allowed.allows("https", "localhost", Some(3000)));
        assert!(allowed.allows("http", "10.0.0.1", Some(8080)));
        assert!(allowed.allows("https", "10.0.0.1", Some(8080)));
        assert!(!allowed.allows("https", "10.0.0.1", None));
        assert!(hosts(&["*://*:*"]).allows("http", "anything", Some(1)));
    }

    #[test]
    fn rejects_malformed_entries() {
        for bad in [
            "example.com",
            "https://example.com/path",
            "https://ex*ample.com",
            "https://example.com:http",
            "http://self",
            "://x",
        ] {
            assert!(
                AllowedHosts::parse(&[bad.to_string()]).is_err(),
                "{bad} should be rejected"
            );
        }
    }
}

//! The HTTP trigger: a hyper HTTP/1.1 server that routes each request by path
//! (`[[trigger.http]]`) to a component and runs it in a fresh instance.
//!
//! Per request: a head over the limit → 431, route (unknown → 404), check the body size
//! (Content-Length over the cap → 413), wait for a free instance slot, add Spin's `spin-*`
//! headers, then instantiate the component in a new store and call its
//! `wasi:http/incoming-handler`. The guest runs in its own task, bounded by the request
//! deadline twice over: epoch interruption traps guest code that runs past it, and a tokio
//! timeout drops a guest that waits on I/O past it. A trapping, looping or memory-hungry
//! guest fails only its own request (500/503 in the API's error envelope, logged with the
//! component id); the server keeps serving.
//!
//! The client's side is bounded too: hyper closes a connection whose request head does not
//! arrive within the head timeout (an idle keep-alive connection included) and answers 431
//! itself to a head past twice the limit; a request body that breaks (413 past the cap, 400
//! malformed, 408 when no bytes come for the body timeout, see [`request_body`]) is answered
//! by the host at once, whatever the guest does, and ends the guest.
//!
//! Every request gets one access-log line (method, path, status, component, duration).
//! [`HttpTrigger::serve`] stops accepting on shutdown and lets in-flight requests finish for
//! a bounded time.

mod body;
mod head;
mod headers;
mod request_body;
mod responses;
pub mod router;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::WasiHttpView as _;

pub use self::body::ResponseBody;
use self::request_body::{BodyFault, RequestBody};
pub use self::router::Router;
use crate::backends;
use crate::engine::{HostState, LoadedComponent, Runtime};
use crate::manifest;
use crate::observability::metrics::{self, GuestOutcome, Trigger};
use crate::observability::traces;

/// Limits of the HTTP trigger.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Wall-clock budget of one request, from arrival to the guest's last instruction.
    pub request_timeout: Duration,
    /// Request bodies above this many bytes get 413 (components enforce smaller limits).
    pub max_request_body: u64,
    /// Request heads (request line and headers) above this many bytes get 431. hyper stops
    /// reading a head at twice this and answers 431 itself, with no body.
    pub max_request_head: usize,
    /// A request head must arrive within this, counted from when the connection is ready
    /// for it (so it is also how long an idle keep-alive connection stays open); else hyper
    /// closes the connection without an answer.
    pub header_read_timeout: Duration,
    /// The longest a guest waits for the next bytes of a request body: then 408.
    pub body_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            request_timeout: Duration::from_secs(30),
            max_request_body: 1 << 20,
            max_request_head: 32 << 10,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

pub struct HttpTrigger {
    router: Router,
    handlers: HashMap<String, Handler>,
    runtime: Arc<Runtime>,
    settings: HttpSettings,
}

/// A component that serves HTTP: its `wasi:http/proxy` pre-instance.
struct Handler {
    component: Arc<LoadedComponent>,
    proxy: ProxyPre<HostState>,
}

/// How a guest run ended without a response.
enum GuestFailure {
    /// The tokio deadline fired while the guest waited on I/O.
    TimedOut,
    /// The client's request body failed, so the host answered and stopped the guest.
    BodyFailed(BodyFault),
    Error(anyhow::Error),
}

impl HttpTrigger {
    /// Builds the router and checks that each routed component exports
    /// `wasi:http/incoming-handler`. The components must be loaded in `runtime` already.
    pub fn new(
        triggers: &[manifest::HttpTrigger],
        runtime: Arc<Runtime>,
        settings: HttpSettings,
    ) -> anyhow::Result<HttpTrigger> {
        let router = Router::new(triggers)?;
        let mut handlers = HashMap::new();
        for (_, id) in router.routes() {
            if handlers.contains_key(id) {
                continue;
            }
            let component = runtime
                .component(id)
                .with_context(|| format!("component `{id}` is routed but not loaded"))?
                .clone();
            let proxy = ProxyPre::new(component.pre.clone())
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "component `{id}` is routed by [[trigger.http]] but does not export \
                         wasi:http/incoming-handler@0.2.x"
                    )
                })?;
            handlers.insert(id.to_owned(), Handler { component, proxy });
        }
        Ok(HttpTrigger {
            router,
            handlers,
            runtime,
            settings,
        })
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Serves connections from `listener` until `shutdown` resolves, then stops accepting
    /// and waits up to the shutdown grace for open requests to finish.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, client) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!("accepting a connection failed: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let service = hyper::service::service_fn(move |request| {
                let this = this.clone();
                async move { Ok::<_, Infallible>(this.handle(request, client).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .header_read_timeout(self.settings.header_read_timeout)
                .max_header_size(2 * self.settings.max_request_head)
                .serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!("connection from {client}: {error}");
                }
            });
        }
        drop(listener);

        let open = graceful.count();
        tracing::info!(
            open_connections = open,
            "shutting down: no longer accepting connections"
        );
        let grace = self.settings.shutdown_grace;
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "requests still running {}s after shutdown began; stopping anyway",
                grace.as_secs()
            );
        }
        Ok(())
    }

    /// Answers one request; never fails (failures become error responses).
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let span = request_span(&request);
        let (response, component, route) = self
            .dispatch(request, client, started)
            .instrument(span.clone())
            .await;
        // What the guest wrote to the embedded state is committed but not yet durable: the
        // client hears of it only once it would survive a crash (one fsync shared by all).
        let response = match backends::durable_barrier().await {
            Ok(()) => response,
            Err(error) => {
                tracing::error!("cannot make the state file durable: {error:#}");
                responses::unavailable()
            }
        };
        if !span.is_none() {
            let route = route.unwrap_or("-");
            span.record("otel.name", format!("{method} {route}"));
            span.record("http.route", route);
            span.record("component", component.unwrap_or("-"));
            span.record("http.response.status_code", response.status().as_u16());
        }
        metrics::http_request(
            component.unwrap_or("-"),
            route.unwrap_or("-"),
            &method,
            response.status().as_u16(),
            started.elapsed(),
        );
        tracing::info!(
            target: "ticketing::access",
            method = %method,
            path = %path,
            status = response.status().as_u16(),
            component = component.unwrap_or("-"),
            duration_ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
            "request"
        );
        response
    }

    async fn dispatch(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
        started: Instant,
    ) -> (Response<ResponseBody>, Option<&str>, Option<&str>) {
        if head::head_size(&request) > self.settings.max_request_head {
            return (responses::header_fields_too_large(), None, None);
        }
        let path = request.uri().path().to_owned();
        let Some(route) = self.router.route(&path) else {
            return (responses::not_found(), None, None);
        };
        let Some(handler) = self.handlers.get(route.component) else {
            return (responses::not_found(), None, None);
        };
        let id = handler.component.id.as_str();
        let raw_route = route.raw_route;

        let max_body = self.settings.max_request_body;
        if content_length(&request).is_some_and(|length| length > max_body) {
            return (
                responses::body_fault(BodyFault::TooLarge),
                Some(id),
                Some(raw_route),
            );
        }

        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| path.clone());
        let request_headers = request.headers_mut();
        if !request_headers.contains_key(http::header::HOST) {
            // wasi:http needs an authority; HTTP/1.0 clients may send none.
            request_headers.insert(
                http::header::HOST,
                http::HeaderValue::from_static("localhost"),
            );
        }
        headers::set_spin_headers(request_headers, &path_and_query, &route, client);

        let deadline = started + self.settings.request_timeout;
        let tokio_deadline = tokio::time::Instant::from_std(deadline);
        let Ok(slot) = tokio::time::timeout_at(tokio_deadline, self.runtime.instance_slot()).await
        else {
            tracing::error!(
                component = id,
                "no free instance slot before the request deadline"
            );
            return (responses::unavailable(), Some(id), Some(raw_route));
        };

        let (parts, body) = request.into_parts();
        let (body, body_watch) = RequestBody::new(body, max_body, self.settings.body_read_timeout);
        let request = Request::from_parts(parts, body);

        let mut store = self.runtime.new_store(&handler.component, deadline);
        let (response_tx, response_rx) = tokio::sync::oneshot::channel();
        let resources = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|incoming| {
                let outparam = store.data_mut().http().new_response_outparam(response_tx)?;
                Ok((incoming, outparam))
            });
        let (incoming, outparam) = match resources {
            Ok(resources) => resources,
            Err(error) => {
                tracing::error!(
                    component = id,
                    "cannot pass the request to the component: {error:#}"
                );
                return (responses::internal_error(), Some(id), Some(raw_route));
            }
        };

        let proxy = handler.proxy.clone();
        let mut run_outcome = metrics::GuestRun::new(&handler.component.id, Trigger::Http);
        let guest_body_watch = body_watch.clone();
        let guest = tokio::spawn(
            async move {
                let _slot = slot;
                let run = async {
                    let instance = proxy.instantiate_async(&mut store).await?;
                    instance
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, incoming, outparam)
                        .await
                };
                // A failed request body is answered by the host: the guest's work is moot,
                // and its instance is freed at once.
                let result = tokio::select! {
                    finished = tokio::time::timeout_at(tokio_deadline, run) => match finished {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(error)) => Err(GuestFailure::Error(error.into())),
                        Err(_) => Err(GuestFailure::TimedOut),
                    },
                    fault = guest_body_watch.failed() => Err(GuestFailure::BodyFailed(fault)),
                };
                run_outcome.ended(match &result {
                    Ok(()) => GuestOutcome::Ok,
                    Err(GuestFailure::TimedOut) => GuestOutcome::Timeout,
                    Err(GuestFailure::BodyFailed(_)) => GuestOutcome::Cancelled,
                    Err(GuestFailure::Error(error)) => GuestOutcome::of_error(error),
                });
                result
            }
            .in_current_span(),
        );

        let answered = tokio::select! {
            answered = tokio::time::timeout_at(tokio_deadline, response_rx) => answered,
            fault = body_watch.failed() => {
                return (body_fault(id, fault), Some(id), Some(raw_route));
            }
        };
        // The guest may have answered, or failed, because its body failed: the answer is
        // the host's all the same.
        if let Some(fault) = body_watch.fault() {
            return (body_fault(id, fault), Some(id), Some(raw_route));
        }
        let response = match answered {
            // The guest set its response (the body may still be streaming from its task).
            Ok(Ok(Ok(response))) => {
                let component = id.to_owned();
                tokio::spawn(async move {
                    if let Ok(Err(failure)) = guest.await {
                        log_failure(&component, &failure, "after sending its response headers");
                    }
                });
                return (response, Some(id), Some(raw_route));
            }
            Ok(Ok(Err(code))) => {
                tracing::error!(
                    component = id,
                    "component answered with error code {code:?}"
                );
                responses::internal_error()
            }
            // The guest finished (or failed) without setting a response.
            Ok(Err(_)) => match guest.await {
                Ok(Err(GuestFailure::BodyFailed(fault))) => body_fault(id, fault),
                Ok(Ok(())) => {
                    tracing::error!(
                        component = id,
                        "component returned without sending a response"
                    );
                    responses::internal_error()
                }
                Ok(Err(failure)) if is_timeout(&failure) => {
                    self.deadline_exceeded(id, body_watch.waiting_for_client())
                }
                Ok(Err(failure)) => {
                    log_failure(id, &failure, "before sending a response");
                    responses::internal_error()
                }
                Err(join_error) => {
                    tracing::error!(component = id, "component task failed: {join_error}");
                    responses::internal_error()
                }
            },
            // Deadline passed while waiting for the response headers.
            Err(_) => {
                let waiting = body_watch.waiting_for_client();
                guest.abort();
                self.deadline_exceeded(id, waiting)
            }
        };
        (response, Some(id), Some(raw_route))
    }

    /// The answer to a request that reached its deadline (the guest is stopped): 408 if the
    /// guest was waiting for the client's request body (one that trickles in), else 503.
    fn deadline_exceeded(
        &self,
        component: &str,
        waiting_for_client: bool,
    ) -> Response<ResponseBody> {
        if waiting_for_client {
            tracing::info!(
                component,
                "request deadline exceeded while the component waited for the request body"
            );
            return responses::request_timeout();
        }
        tracing::error!(
            component,
            timeout_s = self.settings.request_timeout.as_secs_f64(),
            "request deadline exceeded before the component responded"
        );
        responses::unavailable()
    }
}

/// The host's answer to a request body that failed (logged: the client's doing, not the
/// component's).
fn body_fault(component: &str, fault: BodyFault) -> Response<ResponseBody> {
    tracing::info!(
        component,
        ?fault,
        "the request body failed; answered by the host"
    );
    responses::body_fault(fault)
}

/// The span of one request, continuing the caller's trace (`traceparent`), if traces are
/// exported; else none.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    if !traces::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = %request.method(),
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        component = tracing::field::Empty,
    );
    let traceparent = request.headers().get("traceparent");
    traces::set_parent(&span, traceparent.and_then(|v| v.to_str().ok()));
    span
}

fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether the guest was stopped by the request deadline (epoch trap or tokio timeout).
fn is_timeout(failure: &GuestFailure) -> bool {
    match failure {
        GuestFailure::TimedOut => true,
        GuestFailure::BodyFailed(_) => false,
        GuestFailure::Error(error) => {
            error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
        }
    }
}

fn log_failure(component: &str, failure: &GuestFailure, when: &str) {
    if is_timeout(failure) {
        tracing::error!(
            component,
            "request deadline exceeded {when}: component stopped"
        );
    } else if let GuestFailure::BodyFailed(fault) = failure {
        tracing::info!(
            component,
            ?fault,
            "component stopped {when}: its request body failed"
        );
    } else if let GuestFailure::Error(error) = failure {
        // The root cause is the trap ("wasm trap: wasm `unreachable` instruction executed",
        // "forcing trap when growing memory to ... bytes"); the wasm backtrace is in the chain.
        tracing::error!(component, error = %error.root_cause(), "component failed {when}");
        tracing::debug!(component, "component failure in detail: {error:?}");
    }
}

//! Serves the HTTP components the way Spin 3.6 does: on wasmtime 42 and wasmtime-wasi-http 42
//! (what Spin 3.6.3 embeds), one fresh instance per request, with in-memory stand-ins for the
//! Spin imports the components use. wasmtime-wasi-http 42 traps ("resource has children")
//! when a guest drops a resource while resources taken from it are alive; the project's own
//! host runs a newer wasmtime that allows it, so only a host like this one sees that fault.
//!
//! `App` is one application: its key-value stores, the events its components published
//! (Spin's outbound MQTT, recorded) and, optionally, a Stripe stand-in answering the
//! payments component's outbound HTTP. Requests are routed by path prefix like spin.toml's
//! routes; events are handed to a component's listener export only when a test asks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{bail, Config, Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::bindings::Proxy;
use wasmtime_wasi_http::body::HyperOutgoingBody;
use wasmtime_wasi_http::types::{
    HostFutureIncomingResponse, IncomingResponse, OutgoingRequestConfig,
};
use wasmtime_wasi_http::{HttpResult, WasiHttpCtx, WasiHttpView};

pub use serde_json::{json, Value};

mod spin;

/// The secret every test app signs sessions with.
pub const JWT_SECRET: &str = "spin-compat-test-secret";

/// The HTTP components, with what spin.toml gives each: its route and its store label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Auth,
    Tickets,
    Orders,
    Payments,
    /// The catch-all route `/...`: the browser client's pages and assets, and the API's 404
    /// for every other path under `/api/`.
    Web,
}

impl Service {
    const ALL: [Service; 5] = [
        Service::Auth,
        Service::Tickets,
        Service::Orders,
        Service::Payments,
        Service::Web,
    ];

    fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Tickets => "tickets",
            Service::Orders => "orders",
            Service::Payments => "payments",
            Service::Web => "web",
        }
    }

    /// The one key-value store label the component may open (`key_value_stores`).
    fn store_label(self) -> &'static str {
        self.name()
    }

    /// The component serving `path` (`/api/users/...` is auth, and so on; anything else is
    /// the catch-all).
    fn for_path(path: &str) -> Service {
        let mut segments = path.trim_start_matches('/').split('/');
        match (segments.next(), segments.next()) {
            (Some("api"), Some("users")) => Service::Auth,
            (Some("api"), Some("tickets")) => Service::Tickets,
            (Some("api"), Some("orders")) => Service::Orders,
            (Some("api"), Some("payments")) => Service::Payments,
            _ => Service::Web,
        }
    }
}

mod listener {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "ticketing:platform/event-listener",
        exports: { default: async },
    });
}

use listener::exports::ticketing::platform::listener::{Error as DeliveryError, Message};

/// An event a component published.
#[derive(Clone, Debug)]
pub struct Published {
    /// The NATS subject, e.g. `ticketing.ticket.created` (MQTT topic with `.` for `/`).
    pub subject: String,
    pub payload: Vec<u8>,
}

/// A request the payments component sent to the Stripe stand-in.
#[derive(Clone, Debug)]
pub struct OutboundRequest {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// What an application keeps between requests.
#[derive(Default)]
struct AppState {
    stores: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
    published: Mutex<Vec<Published>>,
    /// Which of `published` (by index) each component has been given.
    delivered: Mutex<HashSet<(Service, usize)>>,
    outbound: Mutex<Vec<OutboundRequest>>,
}

/// The data of one instance's store.
pub struct Host {
    service: Service,
    app: Arc<AppState>,
    variables: Arc<HashMap<String, String>>,
    stripe_stand_in: bool,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn ctx(&mut self) -> &mut WasiHttpCtx {
        &mut self.http
    }

    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Outbound HTTP goes to the Stripe stand-in when the app has one, else it is denied
    /// (Spin's answer for a host not in `allowed_outbound_hosts`).
    fn send_request(
        &mut self,
        request: hyper::Request<HyperOutgoingBody>,
        config: OutgoingRequestConfig,
    ) -> HttpResult<HostFutureIncomingResponse> {
        if !self.stripe_stand_in {
            return Err(ErrorCode::HttpRequestDenied.into());
        }
        let app = self.app.clone();
        // The guest writes the body after `handle` returns, so the stand-in reads it in a task.
        let answer = wasmtime_wasi::runtime::spawn(async move {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(body) => body.to_bytes(),
                Err(error) => return Ok(Err(error)),
            };
            app.outbound.lock().unwrap().push(OutboundRequest {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let charge = json!({"id": "ch_compat", "object": "charge", "paid": true});
            let response = hyper::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(
                    Full::new(Bytes::from(charge.to_string()))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )?;
            Ok(Ok(IncomingResponse {
                resp: response,
                worker: None,
                between_bytes_timeout: config.between_bytes_timeout,
            }))
        });
        Ok(HostFutureIncomingResponse::pending(answer))
    }
}

/// The engine and the four components, compiled once per test binary.
struct Compiled {
    engine: Engine,
    components: HashMap<Service, InstancePre<Host>>,
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| compile().expect("compile the components with wasmtime 42"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the HTTP components (cargo decides whether they are stale, exactly as spin.toml's
/// build commands do) and compiles them on a wasmtime 42 engine with Spin's imports linked.
fn compile() -> wasmtime::Result<Compiled> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace_root())
        .args(["build", "--target", "wasm32-wasip2", "--release"]);
    for service in Service::ALL {
        build.args(["-p", &format!("ticketing-{}", service.name())]);
    }
    let status = build.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the components failed: {status}");
    }

    let engine = Engine::new(&Config::new())?;
    let mut linker = Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::add_only_http_to_linker_async(&mut linker)?;
    spin::add_to_linker(&mut linker)?;

    let mut components = HashMap::new();
    for service in Service::ALL {
        let path = workspace_root().join(format!(
            "target/wasm32-wasip2/release/ticketing_{}.wasm",
            service.name().replace('-', "_")
        ));
        let component = Component::from_file(&engine, &path)
            .with_context(|| format!("compiling {}", path.display()))?;
        let pre = linker
            .instantiate_pre(&component)
            .with_context(|| format!("linking {} against Spin's imports", service.name()))?;
        components.insert(service, pre);
    }
    Ok(Compiled { engine, components })
}

/// One application: its stores, its published events, its variables.
pub struct App {
    state: Arc<AppState>,
    variables: Arc<HashMap<String, String>>,
    stripe_stand_in: bool,
}

impl App {
    /// The app as `spin up` would run it with only `jwt_secret` set: payments in test mode.
    pub fn new() -> App {
        App::with_variables(&[])
    }

    /// The app with these variables on top of `jwt_secret`.
    pub fn with_variables(extra: &[(&str, &str)]) -> App {
        let mut variables = HashMap::from([("jwt_secret".to_owned(), JWT_SECRET.to_owned())]);
        variables.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        App {
            state: Arc::default(),
            variables: Arc::new(variables),
            stripe_stand_in: false,
        }
    }

    /// Outbound HTTP from the components reaches a Stripe stand-in that answers every charge
    /// with 200 `{"id": "ch_compat"}` and records what it received.
    pub fn with_stripe_stand_in(mut self) -> App {
        self.stripe_stand_in = true;
        self
    }

    fn store(&self, service: Service) -> (Store<Host>, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let host = Host {
            service,
            app: self.state.clone(),
            variables: self.variables.clone(),
            stripe_stand_in: self.stripe_stand_in,
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        };
        (Store::new(&compiled().engine, host), stderr)
    }

    /// Serves one request with a fresh instance of the component its path routes to, as Spin
    /// does. Panics, with the guest's error and its stderr, if the guest traps.
    pub async fn call(&self, request: hyper::Request<Full<Bytes>>) -> Reply {
        let request = request.map(|body| body.map_err(|never| -> ErrorCode { match never {} }));
        self.call_streaming(request).await
    }

    /// `call` with any request body, one that fails as Spin's HTTP trigger reports a client's
    /// broken body included (an `ErrorCode` the guest's read gets).
    pub async fn call_streaming<B>(&self, request: hyper::Request<B>) -> Reply
    where
        B: hyper::body::Body<Data = Bytes, Error = ErrorCode> + Send + 'static,
    {
        let service = Service::for_path(request.uri().path());
        let (store, stderr) = self.store(service);
        match serve(service, store, request).await {
            Ok(reply) => reply,
            Err(error) => panic!(
                "{} trapped on wasmtime 42: {error:?}\nguest stderr:\n{}",
                service.name(),
                String::from_utf8_lossy(&stderr.contents())
            ),
        }
    }

    pub async fn get(&self, path: &str, session: Option<&str>) -> Reply {
        self.call(request("GET", path, session).body(Full::default()).unwrap())
            .await
    }

    pub async fn post(&self, path: &str, body: Value, session: Option<&str>) -> Reply {
        self.call(json_request("POST", path, &body, session)).await
    }

    pub async fn put(&self, path: &str, body: Value, session: Option<&str>) -> Reply {
        self.call(json_request("PUT", path, &body, session)).await
    }

    /// The events published so far, oldest first.
    pub fn published(&self) -> Vec<Published> {
        self.state.published.lock().unwrap().clone()
    }

    /// What the Stripe stand-in received so far.
    pub fn outbound_requests(&self) -> Vec<OutboundRequest> {
        self.state.outbound.lock().unwrap().clone()
    }

    /// Hands every published event named in `events` (e.g. `"ticket.created"`) that
    /// `service` has not been given yet to its listener export, oldest first, as the NATS
    /// trigger does; each must be handled (`Ok`). Returns how many were delivered.
    pub async fn deliver(&self, service: Service, events: &[&str]) -> usize {
        let mut delivered = 0;
        for (index, event) in self.published().iter().enumerate() {
            let name = event.subject.strip_prefix("ticketing.").unwrap_or_default();
            if !events.contains(&name)
                || !self
                    .state
                    .delivered
                    .lock()
                    .unwrap()
                    .insert((service, index))
            {
                continue;
            }
            let (store, stderr) = self.store(service);
            match handle_event(service, store, event).await {
                Ok(Ok(())) => delivered += 1,
                Ok(Err(refused)) => panic!("{} refused {event:?}: {refused:?}", service.name()),
                Err(error) => panic!(
                    "{} trapped on {}: {error:?}\nguest stderr:\n{}",
                    service.name(),
                    event.subject,
                    String::from_utf8_lossy(&stderr.contents())
                ),
            }
        }
        delivered
    }
}

/// Calls `wasi:http/incoming-handler.handle` and reads the response while the guest writes
/// it. The call runs in its own task that owns the store: if the guest traps, the task ends,
/// the store and its response outparam are dropped, and the waiting side sees it.
async fn serve<B>(
    service: Service,
    mut store: Store<Host>,
    request: hyper::Request<B>,
) -> wasmtime::Result<Reply>
where
    B: hyper::body::Body<Data = Bytes, Error = ErrorCode> + Send + 'static,
{
    let pre = compiled().components[&service].clone();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = store
        .data_mut()
        .new_incoming_request(Scheme::Http, request)?;
    let outparam = store.data_mut().new_response_outparam(sender)?;
    let call = tokio::spawn(async move {
        let instance = pre.instantiate_async(&mut store).await?;
        let proxy = Proxy::new(&mut store, &instance)?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, outparam)
            .await
    });

    let response = async {
        let response = receiver.await.context("the guest set no response")??;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        wasmtime::Result::Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.to_vec(),
        })
    }
    .await;
    // The guest's own outcome first: a trap explains a missing or cut response.
    call.await?.context("guest invocation failed")?;
    response
}

async fn handle_event(
    service: Service,
    mut store: Store<Host>,
    event: &Published,
) -> wasmtime::Result<Result<(), DeliveryError>> {
    let pre = compiled().components[&service].clone();
    let instance = pre.instantiate_async(&mut store).await?;
    let listener = listener::EventListener::new(&mut store, &instance)?;
    let message = Message {
        subject: event.subject.clone(),
        payload: event.payload.clone(),
        delivery: 1,
    };
    listener
        .ticketing_platform_listener()
        .call_handle(&mut store, &message)
        .await
}

/// A request to the app's origin, with the session as Spin's clients send it: a cookie.
pub fn request(method: &str, path: &str, session: Option<&str>) -> http::request::Builder {
    let builder = hyper::Request::builder()
        .method(method)
        .uri(format!("http://ticketing.test{path}"))
        .header("host", "ticketing.test");
    match session {
        Some(session) => builder.header("cookie", session),
        None => builder,
    }
}

/// A request with a JSON body.
pub fn json_request(
    method: &str,
    path: &str,
    body: &Value,
    session: Option<&str>,
) -> hyper::Request<Full<Bytes>> {
    request(method, path, session)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A response, read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// `session=<jwt>` from `Set-Cookie`, ready for a `Cookie` header.
    pub fn session_cookie(&self) -> String {
        let set_cookie = self.header("set-cookie").expect("a set-cookie header");
        set_cookie.split(';').next().unwrap().to_owned()
    }

    /// The status is `status` and the body the error envelope with exactly these messages.
    pub fn assert_error(&self, status: u16, messages: &[&str]) {
        let shown = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{shown}");
        let errors = self.json()["errors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let got: Vec<&str> = errors
            .iter()
            .map(|error| error["message"].as_str().unwrap())
            .collect();
        assert_eq!(got, messages, "{shown}");
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, String::from_utf8_lossy(&self.body))
    }
}

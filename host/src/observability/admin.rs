//! The admin listener (`--admin-listen`): the host's own routes, on an address of their own
//! so they never collide with the app's routes and can stay off the public network.
//!
//! - `GET /healthz`: 200 `{"status":"ok"}` while the process serves (liveness);
//! - `GET /readyz`: 200 when ready, else 503; the body lists every check
//!   ([`super::health::Readiness`]);
//! - `GET /metrics`: the Prometheus text format.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::health::Health;
use super::metrics::Metrics;

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running admin server; dropping it stops it.
pub struct AdminServer {
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `address` and serves the admin routes until dropped.
pub async fn start(
    address: SocketAddr,
    health: Arc<Health>,
    metrics: &'static Metrics,
) -> anyhow::Result<AdminServer> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (--admin-listen)"))?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("admin listener: accepting a connection failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let health = health.clone();
            let service = hyper::service::service_fn(move |request| {
                let health = health.clone();
                async move { Ok::<_, Infallible>(answer(request, &health, metrics).await) }
            });
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!("admin connection: {error}");
                }
            });
        }
    });
    tracing::info!("Admin routes (/healthz, /readyz, /metrics) on http://{address}");
    Ok(AdminServer { address, task })
}

async fn answer(
    request: Request<Incoming>,
    health: &Health,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"errors": [{"message": "Method Not Allowed"}]}),
        );
    }
    match request.uri().path() {
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" => {
            let readiness = health.readiness().await;
            let status = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &readiness)
        }
        "/metrics" => {
            health.refresh_gauges(metrics).await;
            Response::builder()
                .header(header::CONTENT_TYPE, PROMETHEUS_TEXT)
                .body(Full::new(Bytes::from(metrics.render())))
                .expect("a valid response")
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"errors": [{"message": "Not Found"}]}),
        ),
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(body).expect("serializable");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

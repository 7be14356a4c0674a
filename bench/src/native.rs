//! The ceiling: the ticket read written natively in Rust behind hyper, with the tickets in
//! an in-memory map (no store round trip, no Wasm). Same JSON shape as the tickets service;
//! it runs on its own 2-thread tokio runtime, like the host on this machine.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The tickets service's ticket, as its API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: String,
    pub title: String,
    pub price: f64,
    pub user_id: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

pub struct NativeServer {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        // Dropped from async code: a blocking runtime shutdown is not allowed there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Serves `GET /hello` and `GET /api/tickets/:id` from `tickets` on a free port.
pub fn start(tickets: Vec<Ticket>, threads: usize) -> anyhow::Result<NativeServer> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("native-server")
        .enable_all()
        .build()?;
    let map: Arc<HashMap<String, Ticket>> =
        Arc::new(tickets.into_iter().map(|t| (t.id.clone(), t)).collect());
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    runtime.spawn(async move {
        let listener = TcpListener::from_std(listener).expect("a tokio listener");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let map = map.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(map.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(NativeServer {
        addr,
        runtime: Some(runtime),
    })
}

async fn handle(
    tickets: Arc<HashMap<String, Ticket>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let reply = |status: StatusCode, kind: &str, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    if path == "/hello" {
        return Ok(reply(StatusCode::OK, "text/plain", b"hello".to_vec()));
    }
    if let Some(id) = path.strip_prefix("/api/tickets/") {
        if let Some(ticket) = tickets.get(id) {
            let body = serde_json::to_vec(ticket).expect("ticket JSON");
            return Ok(reply(StatusCode::OK, "application/json", body));
        }
    }
    Ok(reply(
        StatusCode::NOT_FOUND,
        "application/json",
        br#"{"errors":[{"message":"Not Found"}]}"#.to_vec(),
    ))
}

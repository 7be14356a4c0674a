//! The load generator: a fixed number of keep-alive HTTP/1.1 connections, each sending its
//! next request as soon as the previous response is read (closed loop), for a warm-up and
//! then a measured duration. Latency is recorded per request in an HDR histogram
//! (microseconds, 3 significant digits).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

/// One keep-alive client connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

/// A response as the bench needs it.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "not JSON (status {}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Reply {
    /// This reply if its status is `status`, else an error naming `what` was asked, with
    /// the status and body that came instead.
    pub fn expect_status(self, status: u16, what: &str) -> anyhow::Result<Reply> {
        if self.status != status {
            anyhow::bail!(
                "{what}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            );
        }
        Ok(self)
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { sender })
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// Builds a request; `host` is the Host header value.
pub fn request(
    method: &str,
    host: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(json).expect("JSON"))
        }
        None => Bytes::new(),
    };
    builder.body(Full::new(body)).expect("valid request")
}

/// The `rel="next"` target of a `Link` header (RFC 8288; the API gives a path on the same
/// origin), if there is one.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("link")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find(|link| link.contains("rel=\"next\"") || link.contains("rel=next"))
        .and_then(|link| {
            let start = link.find('<')? + 1;
            let end = link[start..].find('>')? + start;
            Some(link[start..end].to_owned())
        })
}

/// Makes the n-th request of a run (n counts across all connections).
pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// The status every response should have; others count as errors.
    pub expect: u16,
}

/// What one run measured. Latencies in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub concurrency: usize,
    pub duration_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// CPU time the server process used in the measured window per request answered, when
    /// the server is a process of its own (not the bench's in-process native servers).
    pub server_cpu_us_per_request: Option<f64>,
}

/// Runs closed-loop load against `addr`: `concurrency` connections, warm-up, then the
/// measured window. Requests started inside the window are counted.
pub async fn run(
    addr: SocketAddr,
    spec: LoadSpec,
    make: MakeRequest,
) -> anyhow::Result<LoadResult> {
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let mut workers = Vec::new();
    for _ in 0..spec.concurrency.max(1) {
        let make = make.clone();
        let counter = counter.clone();
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            let mut conn: Option<Conn> = None;
            while Instant::now() < end {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::open(addr).await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(format!("{e:#}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let request = make(n);
                let sent = Instant::now();
                let outcome = c.send(request).await;
                let took = sent.elapsed();
                let measured = sent >= measure_from && sent < end;
                match outcome {
                    Ok(reply) => {
                        if measured {
                            hist.saturating_record(took.as_micros() as u64);
                            if reply.status.as_u16() != spec.expect {
                                errors += 1;
                                first_error.get_or_insert(format!(
                                    "status {} (expected {}): {}",
                                    reply.status,
                                    spec.expect,
                                    String::from_utf8_lossy(&reply.body)
                                ));
                            }
                        }
                    }
                    Err(e) => {
                        if measured {
                            errors += 1;
                        }
                        first_error.get_or_insert(format!("{e:#}"));
                        conn = None;
                    }
                }
            }
            (hist, errors, first_error)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut errors = 0;
    let mut first_error = None;
    for worker in workers {
        let (h, e, f) = worker.await?;
        hist.add(h).expect("same bounds");
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    if let Some(error) = &first_error {
        eprintln!("  (load: {errors} errors; first: {error})");
    }
    let secs = spec.duration.as_secs_f64();
    Ok(LoadResult {
        concurrency: spec.concurrency,
        duration_s: secs,
        requests: hist.len(),
        errors,
        rps: hist.len() as f64 / secs,
        mean_us: hist.mean(),
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
        server_cpu_us_per_request: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "link",
            "</api/tickets?limit=20>; rel=\"first\", \
             </api/tickets?limit=20&cursor=dGlja2V0czoyMA>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("/api/tickets?limit=20&cursor=dGlja2V0czoyMA")
        );
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}

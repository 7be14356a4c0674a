//! The request body as a component reads it, watched by the host: more than the host's cap,
//! broken framing (a malformed chunk, a client gone mid-body) or no bytes for the read
//! timeout while the component waits for them is a [`BodyFault`]. The component sees an
//! error from its read, and the trigger, told through a [`BodyWatch`], answers the client
//! itself (413, 400, 408): the fault is the client's, whatever the component makes of it.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// How a request body failed: each is the client's doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// More bytes than the host accepts (413).
    TooLarge,
    /// Not a valid HTTP body (a malformed chunk), or cut short by the client (400).
    Malformed,
    /// No bytes for the read timeout while the component waited for them (408).
    TimedOut,
}

impl BodyFault {
    /// The error the component's read gets (a malformed body's first read gets hyper's own
    /// error, passed on).
    fn error(self, read: u64) -> wasmtime_wasi_http::Error {
        match self {
            BodyFault::TooLarge => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(read)),
            BodyFault::Malformed => wasmtime_wasi_http::Error::HttpProtocolError,
            BodyFault::TimedOut => wasmtime_wasi_http::Error::ConnectionReadTimeout,
        }
    }
}

/// What the trigger sees of a request body while a component reads it.
#[derive(Clone, Default)]
pub struct BodyWatch(Arc<WatchState>);

#[derive(Default)]
struct WatchState {
    fault: OnceLock<BodyFault>,
    failed: Notify,
    /// The component's last read found no bytes from the client: it waits for them (unless
    /// it gave up on the body).
    waiting: AtomicBool,
}

impl BodyWatch {
    /// The body's fault, if it failed.
    pub fn fault(&self) -> Option<BodyFault> {
        self.0.fault.get().copied()
    }

    /// Resolves once the body fails; never, if it does not.
    pub async fn failed(&self) -> BodyFault {
        loop {
            // Made before the check, so a fault recorded in between still wakes it.
            let notified = self.0.failed.notified();
            if let Some(fault) = self.fault() {
                return fault;
            }
            notified.await;
        }
    }

    /// Whether the component is waiting for body bytes the client has not sent: at the
    /// request deadline, that makes the client the slow one.
    pub fn waiting_for_client(&self) -> bool {
        self.0.waiting.load(Ordering::Relaxed)
    }

    fn record(&self, fault: BodyFault) {
        if self.0.fault.set(fault).is_ok() {
            self.0.failed.notify_waiters();
        }
    }
}

/// A request body with the host's size cap and read timeout, reporting its fault to a
/// [`BodyWatch`].
pub struct RequestBody<B> {
    inner: B,
    max_bytes: u64,
    read: u64,
    read_timeout: Duration,
    /// Armed while the component waits for bytes that have not come; disarmed by each frame.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    watch: BodyWatch,
}

impl<B> RequestBody<B> {
    pub fn new(inner: B, max_bytes: u64, read_timeout: Duration) -> (RequestBody<B>, BodyWatch) {
        let watch = BodyWatch::default();
        let body = RequestBody {
            inner,
            max_bytes,
            read: 0,
            read_timeout,
            idle: None,
            watch: watch.clone(),
        };
        (body, watch)
    }

    fn record(&mut self, fault: BodyFault) {
        self.idle = None;
        self.watch.0.waiting.store(false, Ordering::Relaxed);
        self.watch.record(fault);
    }

    fn fail<T>(&mut self, fault: BodyFault) -> Poll<Option<Result<T, wasmtime_wasi_http::Error>>> {
        self.record(fault);
        Poll::Ready(Some(Err(fault.error(self.read))))
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error> + std::fmt::Display,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(fault) = self.watch.fault() {
            return Poll::Ready(Some(Err(fault.error(self.read))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let waiting = polled.is_pending();
        self.watch.0.waiting.store(waiting, Ordering::Relaxed);
        if !waiting {
            self.idle = None;
        }
        match polled {
            Poll::Pending => {
                let timeout = self.read_timeout;
                let idle = self
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    return self.fail(BodyFault::TimedOut);
                }
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => {
                tracing::debug!("request body failed: {error}");
                self.record(BodyFault::Malformed);
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len() as u64;
                    if self.read > self.max_bytes {
                        return self.fail(BodyFault::TooLarge);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use http_body_util::BodyExt as _;

    use super::*;

    /// A body of ready chunks, then (if `stall`) one that never comes.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        stall: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.chunks.pop_front() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None if self.stall => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn chunks(sizes: &[usize]) -> Chunks {
        Chunks {
            chunks: sizes.iter().map(|n| Bytes::from(vec![b'x'; *n])).collect(),
            stall: false,
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn passes_bodies_up_to_the_limit() {
        let (body, watch) = RequestBody::new(chunks(&[4, 4, 2]), 10, LONG);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 10);
        assert_eq!(watch.fault(), None);
        assert!(!watch.waiting_for_client());
    }

    #[tokio::test]
    async fn fails_and_records_past_the_limit() {
        let (body, watch) = RequestBody::new(chunks(&[6, 6, 6]), 10, LONG);
        let err = body.collect().await.unwrap_err();
        assert!(
            matches!(
                err,
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(12))
            ),
            "{err:?}"
        );
        assert_eq!(watch.fault(), Some(BodyFault::TooLarge));
        assert_eq!(watch.failed().await, BodyFault::TooLarge);
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_when_the_client_stops_sending() {
        let mut stalled = chunks(&[3]);
        stalled.stall = true;
        let (mut body, watch) = RequestBody::new(stalled, 10, Duration::from_secs(10));
        assert_eq!(
            body.frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap()
                .len(),
            3
        );
        let waiter = tokio::spawn({
            let watch = watch.clone();
            async move { watch.failed().await }
        });
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(
            matches!(err, wasmtime_wasi_http::Error::ConnectionReadTimeout),
            "{err:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(waiter.await.unwrap(), BodyFault::TimedOut);
        // Later reads keep failing the same way.
        assert!(matches!(
            body.frame().await.unwrap().unwrap_err(),
            wasmtime_wasi_http::Error::ConnectionReadTimeout
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn says_when_the_component_waits_for_the_client() {
        let mut stalled = chunks(&[]);
        stalled.stall = true;
        let (mut body, watch) = RequestBody::new(stalled, 10, LONG);
        assert!(!watch.waiting_for_client());
        let read = tokio::time::timeout(Duration::from_secs(1), body.frame()).await;
        assert!(read.is_err(), "no frame from a stalled client");
        assert!(watch.waiting_for_client());
        assert_eq!(watch.fault(), None);
    }

    /// A body whose framing breaks after one chunk, as hyper reports a malformed chunk.
    struct Broken(Option<Bytes>);

    impl Body for Broken {
        type Data = Bytes;
        type Error = wasmtime_wasi_http::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(Some(match self.0.take() {
                Some(chunk) => Ok(Frame::data(chunk)),
                None => Err(wasmtime_wasi_http::Error::ConnectionTerminated),
            }))
        }
    }

    #[tokio::test]
    async fn broken_framing_is_malformed_and_passes_the_error_on() {
        let (body, watch) = RequestBody::new(Broken(Some(Bytes::from("ab"))), 10, LONG);
        let err = body.collect().await.unwrap_err();
        assert!(
            matches!(err, wasmtime_wasi_http::Error::ConnectionTerminated),
            "{err:?}"
        );
        assert_eq!(watch.fault(), Some(BodyFault::Malformed));
    }
}

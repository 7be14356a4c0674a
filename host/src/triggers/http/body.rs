//! Request and response bodies of the HTTP trigger.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, SizeHint};

/// Every response body: the guest's (as `wasmtime-wasi-http` hands it over) or the host's own.
pub type ResponseBody = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request body that fails once more than `limit` bytes have been read, and records that
/// in a shared flag so the trigger can answer 413 whatever the guest did with the error.
pub struct CappedBody<B> {
    inner: B,
    limit: u64,
    read: u64,
    exceeded: Arc<AtomicBool>,
}

impl<B> CappedBody<B> {
    pub fn new(inner: B, limit: u64) -> (CappedBody<B>, Arc<AtomicBool>) {
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = CappedBody {
            inner,
            limit,
            read: 0,
            exceeded: exceeded.clone(),
        };
        (body, exceeded)
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.exceeded.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                Some(self.read),
            ))));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            self.read += data.len() as u64;
            if self.read > self.limit {
                self.exceeded.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    Some(self.read),
                ))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
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

    use super::*;

    /// A body made of ready chunks.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    fn chunks(sizes: &[usize]) -> Chunks {
        Chunks(sizes.iter().map(|n| Bytes::from(vec![b'x'; *n])).collect())
    }

    #[tokio::test]
    async fn passes_bodies_up_to_the_limit() {
        let (body, exceeded) = CappedBody::new(chunks(&[4, 4, 2]), 10);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 10);
        assert!(!exceeded.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn fails_and_flags_past_the_limit() {
        let (body, exceeded) = CappedBody::new(chunks(&[6, 6, 6]), 10);
        let err = body.collect().await.unwrap_err();
        assert!(
            matches!(
                err,
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(12))
            ),
            "{err:?}"
        );
        assert!(exceeded.load(Ordering::Relaxed));
    }
}

//! [`ArenaBody`], the collected request body the inner service sees, and
//! [`ResponseBody`], the inner service's response body or the layer's own
//! rejection text.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// A request body collected into arena memory: the whole body as one
/// contiguous [`Bytes`], plus the trailers if the client sent any.
///
/// As an [`http_body::Body`] it yields that `Bytes` as a single data frame
/// (no copy), then the trailers, so handlers that collect a body work
/// unchanged; [`into_bytes`](ArenaBody::into_bytes) takes the bytes
/// directly. The arena memory is released when the last clone or slice of
/// the `Bytes` drops.
#[derive(Default)]
pub struct ArenaBody {
    data: Bytes,
    // Boxed: trailers are rare, and the body is moved around with the
    // request.
    trailers: Option<Box<HeaderMap>>,
}

impl ArenaBody {
    pub(crate) fn new(data: Bytes, trailers: Option<Box<HeaderMap>>) -> Self {
        Self { data, trailers }
    }

    /// The body's bytes (empty once polled as a [`Body`]).
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// The whole body as one `Bytes`, backed by arena memory (without a
    /// copy; an empty body is an empty `Bytes` that holds no arena memory).
    pub fn into_bytes(self) -> Bytes {
        self.data
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The trailers the client sent after the body, if any.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_deref()
    }
}

impl Body for ArenaBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.data.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut self.data)))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

impl fmt::Debug for ArenaBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArenaBody")
            .field("len", &self.data.len())
            .field("trailers", &self.trailers.is_some())
            .finish()
    }
}

pin_project! {
    /// The response body of [`ArenaBodyService`](super::ArenaBodyService):
    /// the inner service's body, or the short plain-text reason of a request
    /// the layer answered itself (413, 503, 400).
    ///
    /// As in tower-http's `RequestBodyLimit`, the two are one type so the
    /// layer adds no boxing.
    pub struct ResponseBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Body {
            #[pin]
            body: B,
        },
        Rejection {
            text: Option<Bytes>,
        },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's response body.
    pub fn new(body: B) -> Self {
        Self {
            inner: Inner::Body { body },
        }
    }

    pub(crate) fn rejection(text: &'static str) -> Self {
        Self {
            inner: Inner::Rejection {
                text: Some(Bytes::from_static(text.as_bytes())),
            },
        }
    }

    /// Whether this is the layer's own rejection text rather than the inner
    /// service's body.
    pub fn is_rejection(&self) -> bool {
        matches!(self.inner, Inner::Rejection { .. })
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().inner.project() {
            InnerProj::Body { body } => body.poll_frame(cx),
            InnerProj::Rejection { text } => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Body { body } => body.is_end_stream(),
            Inner::Rejection { text } => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Body { body } => body.size_hint(),
            Inner::Rejection { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("rejection", &self.is_rejection())
            .finish()
    }
}

//! [`ArenaBodyService`], the middleware the layer builds.

use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::{ArenaBody, Config, ResponseBody, ResponseFuture};
use crate::BufferSource;

/// The middleware of [`ArenaBodyLayer`](super::ArenaBodyLayer): collects the
/// request body into arena memory, then calls the inner service.
///
/// `poll_ready` is the inner service's. `call` takes the inner service that
/// was polled ready into the response future (leaving a clone in its place,
/// as tower's `Buffer` and friends do), because the inner call happens only
/// once the body is in.
#[derive(Clone, Debug)]
pub struct ArenaBodyService<I, S> {
    inner: I,
    source: S,
    config: Config,
}

impl<I, S> ArenaBodyService<I, S> {
    pub(crate) fn from_parts(inner: I, source: S, config: Config) -> Self {
        Self {
            inner,
            source,
            config,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> I {
        self.inner
    }
}

impl<I, S, B, ResBody> Service<Request<B>> for ArenaBodyService<I, S>
where
    I: Service<Request<ArenaBody>, Response = Response<ResBody>> + Clone,
    S: BufferSource,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = I::Error;
    type Future = ResponseFuture<B, I, I::Future, S>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(req, ready, self.source.clone(), self.config)
    }
}

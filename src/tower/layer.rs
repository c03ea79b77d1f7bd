//! [`ArenaBodyLayer`] and its builder.

use std::time::Duration;

use tower_layer::Layer;

use super::{ArenaBodyService, Config, ConfigError};
use crate::BufferSource;

/// A [`tower_layer::Layer`] that collects every request body into arena
/// memory before calling the inner service with an
/// [`ArenaBody`](super::ArenaBody). See the [module docs](super) for the
/// behaviour and an example.
#[derive(Clone, Debug)]
pub struct ArenaBodyLayer<S> {
    source: S,
    config: Config,
}

impl<S: BufferSource> ArenaBodyLayer<S> {
    /// A layer with the defaults: bodies up to `source.max_len()` bytes,
    /// waits for memory of at most [`DEFAULT_WAIT_TIMEOUT`](super::DEFAULT_WAIT_TIMEOUT) (5 s;
    /// [`DEFAULT_HTTP2_WAIT_TIMEOUT`](super::DEFAULT_HTTP2_WAIT_TIMEOUT), 100 ms, for an HTTP/2 request whose
    /// client is still sending), and [`DEFAULT_BODY_TIMEOUT`](super::DEFAULT_BODY_TIMEOUT) (10 s) for a
    /// client that holds memory and sends nothing.
    ///
    /// The timers are tokio's: a request that has to wait, or whose client
    /// pauses while it holds memory, needs a tokio runtime with the time
    /// driver enabled (`#[tokio::main]` enables it; hyper and axum servers
    /// always run in one). Requests whose bodies arrive without pauses use
    /// no timer.
    pub fn new(source: S) -> Self {
        let config = Config::new(source.max_len());
        Self { source, config }
    }

    /// Starts configuring a layer over `source`.
    pub fn builder(source: S) -> ArenaBodyLayerBuilder<S> {
        let defaults = Config::new(source.max_len());
        ArenaBodyLayerBuilder {
            source,
            max_body_size: None,
            wait_timeout: defaults.wait_timeout,
            http2_wait_timeout: defaults.http2_wait_timeout,
            body_timeout: defaults.body_timeout,
            retry_after: Duration::from_secs(1),
        }
    }

    /// The largest body accepted, in bytes.
    pub fn max_body_size(&self) -> usize {
        self.config.limit
    }

    /// How long a request waits for arena capacity before a 503.
    pub fn wait_timeout(&self) -> Duration {
        self.config.wait_timeout
    }

    /// How long an HTTP/2 request whose client may still be sending waits
    /// for arena capacity before a 503.
    pub fn http2_wait_timeout(&self) -> Duration {
        self.config.http2_wait_timeout
    }

    /// How long a request that holds memory may receive no body frame
    /// before a 408.
    pub fn body_timeout(&self) -> Duration {
        self.config.body_timeout
    }

    /// Where the bodies' memory comes from.
    pub fn source(&self) -> &S {
        &self.source
    }
}

impl<S: BufferSource, I> Layer<I> for ArenaBodyLayer<S> {
    type Service = ArenaBodyService<I, S>;

    fn layer(&self, inner: I) -> Self::Service {
        ArenaBodyService::from_parts(inner, self.source.clone(), self.config)
    }
}

/// Configures an [`ArenaBodyLayer`]; [`build`](Self::build) checks it.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ArenaBodyLayerBuilder<S> {
    source: S,
    max_body_size: Option<usize>,
    wait_timeout: Duration,
    http2_wait_timeout: Duration,
    body_timeout: Duration,
    retry_after: Duration,
}

impl<S: BufferSource> ArenaBodyLayerBuilder<S> {
    /// The largest request body accepted, in bytes (default: the source's
    /// `max_len()`). A larger body is answered `413 Payload Too Large`: at
    /// once, before any allocation, when its `Content-Length` says so, or as
    /// soon as the bytes read pass the limit (the rest is not read).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = Some(bytes);
        self
    }

    /// Bounds each wait for arena capacity (default
    /// [`DEFAULT_WAIT_TIMEOUT`](super::DEFAULT_WAIT_TIMEOUT), 5 s): a request that cannot get its block
    /// within `timeout` is answered `503 Service Unavailable` with a
    /// `Retry-After` header, and releases everything it held.
    ///
    /// Every wait is bounded; there is no way to wait forever. This matters
    /// most for bodies without a `Content-Length`: one that outgrows its
    /// block waits for a larger one while it holds the smaller, and many
    /// such bodies could otherwise hold the whole arena while each waits for
    /// the others. With the bound, the first to time out give their memory
    /// back and the rest go on. `Duration::ZERO` never waits (a full arena
    /// answers 503 at once).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Bounds the wait of an HTTP/2 (or later) request whose client may still
    /// be sending (default [`DEFAULT_HTTP2_WAIT_TIMEOUT`](super::DEFAULT_HTTP2_WAIT_TIMEOUT), 100 ms; the
    /// smaller of this and [`wait_timeout`](Self::wait_timeout) applies).
    ///
    /// On HTTP/2 a request that waits is not backpressure on its client
    /// alone: the DATA its client keeps sending is unread, and unread DATA
    /// holds the *connection's* flow-control window, which every stream of
    /// the connection shares (hyper's server defaults: 1 MiB per stream and
    /// 1 MiB per connection, `hyper::server::conn::http2::Builder::
    /// initial_connection_window_size` and `initial_stream_window_size`).
    /// Once that window is full, the other uploads on the connection stall
    /// until the waiting request ends. So a waiting HTTP/2 request is
    /// answered 503 after this bound, and its body is then read and
    /// discarded, which gives the window back: no stream's wait delays the
    /// others on its connection by more than this. A connection window
    /// larger than the streams' windows times the streams that may wait at
    /// once makes the stall rarer, but does not remove it.
    pub fn http2_wait_timeout(mut self, timeout: Duration) -> Self {
        self.http2_wait_timeout = timeout;
        self
    }

    /// How long a request that holds memory (a block, or chunks received but
    /// not yet copied) may receive no body frame (default
    /// [`DEFAULT_BODY_TIMEOUT`](super::DEFAULT_BODY_TIMEOUT), 10 s). Then its memory goes back and it is
    /// answered `408 Request Timeout` (with `Connection: close` on HTTP/1),
    /// so a client that declares a large body, sends a little of it and goes
    /// silent cannot keep memory from others. It also bounds reading and
    /// discarding the rest of a body after a 503. A request that holds
    /// nothing (its client sent headers only) costs the arena nothing and is
    /// not timed by the layer (hyper's `header_read_timeout` and the server's
    /// own limits govern idle connections).
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The `Retry-After` of a 503, rounded up to whole seconds (default 1 s).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError::MaxBodyExceedsSource`] when `max_body_size` is larger
    /// than the largest buffer the source can ever hand out (such bodies
    /// could never be collected).
    pub fn build(self) -> Result<ArenaBodyLayer<S>, ConfigError> {
        let source_max = self.source.max_len();
        let limit = self.max_body_size.unwrap_or(source_max);
        if limit > source_max {
            return Err(ConfigError::MaxBodyExceedsSource {
                max_body_size: limit,
                source_max,
            });
        }
        let retry_after_secs =
            self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        Ok(ArenaBodyLayer {
            source: self.source,
            config: Config {
                limit,
                wait_timeout: self.wait_timeout,
                http2_wait_timeout: self.http2_wait_timeout,
                body_timeout: self.body_timeout,
                retry_after_secs,
            },
        })
    }
}

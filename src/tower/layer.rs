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
    /// A layer with the defaults: bodies up to `source.max_len()` bytes, and
    /// an unbounded wait for arena capacity.
    pub fn new(source: S) -> Self {
        let config = Config {
            limit: source.max_len(),
            wait_timeout: None,
            retry_after_secs: 1,
        };
        Self { source, config }
    }

    /// Starts configuring a layer over `source`.
    pub fn builder(source: S) -> ArenaBodyLayerBuilder<S> {
        ArenaBodyLayerBuilder {
            source,
            max_body_size: None,
            wait_timeout: None,
            retry_after: Duration::from_secs(1),
        }
    }

    /// The largest body accepted, in bytes.
    pub fn max_body_size(&self) -> usize {
        self.config.limit
    }

    /// How long a request waits for arena capacity before a 503, if bounded.
    pub fn wait_timeout(&self) -> Option<Duration> {
        self.config.wait_timeout
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
    wait_timeout: Option<Duration>,
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

    /// Bounds each wait for arena capacity: a request that cannot get its
    /// buffer within `timeout` is answered `503 Service Unavailable` with a
    /// `Retry-After` header, and releases everything it held.
    ///
    /// Without it a request waits as long as it takes. Bodies without a
    /// `Content-Length` grow while holding their current buffer, so under
    /// heavy contention an unbounded wait can stall every request that holds
    /// a partial body; set a timeout for such traffic.
    ///
    /// # Panics
    ///
    /// The timer is tokio's: a wait that needs it panics outside a tokio
    /// runtime with the time driver enabled (`#[tokio::main]` enables it;
    /// hyper and axum servers always run in one).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
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
                retry_after_secs,
            },
        })
    }
}

//! The `tracing` feature's events: `arena full` once per episode (not per
//! failure), `slow wait for arena memory` when a wait through
//! `BufferSource::allocate_wait` lasted past the threshold, `still waiting
//! for arena memory` while such a wait lasts, and the tower layer's 413/503
//! answers.
//!
//! A small recording subscriber (tracing's own `Subscriber` trait, no
//! extra crate) collects the events of this thread.
#![cfg(feature = "tracing")]

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arenabuf::{AllocError, BuddyArena, BufferSource, FixedArena};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One recorded event: its target, level and fields (`message` included).
#[derive(Debug, Clone)]
struct Recorded {
    target: String,
    level: tracing::Level,
    fields: Vec<(String, String)>,
}

impl Recorded {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Recorded>>>);

impl Recorder {
    fn messages(&self, message: &str) -> Vec<Recorded> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.field("message") == Some(message))
            .cloned()
            .collect()
    }
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Recorded {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

#[test]
fn arena_full_is_reported_once_per_episode() {
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        let fixed = FixedArena::builder(nz(2), nz(64)).build().unwrap();
        let held = (fixed.allocate().unwrap(), fixed.allocate().unwrap());
        for _ in 0..5 {
            assert_eq!(fixed.allocate().unwrap_err(), AllocError::ArenaFull);
        }
        let full = recorder.messages("arena full");
        assert_eq!(full.len(), 1, "one event for five failures: {full:?}");
        assert_eq!(full[0].target, "arenabuf");
        assert_eq!(full[0].level, tracing::Level::WARN);
        assert_eq!(full[0].field("arena"), Some("fixed"));
        assert_eq!(full[0].field("reserved_bytes"), Some("128"));
        assert_eq!(full[0].field("alloc_failure_count"), Some("1"));

        // A success ends the episode; the next failure is a new one.
        drop(held.0);
        let again = fixed.allocate().unwrap();
        assert!(fixed.allocate().is_err());
        assert!(fixed.allocate().is_err());
        let full = recorder.messages("arena full");
        assert_eq!(full.len(), 2, "{full:?}");
        assert_eq!(full[1].field("alloc_failure_count"), Some("6"));
        drop((again, held.1));

        let buddy = BuddyArena::builder(nz(1024), nz(256)).build().unwrap();
        let whole = buddy.allocate(nz(1024)).unwrap();
        for _ in 0..3 {
            assert!(buddy.allocate(nz(256)).is_err());
        }
        let full = recorder.messages("arena full");
        assert_eq!(full.len(), 3, "{full:?}");
        assert_eq!(full[2].field("arena"), Some("buddy"));
        assert_eq!(full[2].field("reserved_bytes"), Some("1024"));
        drop(whole);
    });
}

#[test]
fn slow_waits_are_reported_when_they_end() {
    // Every wait that was not served at once is "slow".
    arenabuf::set_slow_wait_threshold(Duration::ZERO);
    let recorder = Recorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    tracing::subscriber::with_default(recorder.clone(), || {
        rt.block_on(async {
            let hang_guard = Duration::from_secs(30);
            let fixed = FixedArena::builder(nz(1), nz(64)).build().unwrap();
            // Served at once: no event.
            let first = fixed.allocate_wait(nz(10)).await.unwrap();
            assert!(recorder.messages("slow wait for arena memory").is_empty());

            // Waits until `first` drops: one event, outcome "served".
            let release = async {
                tokio::task::yield_now().await;
                drop(first);
            };
            let (served, ()) = tokio::time::timeout(
                hang_guard,
                futures::future::join(fixed.allocate_wait(nz(10)), release),
            )
            .await
            .unwrap();
            let served = served.unwrap();
            let slow = recorder.messages("slow wait for arena memory");
            assert_eq!(slow.len(), 1, "{slow:?}");
            assert_eq!(slow[0].field("arena"), Some("fixed"));
            assert_eq!(slow[0].field("len"), Some("10"));
            assert_eq!(slow[0].field("outcome"), Some("served"));
            assert!(slow[0].field("waited_ms").is_some());

            // A wait dropped before it is served: outcome "cancelled".
            let mut wait = fixed.allocate_wait(nz(10));
            assert!(futures::poll!(&mut wait).is_pending());
            drop(wait);
            let slow = recorder.messages("slow wait for arena memory");
            assert_eq!(slow.len(), 2, "{slow:?}");
            assert_eq!(slow[1].field("outcome"), Some("cancelled"));
            drop(served);

            let buddy = BuddyArena::builder(nz(1024), nz(256)).build().unwrap();
            let whole = buddy.allocate(nz(1024)).unwrap();
            let release = async {
                tokio::task::yield_now().await;
                drop(whole);
            };
            let (block, ()) = tokio::time::timeout(
                hang_guard,
                futures::future::join(buddy.allocate_wait(nz(300)), release),
            )
            .await
            .unwrap();
            assert_eq!(block.unwrap().capacity(), 512);
            let slow = recorder.messages("slow wait for arena memory");
            assert_eq!(slow.len(), 3, "{slow:?}");
            assert_eq!(slow[2].field("arena"), Some("buddy"));
            assert_eq!(slow[2].field("len"), Some("300"));
            assert_eq!(slow[2].field("outcome"), Some("served"));

            // A wait that is never served is reported while it waits: it is
            // polled only when woken, and a timer wakes it at the threshold.
            // (With the zero threshold above, waits polled twice before being
            // served were reported already.)
            let before = recorder.messages("still waiting for arena memory").len();
            arenabuf::set_slow_wait_threshold(Duration::from_millis(20));
            let hold = fixed.allocate().unwrap();
            let waiting = tokio::spawn(fixed.allocate_wait(nz(10)));
            tokio::time::timeout(hang_guard, async {
                while recorder.messages("still waiting for arena memory").len() == before {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("a wait that is never served is reported");
            let still = recorder.messages("still waiting for arena memory");
            assert_eq!(still.len(), before + 1, "{still:?}");
            let still = &still[before];
            assert_eq!(still.field("arena"), Some("fixed"));
            assert_eq!(still.field("len"), Some("10"));
            let waited: u64 = still.field("waited_ms").unwrap().parse().unwrap();
            assert!(waited >= 20, "{still:?}");
            waiting.abort();
            assert!(waiting.await.unwrap_err().is_cancelled());
            drop(hold);
        });
    });
}

/// The tower layer reports its refusals: 413 (info), 503 after
/// `wait_timeout` (warn).
#[cfg(feature = "tower")]
#[test]
fn the_tower_layer_reports_413_and_503() {
    use arenabuf::tower::{ArenaBody, ArenaBodyLayer};
    use http::{Request, Response};
    use tower::{Layer, ServiceExt, service_fn};

    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let arena = BuddyArena::builder(nz(1 << 16), nz(4096)).build().unwrap();
        let layer = ArenaBodyLayer::builder(arena.clone())
            .max_body_size(1 << 16)
            .wait_timeout(Duration::from_millis(20))
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(|req: Request<ArenaBody>| async move {
            Ok::<_, std::convert::Infallible>(Response::new(req.into_body().into_bytes()))
        }));
        let req = |len: usize| {
            Request::post("/")
                .header(http::header::CONTENT_LENGTH, len)
                .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                    0u8;
                    len
                ])))
                .unwrap()
        };
        let res = svc.clone().oneshot(req((1 << 16) + 1)).await.unwrap();
        assert_eq!(res.status(), 413);
        let too_large = recorder.messages("request body too large");
        assert_eq!(too_large.len(), 1, "{too_large:?}");
        assert_eq!(too_large[0].level, tracing::Level::INFO);
        assert_eq!(too_large[0].field("status"), Some("413"));

        let whole = arena.allocate(nz(1 << 16)).unwrap(); // nothing left
        let res = svc.clone().oneshot(req(100)).await.unwrap();
        assert_eq!(res.status(), 503);
        let busy = recorder.messages("request body refused: no arena memory within wait_timeout");
        assert_eq!(busy.len(), 1, "{busy:?}");
        assert_eq!(busy[0].level, tracing::Level::WARN);
        assert_eq!(busy[0].field("waited_ms"), Some("20"));
        drop(whole);
    });
}

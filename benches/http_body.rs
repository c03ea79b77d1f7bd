//! `ArenaBodyLayer` against the usual way of collecting a request body:
//! `http_body_util::BodyExt::collect().await?.to_bytes()` behind tower-http's
//! `RequestBodyLimitLayer`, in the same run (the cases are described in
//! `support/http_body.rs`). Each iteration builds the request in criterion's
//! untimed setup and times the service call, the body collection, the
//! handler's look at the bytes and the drop of everything.
//!
//! Nothing instruments the timed loop: this binary runs on the system
//! allocator. The heap allocations per request are counted by the separate
//! `http_body_allocs` bench, in an untimed pass with a counting allocator.
//!
//! `cargo bench --bench http_body --bench http_body_allocs --features tower -- --noplot`

use std::time::Duration;

#[path = "support/http_body.rs"]
mod common;

use common::{MODES, SIZES, chunks, request, services};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let (arena, mut run_arena, mut run_usual) = services();
    let mut group = c.benchmark_group("http_body");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (size, name) in SIZES {
        let chunks = chunks(size);
        group.throughput(Throughput::Bytes(size as u64));
        for (content_length, mode) in MODES {
            let param = format!("{name}/{mode}");
            group.bench_function(BenchmarkId::new("arena_layer", &param), |b| {
                b.iter_batched(
                    || request(chunks, size, content_length),
                    &mut run_arena,
                    BatchSize::SmallInput,
                )
            });
            group.bench_function(BenchmarkId::new("collect_limit", &param), |b| {
                b.iter_batched(
                    || request(chunks, size, content_length),
                    &mut run_usual,
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
    assert_eq!(
        arena.metrics().live_bytes,
        0,
        "the arena layer leaked a body"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Heap allocations per request of `ArenaBodyLayer` and of `collect()`
//! behind `RequestBodyLimitLayer`, for the cases `http_body` times: an
//! untimed pass with a counting global allocator, kept out of the timing
//! binary so that it instruments no timed loop. Request construction is
//! excluded. Prints the counts and writes them to
//! `<target>/criterion/http_body_allocs.json` for `tools/bench-report`.
//!
//! `cargo bench --bench http_body_allocs --features tower`

mod support;

#[path = "support/http_body.rs"]
mod common;

use common::{Body, MODES, SIZES, chunks, request, services};

#[global_allocator]
static GLOBAL: support::Counting = support::Counting;

fn main() {
    let (arena, mut run_arena, mut run_usual) = services();
    println!("heap allocations per request (request construction excluded):");
    let mut cases = Vec::new();
    for (size, name) in SIZES {
        let chunks = chunks(size);
        for (content_length, mode) in MODES {
            let count = |run: &mut dyn FnMut(http::Request<Body>)| {
                const N: u64 = 200;
                // One request first, untimed and uncounted: lazily made
                // state (the arena's thread cache, the allocator's) is not
                // per request.
                run(request(chunks, size, content_length));
                let mut total = 0;
                for _ in 0..N {
                    let req = request(chunks, size, content_length);
                    let before = support::allocations();
                    run(req);
                    total += support::allocations() - before;
                }
                total as f64 / N as f64
            };
            let (a, u) = (count(&mut run_arena), count(&mut run_usual));
            println!("  {name:>5} {mode:<14}  arena layer {a:>5.2}   collect+limit {u:>5.2}");
            for (imp, count) in [("arena_layer", a), ("collect_limit", u)] {
                cases.push(format!(
                    "    {{\"id\": \"http_body/{imp}/{name}/{mode}\", \"allocations\": {count}}}"
                ));
            }
        }
    }
    assert_eq!(
        arena.metrics().live_bytes,
        0,
        "the arena layer leaked a body"
    );
    let json = format!("{{\n  \"cases\": [\n{}\n  ]\n}}\n", cases.join(",\n"));
    support::write_criterion_file("http_body_allocs.json", &json);
}

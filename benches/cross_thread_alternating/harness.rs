// The cross-thread pipeline of `benches/allocator_groups` (`cross_thread`),
// timed side by side: included by `benches/cross_thread_alternating.rs` (the
// system allocator) and `benches/cross_thread_alternating_mimalloc.rs`.

use std::num::NonZeroUsize;
use std::sync::mpsc;
use std::time::Instant;

use arenabuf::{BuddyArena, FixedArena};
use bytes::{BufMut, Bytes, BytesMut};

const BATCH: usize = 256;
const BUFFERS: usize = 1 << 18;
const ROUNDS: usize = 7;
const CAPACITY: usize = 32_768;

/// Nanoseconds per buffer for `BUFFERS` buffers made by `make` on this
/// thread and dropped on another, `in_flight` at most in the channel.
fn pipeline<T: Send + 'static>(in_flight: usize, mut make: impl FnMut() -> T) -> f64 {
    let (tx, rx) = mpsc::sync_channel::<Vec<T>>(in_flight / BATCH);
    let consumer = std::thread::spawn(move || {
        for batch in rx {
            drop(std::hint::black_box(batch));
        }
    });
    let start = Instant::now();
    for _ in 0..BUFFERS / BATCH {
        let batch: Vec<T> = (0..BATCH).map(|_| make()).collect();
        tx.send(batch).unwrap();
    }
    drop(tx);
    consumer.join().unwrap();
    start.elapsed().as_nanos() as f64 / BUFFERS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints the median time per buffer of each implementation and its net
/// ratio to `BytesMut` ((ours - floor) / (bytesmut - floor)).
fn run(label: &str) {
    let nz = |n| NonZeroUsize::new(n).unwrap();
    for size in [256usize, 4096] {
        for in_flight in [1024usize, 16_384] {
            let arena = BuddyArena::builder(nz(CAPACITY * size), nz(size.min(256)))
                .build()
                .unwrap();
            let fixed = FixedArena::builder(nz(CAPACITY), nz(size)).build().unwrap();
            let data = vec![7u8; size];
            let mut times: [Vec<f64>; 6] = Default::default();
            for _ in 0..ROUNDS {
                times[0].push(pipeline(in_flight, || Bytes::from_static(b"floor")));
                times[1].push(pipeline(in_flight, || {
                    let mut b = BytesMut::with_capacity(size);
                    b.put_slice(&data);
                    b.freeze()
                }));
                times[2].push(pipeline(in_flight, || {
                    let mut b = arena.allocate(nz(size)).unwrap();
                    b.put_slice(&data);
                    b.freeze()
                }));
                times[3].push(pipeline(in_flight, || {
                    let mut b = arena.allocate(nz(size)).unwrap();
                    b.put_slice(&data);
                    b
                }));
                times[4].push(pipeline(in_flight, || {
                    let mut b = fixed.allocate().unwrap();
                    b.put_slice(&data);
                    b.freeze()
                }));
                times[5].push(pipeline(in_flight, || {
                    let mut b = fixed.allocate().unwrap();
                    b.put_slice(&data);
                    b
                }));
            }
            let [floor, bytesmut, buddy, unfrozen, fixed_t, fixed_unfrozen] = times.map(median);
            let net = |t: f64| (t - floor) / (bytesmut - floor);
            println!(
                "{label} s{size}_f{in_flight}: floor {floor:.0} ns, bytesmut {bytesmut:.0} ns, \
                 fixed {fixed_t:.0} ns (net {:.2}x), fixed unfrozen {fixed_unfrozen:.0} ns (net {:.2}x), \
                 buddy {buddy:.0} ns (net {:.2}x), buddy unfrozen {unfrozen:.0} ns (net {:.2}x)",
                net(fixed_t),
                net(fixed_unfrozen),
                net(buddy),
                net(unfrozen)
            );
        }
    }
}

//! A random program of allocate / write / freeze / clone / slice / drop
//! (and `allocate_wait` polled by hand, then picked up or cancelled) against
//! a `FixedArena` and a `BuddyArena`, checked against a model:
//!
//! - no two live allocations overlap (address ranges of every buffer and
//!   every frozen owner still referenced);
//! - every buffer and every frozen piece still holds exactly what was
//!   written (so a slot reused too early, or a write into the wrong slot,
//!   shows up), and a new buffer shows nothing;
//! - all memory returns: once everything is dropped, no slot or byte is
//!   live, the buddy arena has coalesced whole, and the metrics agree with
//!   the model's counts of allocations and spills. Or, when the program
//!   drops the arena handles first, the last piece frees the arena
//!   (LeakSanitizer checks).
#![no_main]

#[path = "common.rs"]
mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use arenabuf::{AllocError, BuddyArena, Buffer, BufferSource, FixedArena};
use bytes::{BufMut, Bytes};
use common::{Input, nz};
use libfuzzer_sys::fuzz_target;

type Wait = Box<dyn Future<Output = Result<Buffer, AllocError>> + Unpin>;

const FIXED: usize = 0;
const BUDDY: usize = 1;

struct LiveBuf {
    buf: Buffer,
    arena: usize,
    written: Vec<u8>,
    /// Arena memory it holds, `None` once spilled to the heap.
    range: Option<(usize, usize)>,
}

struct Owner {
    content: Vec<u8>,
    range: Option<(usize, usize)>,
    pieces: usize,
}

struct Piece {
    bytes: Bytes,
    /// The frozen buffer it keeps alive; `None` for an empty slice, which
    /// `Bytes::slice` makes without a reference to the owner.
    owner: Option<usize>,
    offset: usize,
}

#[derive(Default)]
struct Counts {
    allocs: [u64; 2],
    spills: [u64; 2],
    /// Waits dropped while pending: each may have held a grant it never
    /// picked up, which the metrics count as an allocation.
    cancelled: [u64; 2],
}

struct Model {
    bufs: Vec<LiveBuf>,
    owners: Vec<Owner>,
    pieces: Vec<Piece>,
    waits: Vec<(Wait, usize)>,
    counts: Counts,
    auto_spill: [bool; 2],
}

impl Model {
    fn live_ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let bufs = self.bufs.iter().filter_map(|b| b.range);
        let owners = self
            .owners
            .iter()
            .filter(|o| o.pieces > 0)
            .filter_map(|o| o.range);
        bufs.chain(owners)
    }

    fn add_buf(&mut self, buf: Buffer, arena: usize) {
        assert!(
            buf.is_empty() && buf[..].is_empty(),
            "a new buffer shows bytes"
        );
        assert!(!buf.is_spilled());
        let start = buf.as_ptr() as usize;
        let range = (start, start + buf.capacity());
        for (s, e) in self.live_ranges() {
            assert!(
                range.1 <= s || e <= range.0,
                "overlap: new {range:x?} vs live ({s:#x}, {e:#x})"
            );
        }
        self.counts.allocs[arena] += 1;
        self.bufs.push(LiveBuf {
            buf,
            arena,
            written: Vec::new(),
            range: Some(range),
        });
    }

    fn check_piece(&self, p: &Piece) {
        let Some(owner) = p.owner else {
            assert!(p.bytes.is_empty());
            return;
        };
        let owner = &self.owners[owner];
        assert_eq!(
            &p.bytes[..],
            &owner.content[p.offset..p.offset + p.bytes.len()],
            "a frozen piece changed"
        );
    }

    fn drop_piece(&mut self, i: usize) {
        let p = self.pieces.swap_remove(i);
        self.check_piece(&p);
        if let Some(owner) = p.owner {
            self.owners[owner].pieces -= 1;
        }
    }

    fn drop_buf(&mut self, i: usize) {
        let b = self.bufs.swap_remove(i);
        assert_eq!(&b.buf[..], &b.written[..], "buffer contents changed");
    }

    fn check_all(&self) {
        for b in &self.bufs {
            assert_eq!(&b.buf[..], &b.written[..], "buffer contents changed");
        }
        for p in &self.pieces {
            self.check_piece(p);
        }
    }
}

fn poll_once(wait: &mut Wait) -> Poll<Result<Buffer, AllocError>> {
    Pin::new(wait).poll(&mut Context::from_waker(Waker::noop()))
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let config = input.u8();
    let (spill_f, spill_b) = (config & 1 != 0, config & 2 != 0);
    let (zero_f, zero_b) = (config & 4 != 0, config & 8 != 0);
    let handles_first = config & 16 != 0;
    let slots = 1 + usize::from(input.u8() % 8);
    let slot_cap = input.pick(&[8, 16, 64]);
    let buddy_total = input.pick(&[64, 256, 1024]);
    let buddy_min = input.pick(&[8, 16]);

    let mut fb = FixedArena::builder(nz(slots), nz(slot_cap));
    if spill_f {
        fb = fb.auto_spill();
    }
    if zero_f {
        fb = fb.zero_on_release();
    }
    let mut bb = BuddyArena::builder(nz(buddy_total), nz(buddy_min));
    if spill_b {
        bb = bb.auto_spill();
    }
    if zero_b {
        bb = bb.zero_on_release();
    }
    let fixed = fb.build().expect("valid geometry");
    let buddy = bb.build().expect("valid geometry");

    let mut m = Model {
        bufs: Vec::new(),
        owners: Vec::new(),
        pieces: Vec::new(),
        waits: Vec::new(),
        counts: Counts::default(),
        auto_spill: [spill_f, spill_b],
    };

    for _ in 0..256 {
        if input.0.is_empty() {
            break;
        }
        let op = input.u8();
        let arg = input.u8();
        let arg2 = input.u16();
        match op % 12 {
            0 => match fixed.allocate() {
                Ok(buf) => m.add_buf(buf, FIXED),
                Err(AllocError::ArenaFull) => {}
                Err(e) => panic!("fixed allocate: {e}"),
            },
            1 => {
                let len = 1 + usize::from(arg2) % (buddy_total + 8);
                match buddy.allocate(nz(len)) {
                    Ok(buf) => {
                        assert!(buf.capacity() >= len.max(buddy_min));
                        m.add_buf(buf, BUDDY);
                    }
                    Err(AllocError::ArenaFull) => assert!(len <= buddy_total),
                    Err(AllocError::RequestTooLarge { .. }) => assert!(len > buddy_total),
                    Err(e) => panic!("buddy allocate: {e}"),
                }
            }
            2 if !m.bufs.is_empty() => {
                let i = usize::from(arg) % m.bufs.len();
                let auto_spill = m.auto_spill[m.bufs[i].arena];
                let b = &mut m.bufs[i];
                let mut n = usize::from(arg2 >> 8) % 80;
                if !auto_spill {
                    n = n.min(b.buf.remaining_mut());
                }
                let fill = arg2 as u8;
                let data: Vec<u8> = (0..n).map(|k| fill.wrapping_add(k as u8)).collect();
                let was_spilled = b.buf.is_spilled();
                if arg & 0x80 != 0 {
                    b.buf.put_slice(&data);
                } else {
                    for &x in &data {
                        b.buf.put_u8(x);
                    }
                }
                b.written.extend_from_slice(&data);
                if !was_spilled && b.buf.is_spilled() {
                    b.range = None;
                    let arena = b.arena;
                    m.counts.spills[arena] += 1;
                }
                assert_eq!(&m.bufs[i].buf[..], &m.bufs[i].written[..]);
            }
            3 if !m.bufs.is_empty() => {
                let i = usize::from(arg) % m.bufs.len();
                let b = m.bufs.swap_remove(i);
                let range = if b.buf.is_spilled() { None } else { b.range };
                let bytes = b.buf.freeze();
                assert_eq!(&bytes[..], &b.written[..]);
                m.owners.push(Owner {
                    content: b.written,
                    range,
                    pieces: 1,
                });
                m.pieces.push(Piece {
                    bytes,
                    owner: Some(m.owners.len() - 1),
                    offset: 0,
                });
            }
            4 if !m.pieces.is_empty() => {
                let p = &m.pieces[usize::from(arg) % m.pieces.len()];
                let clone = Piece {
                    bytes: p.bytes.clone(),
                    owner: p.owner,
                    offset: p.offset,
                };
                if let Some(owner) = clone.owner {
                    m.owners[owner].pieces += 1;
                }
                m.pieces.push(clone);
            }
            5 if !m.pieces.is_empty() => {
                let p = &m.pieces[usize::from(arg) % m.pieces.len()];
                let len = p.bytes.len();
                let start = usize::from(arg2 as u8) % (len + 1);
                let end = start + usize::from(arg2 >> 8) % (len - start + 1);
                let slice = Piece {
                    bytes: p.bytes.slice(start..end),
                    owner: p.owner.filter(|_| end > start),
                    offset: p.offset + start,
                };
                if let Some(owner) = slice.owner {
                    m.owners[owner].pieces += 1;
                }
                m.pieces.push(slice);
            }
            6 if !m.bufs.is_empty() => m.drop_buf(usize::from(arg) % m.bufs.len()),
            7 if !m.pieces.is_empty() => m.drop_piece(usize::from(arg) % m.pieces.len()),
            8 => {
                let (mut wait, arena): (Wait, usize) = if arg & 1 == 0 {
                    (
                        Box::new(fixed.allocate_wait(nz(1 + usize::from(arg2) % slot_cap))),
                        FIXED,
                    )
                } else {
                    let len = 1 + usize::from(arg2) % buddy_total;
                    (Box::new(buddy.allocate_wait(nz(len))), BUDDY)
                };
                match poll_once(&mut wait) {
                    Poll::Ready(Ok(buf)) => m.add_buf(buf, arena),
                    Poll::Ready(Err(e)) => panic!("allocate_wait of a size that fits: {e}"),
                    Poll::Pending => m.waits.push((wait, arena)),
                }
            }
            9 if !m.waits.is_empty() => {
                let i = usize::from(arg) % m.waits.len();
                if let Poll::Ready(got) = poll_once(&mut m.waits[i].0) {
                    let (_, arena) = m.waits.swap_remove(i);
                    m.add_buf(got.expect("a size that fits"), arena);
                }
            }
            10 if !m.waits.is_empty() => {
                // Cancelled: waiting, or granted and never picked up.
                let (wait, arena) = m.waits.swap_remove(usize::from(arg) % m.waits.len());
                drop(wait);
                m.counts.cancelled[arena] += 1;
            }
            _ => m.check_all(),
        }
    }

    m.check_all();
    for (wait, arena) in m.waits.drain(..) {
        drop(wait);
        m.counts.cancelled[arena] += 1;
    }
    if handles_first {
        drop(fixed);
        drop(buddy);
        while !m.pieces.is_empty() {
            m.check_all();
            m.drop_piece(0);
        }
        while !m.bufs.is_empty() {
            m.drop_buf(m.bufs.len() - 1);
        }
        // The last piece or buffer freed the arenas (LeakSanitizer checks).
        return;
    }
    while !m.bufs.is_empty() {
        m.drop_buf(0);
    }
    while !m.pieces.is_empty() {
        m.drop_piece(m.pieces.len() - 1);
    }
    let f = fixed.metrics();
    assert_eq!((f.live_slots, f.waiting_tasks), (0, 0), "{f:?}");
    let allocs = |a: usize| m.counts.allocs[a]..=m.counts.allocs[a] + m.counts.cancelled[a];
    assert!(allocs(FIXED).contains(&f.alloc_count), "{f:?}");
    assert_eq!(f.spill_count, m.counts.spills[FIXED], "{f:?}");
    let b = buddy.metrics();
    assert_eq!((b.live_bytes, b.waiting_tasks), (0, 0), "{b:?}");
    assert_eq!(b.largest_free_block, buddy_total, "not coalesced: {b:?}");
    assert!(allocs(BUDDY).contains(&b.alloc_count), "{b:?}");
    assert_eq!(b.spill_count, m.counts.spills[BUDDY], "{b:?}");
    assert_eq!(fixed.allocate().map(|b| b.capacity()), Ok(slot_cap));
    assert!(buddy.allocate(nz(buddy_total)).is_ok());
});

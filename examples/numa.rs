//! One arena per NUMA node, workers pinned to their node, first-touch page
//! placement, and a bounded cross-node fallback (see `docs/numa.md`).
//!
//! ```sh
//! cargo run --release --example numa                      # the machine's real nodes
//! cargo run --release --example numa -- --simulate-nodes 2 # split the CPUs into 2 pretend nodes
//! ```
//!
//! For every node it builds a `FixedArena` on a thread pinned to that node's
//! CPUs and writes every page of it there (first touch puts the pages on the
//! node), then starts a tokio runtime whose worker threads are pinned to the
//! same CPUs. Tasks allocate through a `NodeSource`: the local arena first,
//! then at most `--fallback` other nodes' arenas in distance order, and if
//! all of those are full, they wait on the local arena (backpressure stays
//! local). At the end it prints, per node, how many buffers came from the
//! local arena and how many from other nodes, and checks that every slot
//! came back.
//!
//! Pinning uses `sched_setaffinity` and so is Linux-only; elsewhere the
//! example runs unpinned (the allocation pattern still works, placement is
//! up to the OS).

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arenabuf::{AllocError, Buffer, BufferSource, FixedArena, FixedMetrics, FixedWait};
use bytes::BufMut;
use clap::Parser;

/// One arena per NUMA node with pinned workers and a bounded cross-node fallback.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Pretend the machine has this many nodes, splitting its CPUs evenly
    /// (to see the fallback on a one-node machine). 0: use the real nodes
    /// from /sys/devices/system/node.
    #[arg(long, default_value_t = 0)]
    simulate_nodes: usize,
    /// Slots per node arena.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    slots: u64,
    /// Slot size in bytes.
    #[arg(long, default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(1..=(64 << 20)))]
    slot_size: u64,
    /// How many other nodes a full node may borrow from (nearest first).
    #[arg(long, default_value_t = 1)]
    fallback: usize,
    /// Tasks per node; each holds one buffer at a time.
    #[arg(long, default_value_t = 96, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    tasks: u64,
    /// Buffers each task allocates.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    rounds: u64,
}

/// A NUMA node: its id, its CPUs, and its distance to every node (as in
/// `/sys/devices/system/node/node<N>/distance`, indexed by node position).
#[derive(Debug, Clone)]
struct Node {
    id: usize,
    cpus: Vec<usize>,
    distance: Vec<u32>,
}

/// Parses a kernel CPU list such as `0-3,8-11,16`.
fn parse_cpulist(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// The machine's nodes that have CPUs, from sysfs; `None` if there is no
/// NUMA information (not Linux, or a kernel without it).
fn real_nodes() -> Option<Vec<Node>> {
    let mut nodes = Vec::new();
    for entry in std::fs::read_dir("/sys/devices/system/node")
        .ok()?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let cpus = parse_cpulist(&std::fs::read_to_string(entry.path().join("cpulist")).ok()?)?;
        let distance = std::fs::read_to_string(entry.path().join("distance"))
            .ok()?
            .split_whitespace()
            .map(|d| d.parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        if !cpus.is_empty() {
            nodes.push(Node { id, cpus, distance });
        }
    }
    nodes.sort_by_key(|n| n.id);
    // `distance` is indexed by node id; re-index it by position among the
    // nodes kept (memory-only nodes were dropped).
    let ids: Vec<usize> = nodes.iter().map(|n| n.id).collect();
    for n in &mut nodes {
        n.distance = ids
            .iter()
            .map(|&id| n.distance.get(id).copied().unwrap_or(u32::MAX))
            .collect();
    }
    (!nodes.is_empty()).then_some(nodes)
}

/// `count` pretend nodes over the CPUs this process may use.
fn simulated_nodes(count: usize) -> Vec<Node> {
    let cpus: Vec<usize> = allowed_cpus();
    let count = count.clamp(1, cpus.len().max(1));
    let per = cpus.len().div_ceil(count).max(1);
    let mut nodes: Vec<Node> = cpus
        .chunks(per)
        .enumerate()
        .map(|(id, c)| Node {
            id,
            cpus: c.to_vec(),
            distance: Vec::new(),
        })
        .collect();
    let n = nodes.len();
    for (i, node) in nodes.iter_mut().enumerate() {
        node.distance = (0..n).map(|j| if i == j { 10 } else { 20 }).collect();
    }
    nodes
}

/// The CPUs this process may run on.
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data, valid when zeroed; the pointer and
    // size passed to `sched_getaffinity` describe that one value.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
                .collect();
        }
        set
    };
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the size of the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, NonZeroUsize::get)).collect()
}

/// Pins the calling thread to `cpus`.
#[cfg(target_os = "linux")]
fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cpus`: a zeroed `cpu_set_t` is valid, CPU_SET
    // is only called with CPUs below CPU_SETSIZE, and the pointer and size
    // passed to `sched_setaffinity` describe that one value.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpus: &[usize]) -> std::io::Result<()> {
    Ok(())
}

/// Builds a node's arena on a thread pinned to the node, and writes every
/// byte of it there.
///
/// The arena reserves its region with the global allocator and does not
/// touch it (a large region is fresh `mmap` memory), so under Linux's
/// default first-touch policy each page lands on the node of the CPU that
/// first writes it. Writing every slot here, on a pinned thread, puts the
/// whole region on this node before any worker (local or remote) uses it.
fn build_on_node(
    node: &Node,
    slots: NonZeroUsize,
    slot_size: NonZeroUsize,
) -> Result<FixedArena, String> {
    let cpus = node.cpus.clone();
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Err(e) = pin_current_thread(&cpus) {
                // Still correct, only placement is left to the kernel.
                eprintln!("warning: could not pin the builder to CPUs {cpus:?}: {e}");
            }
            let arena = FixedArena::builder(slots, slot_size)
                .build()
                .map_err(|e| e.to_string())?;
            let mut held = Vec::with_capacity(slots.get());
            while let Ok(mut buf) = arena.allocate() {
                buf.put_bytes(0, buf.capacity()); // the first touch of every page
                held.push(buf);
            }
            drop(held);
            Ok(arena)
        })
        .join()
        .map_err(|_| "the pinned builder thread panicked".to_string())?
    })
}

/// A node's buffer source: its own arena first, then a few others.
#[derive(Clone)]
struct NodeSource {
    local: FixedArena,
    /// Other nodes' arenas, nearest first, at most `--fallback` of them.
    remote: Arc<[FixedArena]>,
    /// Buffers this node took from other nodes (the rare path only).
    borrowed: Arc<AtomicU64>,
}

impl NodeSource {
    /// A buffer from the local arena or, when it is full, from the nearest
    /// remote arena with a free slot.
    fn now(&self, len: NonZeroUsize) -> Result<Buffer, AllocError> {
        match self.local.try_allocate(len) {
            Err(AllocError::ArenaFull) => {}
            done => return done,
        }
        for arena in self.remote.iter() {
            if let Ok(buf) = arena.try_allocate(len) {
                self.borrowed.fetch_add(1, Ordering::Relaxed);
                return Ok(buf);
            }
        }
        Err(AllocError::ArenaFull)
    }
}

/// [`NodeSource`]'s wait: served at once, or waiting on the local arena.
enum NodeWait {
    Ready(Option<Result<Buffer, AllocError>>),
    Local(FixedWait),
}

impl Future for NodeWait {
    type Output = Result<Buffer, AllocError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            NodeWait::Ready(r) => Poll::Ready(r.take().expect("NodeWait polled after completion")),
            NodeWait::Local(w) => Pin::new(w).poll(cx),
        }
    }
}

impl BufferSource for NodeSource {
    type Wait = NodeWait;
    /// The local node's arena (each node's source reports its own).
    type Metrics = FixedMetrics;

    fn metrics(&self) -> FixedMetrics {
        self.local.metrics()
    }

    fn max_len(&self) -> usize {
        self.local.slot_capacity()
    }

    fn try_allocate(&self, len: NonZeroUsize) -> Result<Buffer, AllocError> {
        self.now(len)
    }

    /// Never waits on a remote node: when the local arena and the allowed
    /// remote ones are all full, the task queues on its own node, so
    /// backpressure stays local and a busy node cannot drain the others.
    fn allocate_wait(&self, len: NonZeroUsize) -> NodeWait {
        match self.now(len) {
            Err(AllocError::ArenaFull) => NodeWait::Local(self.local.allocate_wait(len)),
            done => NodeWait::Ready(Some(done)),
        }
    }

    fn note_spill(&self) {
        self.local.note_spill();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let nodes = if args.simulate_nodes > 0 {
        simulated_nodes(args.simulate_nodes)
    } else {
        real_nodes().unwrap_or_else(|| simulated_nodes(1))
    };
    let nz = |n: u64| NonZeroUsize::new(n as usize).ok_or("sizes are at least 1");
    let (slots, slot_size) = (nz(args.slots)?, nz(args.slot_size)?);
    println!(
        "{} node(s){}; one arena of {} x {} B per node, fallback to at most {} other node(s)",
        nodes.len(),
        if args.simulate_nodes > 0 {
            " (simulated)"
        } else {
            ""
        },
        slots,
        slot_size,
        args.fallback
    );

    // 1. An arena per node, built and first-touched on that node.
    let arenas: Vec<FixedArena> = nodes
        .iter()
        .map(|n| build_on_node(n, slots, slot_size))
        .collect::<Result<_, _>>()?;

    // 2. Each node's source: local first, then the nearest others.
    let sources: Vec<NodeSource> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut others: Vec<usize> = (0..nodes.len()).filter(|&j| j != i).collect();
            others.sort_by_key(|&j| n.distance.get(j).copied().unwrap_or(u32::MAX));
            NodeSource {
                local: arenas[i].clone(),
                remote: others
                    .iter()
                    .take(args.fallback)
                    .map(|&j| arenas[j].clone())
                    .collect(),
                borrowed: Arc::new(AtomicU64::new(0)),
            }
        })
        .collect();

    // 3. A runtime per node whose workers are pinned to its CPUs. Node 0
    //    gets more work than its arena holds, so it borrows.
    let runtimes: Vec<tokio::runtime::Runtime> = nodes
        .iter()
        .map(|n| {
            let cpus = n.cpus.clone();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n.cpus.len().max(1))
                .on_thread_start(move || {
                    if let Err(e) = pin_current_thread(&cpus) {
                        eprintln!("warning: could not pin a worker to CPUs {cpus:?}: {e}");
                    }
                })
                .enable_time()
                .build()
        })
        .collect::<Result<_, _>>()?;
    let handles: Vec<_> = runtimes
        .iter()
        .zip(&sources)
        .enumerate()
        .map(|(i, (rt, source))| {
            let tasks = if i == 0 {
                args.tasks * 2
            } else {
                args.tasks / 2
            };
            let (source, rounds) = (source.clone(), args.rounds);
            rt.spawn(async move {
                let workers: Vec<_> = (0..tasks.max(1))
                    .map(|t| {
                        let source = source.clone();
                        tokio::spawn(async move {
                            let len = NonZeroUsize::new(source.max_len()).expect("non-zero slots");
                            for r in 0..rounds {
                                let mut buf = source.allocate_wait(len).await?;
                                buf.put_u64(t ^ r);
                                let frame = buf.freeze();
                                tokio::time::sleep(Duration::from_micros(50)).await;
                                assert_eq!(frame[..8], (t ^ r).to_be_bytes());
                            }
                            Ok::<u64, AllocError>(rounds)
                        })
                    })
                    .collect();
                let mut done = 0;
                for w in workers {
                    done += w.await.expect("worker panicked")?;
                }
                Ok::<u64, AllocError>(done)
            })
        })
        .collect();

    let mut failed = false;
    for (i, (handle, rt)) in handles.into_iter().zip(&runtimes).enumerate() {
        let done = rt.block_on(handle)??;
        let borrowed = sources[i].borrowed.load(Ordering::Relaxed);
        let m = arenas[i].metrics();
        // `alloc_count` includes the first-touch pass (one per slot) and
        // the buffers other nodes borrowed from this arena.
        println!(
            "node {} (CPUs {:?}): {done} buffers used, {borrowed} of them borrowed from other nodes; \
             its arena served {} allocations, {} had to wait",
            nodes[i].id,
            nodes[i].cpus,
            m.alloc_count - slots.get() as u64,
            m.wait_count
        );
        failed |= m.live_slots != 0;
    }
    drop(runtimes);
    if failed {
        return Err("a slot was not returned".into());
    }
    println!("every slot of every node's arena came back");
    Ok(())
}

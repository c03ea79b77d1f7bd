//! The command line: a few `--name value` options, parsed by hand so that
//! the demo builds without an argument-parsing crate.

/// What `--help` prints: what the demo does first, then the knobs.
const HELP: &str = "\
ingest: arenabuf's main demonstration.

A loopback TCP server reads length-delimited frames from many connections
straight into a small capped arena (arenabuf's ArenaReader), and a
deliberately slow consumer holds each frame a while. The arena fills, the
readers stop reading their sockets, the kernel's socket buffers fill, and the
clients' writes block: backpressure, with the server's memory held under the
cap. Every frame is checked byte for byte. A status line shows frames, the
current MiB/s, arena use against its cap, readers waiting for memory, and the
server's heap; after the clients stop it keeps going while the server drains
what the kernel buffers still hold. With --compare, the same load then runs
through tokio_util's FramedRead + LengthDelimitedCodec (a fresh BytesMut per
frame), and the summary shows peak memory and throughput side by side.

Usage: cargo run --release -p ingest-demo -- [OPTIONS]

The knobs that matter:
  --consumer-delay-us <US>   Time the consumer spends on each frame; 0 for
                             as fast as it can (no backpressure) [default: 20]
  --arena-mib <MIB>          The arena's size, its hard cap [default: 8]
  --max-frame <BYTES>        Largest frame payload; with many connections
                             and large frames the arena fills sooner
                             [default: 16384]
  --compare                  Run the same load again through FramedRead +
                             LengthDelimitedCodec and compare

Other options:
  --connections <N>          Client connections, 1..=4096 [default: 64]
  --min-frame <BYTES>        Smallest frame payload, at least 12 [default: 64]
  --arena <fixed|buddy>      fixed: uniform slots of the chunk size (max-frame
                             + 4, rounded up to a power of two, at least
                             16 KiB); buddy: power-of-two blocks from one
                             region [default: fixed]
  --duration <SECS>          How long the clients send, per phase; the
                             drain afterwards takes what it takes
                             [default: 10]
  -h, --help                 Print this help
  -V, --version              Print the version
";

/// Which arena the server reads into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArenaKind {
    /// Uniform slots of the chunk size.
    Fixed,
    /// Power-of-two blocks from one region.
    Buddy,
}

/// The demo's options (see [`HELP`]).
#[derive(Debug, Clone)]
pub struct Args {
    pub connections: u32,
    pub min_frame: usize,
    pub max_frame: usize,
    pub arena: ArenaKind,
    pub arena_mib: usize,
    pub consumer_delay_us: u64,
    pub duration: f64,
    pub compare: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            connections: 64,
            min_frame: 64,
            max_frame: 16 * 1024,
            arena: ArenaKind::Fixed,
            arena_mib: 8,
            consumer_delay_us: 20,
            duration: 10.0,
            compare: false,
        }
    }
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name} takes a number, not {value:?}"))
}

impl Args {
    /// Parses the command line (without the program name). `Ok(None)`
    /// after printing `--help` or `--version`.
    pub fn parse(mut argv: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let mut args = Args::default();
        while let Some(arg) = argv.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg, None),
            };
            match name.as_str() {
                "-h" | "--help" => {
                    print!("{HELP}");
                    return Ok(None);
                }
                "-V" | "--version" => {
                    println!("ingest {}", env!("CARGO_PKG_VERSION"));
                    return Ok(None);
                }
                "--compare" => args.compare = true,
                "--connections"
                | "--min-frame"
                | "--max-frame"
                | "--arena"
                | "--arena-mib"
                | "--consumer-delay-us"
                | "--duration" => {
                    let value = match inline {
                        Some(v) => v,
                        None => argv.next().ok_or_else(|| format!("{name} needs a value"))?,
                    };
                    match name.as_str() {
                        "--connections" => args.connections = number(&name, &value)?,
                        "--min-frame" => args.min_frame = number(&name, &value)?,
                        "--max-frame" => args.max_frame = number(&name, &value)?,
                        "--arena-mib" => args.arena_mib = number(&name, &value)?,
                        "--consumer-delay-us" => args.consumer_delay_us = number(&name, &value)?,
                        "--duration" => args.duration = number(&name, &value)?,
                        _ => {
                            args.arena = match value.as_str() {
                                "fixed" => ArenaKind::Fixed,
                                "buddy" => ArenaKind::Buddy,
                                _ => {
                                    return Err(format!(
                                        "--arena is fixed or buddy, not {value:?}"
                                    ));
                                }
                            }
                        }
                    }
                }
                _ => return Err(format!("unknown option {name:?}")),
            }
        }
        args.validate()?;
        Ok(Some(args))
    }

    /// The arena's cap, in bytes.
    pub fn cap(&self) -> usize {
        self.arena_mib * 1024 * 1024
    }

    /// The reader's chunk: a whole frame with its 4-byte length, rounded up
    /// to a power of two, at least 16 KiB (also the fixed arena's slot).
    pub fn chunk(&self) -> usize {
        (self.max_frame + 4).next_power_of_two().max(16 * 1024)
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=4096).contains(&self.connections) {
            return Err("--connections must be between 1 and 4096".into());
        }
        if self.min_frame < crate::HEADER {
            return Err(format!(
                "--min-frame must be at least {} bytes (the frame header)",
                crate::HEADER
            ));
        }
        if self.max_frame < self.min_frame {
            return Err("--max-frame must be at least --min-frame".into());
        }
        if self.max_frame > u32::MAX as usize - 4 {
            return Err("--max-frame must fit the 4-byte length field".into());
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            return Err("--duration must be more than 0 and at most 3600 seconds".into());
        }
        if self.arena_mib == 0 || self.arena_mib > 64 * 1024 {
            return Err("--arena-mib must be between 1 and 65536".into());
        }
        // A frame (with its 4-byte length) must fit one slot or block of
        // the arena, and a slot must not exceed the arena's cap.
        let cap = self.cap();
        let chunk = self
            .max_frame
            .checked_add(4)
            .and_then(usize::checked_next_power_of_two)
            .map(|c| c.max(16 * 1024));
        if chunk.is_none_or(|c| c > cap) {
            return Err(format!(
                "--max-frame {} does not fit a {} MiB arena: frames up to {} bytes fit; \
                 lower --max-frame or raise --arena-mib",
                self.max_frame,
                self.arena_mib,
                cap - 4
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{ArenaKind, Args};

    fn parse(line: &str) -> Result<Option<Args>, String> {
        Args::parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn options_parse_in_both_forms() {
        let a = parse("--connections 8 --max-frame=1000 --arena buddy --duration 0.5 --compare")
            .unwrap()
            .unwrap();
        assert_eq!(a.connections, 8);
        assert_eq!(a.max_frame, 1000);
        assert_eq!(a.arena, ArenaKind::Buddy);
        assert_eq!(a.duration, 0.5);
        assert!(a.compare);
        assert_eq!(a.min_frame, 64);
    }

    #[test]
    fn bad_options_are_errors_naming_the_option() {
        for (line, needle) in [
            ("--connections 0", "--connections"),
            ("--min-frame 4", "--min-frame"),
            ("--max-frame 10", "--max-frame"),
            ("--arena slab", "--arena"),
            ("--duration x", "--duration"),
            ("--arena-mib", "needs a value"),
            ("--max-frame 2000000 --arena-mib 1", "does not fit"),
            ("--nope", "unknown option"),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }
}

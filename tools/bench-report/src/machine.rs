//! The machine the report is generated on, and dates.

use std::time::{SystemTime, UNIX_EPOCH};

/// What the report says about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// CPU model (`model name` in `/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs listed in `/proc/cpuinfo`.
    pub logical_cpus: Option<usize>,
    /// `std::thread::available_parallelism()`: what the benches' thread
    /// counts use (lower than `logical_cpus` under a CPU quota or affinity mask).
    pub available_parallelism: Option<usize>,
    /// Total memory, from `/proc/meminfo`.
    pub memory: Option<String>,
    /// Kernel release, from `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// `rustc --version`.
    pub rustc: Option<String>,
}

impl Machine {
    /// Reads the machine's description (missing pieces are `None`).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let (cpu, logical_cpus) = parse_cpuinfo(&cpuinfo);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| parse_meminfo(&m));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string());
        let rustc = std::env::var_os("RUSTC")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "rustc".into());
        let rustc = std::process::Command::new(rustc)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Self {
            cpu: cpu.unwrap_or_else(|| "unknown CPU".to_string()),
            logical_cpus,
            available_parallelism: std::thread::available_parallelism().ok().map(|n| n.get()),
            memory,
            kernel,
            rustc,
        }
    }
}

/// The CPU model and the number of logical CPUs in `/proc/cpuinfo` text.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, Option<usize>) {
    let mut model = None;
    let mut count = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => count += 1,
            // x86 says `model name`; some ARM kernels say `Model` or `CPU part`.
            "model name" | "Model" if model.is_none() => {
                model = Some(value.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            _ => {}
        }
    }
    (
        model.filter(|m| !m.is_empty()),
        (count > 0).then_some(count),
    )
}

/// `MemTotal` of `/proc/meminfo` text, in GiB.
pub fn parse_meminfo(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} GiB", kib / (1024.0 * 1024.0)))
}

/// `time` as `YYYY-MM-DD HH:MM UTC`.
pub fn format_utc(time: SystemTime) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

//! What the bench prints: one JSON object (`--json`) or a short table, both
//! on stdout, with the open-loop schedule's figures under `--rate`; and the
//! process's resident memory and CPU time (in all, and by thread name) from
//! `/proc/self`.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::subscriber::SubscriberFigures;

/// Latency percentiles, in microseconds.
#[derive(Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// A bench run's results; the JSON field names are a contract.
#[derive(Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub sync: String,
    pub accounts: u64,
    pub shards: usize,
    pub in_flight: usize,
    pub batch: usize,
    pub seed: u64,
    pub setup_seconds: f64,
    /// Ops submitted in the timed phase.
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// Ops refused or answered otherwise than expected; any makes the run fail.
    pub errors: u64,
    pub latency_us: Latency,
    /// The process's peak resident memory (`VmHWM`) up to the end of the
    /// engine run (setup included), read before the baseline runs.
    pub peak_rss_bytes: Option<u64>,
    /// Resident memory (`VmRSS`) at the end of the timed phase.
    pub rss_end_bytes: Option<u64>,
    /// CPU time the whole process used in the timed phase (every thread:
    /// shards, log writer, checkpointer, the bench's own clients), and per
    /// op in µs. Unlike ops/s it hardly moves with the machine's load, so
    /// it compares runs on a shared machine: cores / `cpu_us_per_op` is
    /// the CPU-bound ceiling in ops/s.
    pub cpu_seconds: Option<f64>,
    pub cpu_us_per_op: Option<f64>,
    /// `cpu_us_per_op` by thread name (the shards' `actix-rt|system`, the
    /// log writer's `burnledger-wal`, the checkpointer's `burnledger-chec`,
    /// the history writer's `burnledger-hist`, the store's `fjall:worker`,
    /// the clients' `tokio-rt-worker`…), threads of one name summed. A
    /// thread that ended during the timed phase is left out.
    pub cpu_us_per_op_by_thread: Option<BTreeMap<String, f64>>,
    pub baseline_ops: u64,
    pub baseline_seconds: f64,
    pub baseline_ops_per_sec: f64,
    /// `ops_per_sec / baseline_ops_per_sec`.
    pub ratio_to_baseline: f64,
    /// The open-loop schedule's figures with `--rate`; `null` otherwise.
    pub rate: Option<RateFigures>,
    /// The event-feed subscriber's figures with `--subscribe`; `null`
    /// otherwise.
    pub subscriber: Option<SubscriberFigures>,
}

/// How an open-loop run (`--rate`) kept to its schedule. `ops_per_sec` is
/// the rate achieved, beside the rate offered here.
#[derive(Serialize, Debug, Default, PartialEq)]
pub struct RateFigures {
    /// `--rate`: ops per second offered.
    pub offered_ops_per_sec: f64,
    /// Batches sent (none is ever dropped).
    pub batches: u64,
    /// Batches sent more than 1 ms after their scheduled start, and their
    /// ops: their latency includes the wait.
    pub late_batches: u64,
    pub late_ops: u64,
    /// Batches that found `--in-flight` batches unanswered at their time
    /// and waited for one to answer (each is late, or nearly).
    pub capped_batches: u64,
    /// The longest a batch was sent after its scheduled start, µs.
    pub send_lag_max_us: u64,
}

/// Operations per second, guarded against a zero-length run.
pub fn per_second(ops: u64, seconds: f64) -> f64 {
    ops as f64 / seconds.max(1e-9)
}

impl Report {
    /// `cpu_us_per_op_by_thread`, the costliest first.
    fn cpu_by_thread_text(&self) -> String {
        let Some(by_thread) = &self.cpu_us_per_op_by_thread else {
            return "unknown".into();
        };
        let mut threads: Vec<_> = by_thread.iter().collect();
        threads.sort_by(|a, b| b.1.total_cmp(a.1));
        let shown: Vec<String> = threads
            .iter()
            .map(|(name, us)| format!("{name} {us:.2}"))
            .collect();
        shown.join(", ")
    }

    pub fn print(&self, json: bool) -> Result<(), String> {
        if json {
            let text = serde_json::to_string(self).map_err(|e| format!("JSON report: {e}"))?;
            println!("{text}");
            return Ok(());
        }
        let mib = |bytes: Option<u64>| {
            bytes.map_or("unknown".to_string(), |b| {
                format!("{:.1}", b as f64 / (1024.0 * 1024.0))
            })
        };
        let l = &self.latency_us;
        let rows = [
            ("workload", self.workload.to_string()),
            ("sync", self.sync.clone()),
            ("accounts", self.accounts.to_string()),
            ("shards", self.shards.to_string()),
            ("in-flight", self.in_flight.to_string()),
            ("batch", self.batch.to_string()),
            ("ops", self.ops.to_string()),
            ("seconds", format!("{:.3}", self.seconds)),
            ("ops/s", format!("{:.0}", self.ops_per_sec)),
            ("errors", self.errors.to_string()),
            (
                "latency µs",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                ),
            ),
            ("peak RSS MiB", mib(self.peak_rss_bytes)),
            (
                "CPU µs/op",
                self.cpu_us_per_op
                    .map_or("unknown".into(), |us| format!("{us:.2}")),
            ),
            ("CPU by thread", self.cpu_by_thread_text()),
            (
                "baseline ops/s",
                format!("{:.0}", self.baseline_ops_per_sec),
            ),
            ("ratio", format!("{:.3}", self.ratio_to_baseline)),
        ];
        let rate = self.rate.as_ref().map(|r| {
            [
                ("offered ops/s", format!("{:.0}", r.offered_ops_per_sec)),
                (
                    "batches",
                    format!(
                        "{} sent, {} late ({} ops) by > 1 ms, {} waited for --in-flight, \
                         longest lag {} µs",
                        r.batches, r.late_batches, r.late_ops, r.capped_batches, r.send_lag_max_us
                    ),
                ),
            ]
        });
        let subscriber = self.subscriber.as_ref().map(|s| {
            [(
                "subscriber",
                format!(
                    "{} events, lag ms p50 {} p99 {} max {}, caught up {:.0} ms after the load",
                    s.events, s.lag_ms_p50, s.lag_ms_p99, s.lag_ms_max, s.catch_up_ms
                ),
            )]
        });
        let extra = rate
            .into_iter()
            .flatten()
            .chain(subscriber.into_iter().flatten());
        for (name, value) in rows.into_iter().chain(extra) {
            println!("{name:<16}{value}");
        }
        Ok(())
    }
}

/// The process's resident memory, in bytes, from `/proc/self/status`.
pub struct Resident {
    /// `VmHWM`, the peak so far. The kernel updates it lazily, so it is
    /// raised to at least `now`.
    pub peak: u64,
    /// `VmRSS`, now.
    pub now: u64,
}

impl Resident {
    /// `None` where there is no such file (not Linux).
    pub fn read() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let now = kib_field(&status, "VmRSS")? * 1024;
        let peak = kib_field(&status, "VmHWM").map_or(now, |kib| (kib * 1024).max(now));
        Some(Self { peak, now })
    }
}

/// CPU time this process has used, all threads (`/proc/self/stat`).
pub struct CpuTime(f64);

/// Clock ticks per second of `/proc/*/stat`: `USER_HZ`, 100 on every
/// architecture Linux runs on (`sysconf(_SC_CLK_TCK)` would need libc).
const USER_HZ: f64 = 100.0;

impl CpuTime {
    /// `None` where there is no such file (not Linux).
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        cpu_ticks(&stat).map(|ticks| Self(ticks as f64 / USER_HZ))
    }

    /// Seconds of CPU used since `earlier`.
    pub fn since(&self, earlier: &Self) -> f64 {
        (self.0 - earlier.0).max(0.0)
    }
}

/// CPU time each thread of this process has used (`/proc/self/task`), by
/// thread id, with its name.
pub struct ThreadCpu(BTreeMap<u64, (String, f64)>);

impl ThreadCpu {
    /// `None` where there is no such folder (not Linux).
    pub fn read() -> Option<Self> {
        let mut threads = BTreeMap::new();
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread may end between listing and reading: skip it.
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Some((name, ticks)) = thread_name(&stat).zip(cpu_ticks(&stat)) {
                threads.insert(tid, (name.to_string(), ticks as f64 / USER_HZ));
            }
        }
        Some(Self(threads))
    }

    /// Seconds of CPU used since `earlier`, by thread name: each thread
    /// alive now, less what it had used then (threads started since count
    /// from zero).
    pub fn since(&self, earlier: &Self) -> BTreeMap<String, f64> {
        let mut by_name = BTreeMap::new();
        for (tid, (name, seconds)) in &self.0 {
            let before = earlier.0.get(tid).map_or(0.0, |(_, s)| *s);
            *by_name.entry(name.clone()).or_insert(0.0) += (seconds - before).max(0.0);
        }
        by_name
    }
}

/// The command name of a `/proc/*/stat` line: what is between the first
/// `(` and the last `)` (a name may hold either).
fn thread_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// `utime + stime` of a `/proc/*/stat` line: fields 14 and 15, counted
/// after the command name, which is in parentheses and may hold spaces.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field of `/proc/self/status`.
fn kib_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resident_memory() {
        if cfg!(target_os = "linux") {
            let resident = Resident::read().expect("/proc/self/status");
            assert!(resident.peak >= resident.now && resident.now > 0);
        }
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kib_field(status, "VmHWM"), Some(2048));
        assert_eq!(kib_field(status, "VmRSS"), Some(1024));
        assert_eq!(kib_field(status, "VmSwap"), None);
    }

    #[test]
    fn reads_cpu_time_by_thread_name() {
        assert_eq!(thread_name("42 (a (b) c) R 1 2"), Some("a (b) c"));
        assert_eq!(thread_name("42 x R"), None);
        if cfg!(target_os = "linux") {
            let start = ThreadCpu::read().expect("/proc/self/task");
            let spinner = std::thread::Builder::new()
                .name("bench-spinner".into())
                .spawn(|| {
                    let began = std::time::Instant::now();
                    let mut x = 0u64;
                    while began.elapsed() < std::time::Duration::from_millis(300) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                    x
                })
                .expect("spawn");
            // Read while it still runs: an ended thread is not listed.
            std::thread::sleep(std::time::Duration::from_millis(250));
            let used = ThreadCpu::read().expect("task").since(&start);
            drop(spinner.join());
            let spun = used.get("bench-spinner").copied().unwrap_or(0.0);
            assert!(spun >= 0.05, "{used:?}");
        }
    }

    #[test]
    fn reads_cpu_time() {
        // State is field 3; utime and stime are 14 and 15.
        let stat = "42 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20";
        assert_eq!(cpu_ticks(stat), Some(281));
        assert_eq!(cpu_ticks("42 (x) R 1 2"), None);
        if cfg!(target_os = "linux") {
            // Spinning for a while shows as CPU time (a tick is 10 ms).
            let start = CpuTime::read().expect("/proc/self/stat");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut used = 0.0;
            while used < 0.05 && std::time::Instant::now() < deadline {
                used = CpuTime::read().expect("stat").since(&start);
            }
            assert!(used >= 0.05, "{used} s of CPU after spinning");
        }
    }
}

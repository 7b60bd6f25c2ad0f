//! Measures `fjall` against `redb` on the history store's write pattern: a
//! follower thread applies committed log batches (1,000–4,000 events) to
//! withdrawal rows + three indexes, account entries, transaction rows and an
//! "applied up to LSN" watermark written in the same batch/transaction. No
//! per-batch fsync (the WAL is the durable copy); a durable point every 64
//! batches bounds what a crash makes the follower re-apply.
//!
//! `history_store_choice compare RUNS EVENTS` runs each engine RUNS times,
//! alternating, each in a fresh child process (so peak RSS is per engine), and
//! prints every run and the medians. `history_store_choice one ENGINE EVENTS
//! DIR` is one child run; it prints one `result` line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

// The allocator burnledger's binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u64 = 100_000;
const DURABLE_EVERY: u64 = 64;

// ---------------------------------------------------------------- workload

#[derive(Clone, Copy)]
enum Ev {
    Deposit {
        tx: u128,
        acct: u64,
        amt: u64,
    },
    Request {
        tx: u128,
        acct: u64,
        amt: u64,
    },
    Claim {
        tx: u128,
        payout: u64,
    },
    Complete {
        tx: u128,
    },
    Transfer {
        tx: u128,
        from: u64,
        to: u64,
        amt: u64,
    },
}

/// A deterministic generator of a realistic mix: 20 % deposits, 30 %
/// withdrawal requests, 20 % claims (into payouts of 100), 20 % completions,
/// 10 % transfers.
struct Gen {
    rng: u64,
    seq: Vec<u64>,
    pending: std::collections::VecDeque<u128>,
    processing: std::collections::VecDeque<u128>,
    payout: u64,
    claimed_in_payout: u32,
}

impl Gen {
    fn new() -> Self {
        Gen {
            rng: 0x9E37_79B9_7F4A_7C15,
            seq: vec![0; ACCOUNTS as usize],
            pending: Default::default(),
            processing: Default::default(),
            payout: 1,
            claimed_in_payout: 0,
        }
    }
    fn next_u64(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
    fn new_tx(&mut self, acct: u64) -> u128 {
        self.seq[acct as usize] += 1;
        (u128::from(acct) << 64) | u128::from(self.seq[acct as usize])
    }
    fn event(&mut self) -> Ev {
        let roll = self.next_u64() % 10;
        let acct = self.next_u64() % ACCOUNTS;
        let amt = 1 + self.next_u64() % 10_000;
        match roll {
            0 | 1 => Ev::Deposit {
                tx: self.new_tx(acct),
                acct,
                amt,
            },
            2..=4 => {
                let tx = self.new_tx(acct);
                self.pending.push_back(tx);
                Ev::Request { tx, acct, amt }
            }
            5 | 6 if !self.pending.is_empty() => {
                let tx = self.pending.pop_front().unwrap_or_default();
                self.processing.push_back(tx);
                self.claimed_in_payout += 1;
                if self.claimed_in_payout == 100 {
                    self.claimed_in_payout = 0;
                    self.payout += 1;
                }
                Ev::Claim {
                    tx,
                    payout: self.payout,
                }
            }
            7 | 8 if !self.processing.is_empty() => Ev::Complete {
                tx: self.processing.pop_front().unwrap_or_default(),
            },
            _ => {
                let to = self.next_u64() % ACCOUNTS;
                Ev::Transfer {
                    tx: self.new_tx(acct),
                    from: acct,
                    to,
                    amt,
                }
            }
        }
    }
}

// ---------------------------------------------------------------- encoding

const PENDING: u8 = 1;
const PROCESSING: u8 = 2;
const COMPLETED: u8 = 3;

#[derive(Clone, Copy)]
struct WRow {
    acct: u64,
    amt: u64,
    status: u8,
    payout: u64,
    created: u64,
    updated: u64,
}

impl WRow {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(45);
        v.extend_from_slice(&self.acct.to_be_bytes());
        v.extend_from_slice(b"USD\0");
        v.extend_from_slice(&self.amt.to_be_bytes());
        v.push(self.status);
        v.extend_from_slice(&self.payout.to_be_bytes());
        v.extend_from_slice(&self.created.to_be_bytes());
        v.extend_from_slice(&self.updated.to_be_bytes());
        v
    }
    fn decode(b: &[u8]) -> WRow {
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        WRow {
            acct: u(0),
            amt: u(12),
            status: b[20],
            payout: u(21),
            created: u(29),
            updated: u(37),
        }
    }
}

fn k_acct(acct: u64, created: u64, tx: u128) -> Vec<u8> {
    [
        &acct.to_be_bytes()[..],
        &created.to_be_bytes(),
        &tx.to_be_bytes(),
    ]
    .concat()
}
fn k_status(status: u8, created: u64, tx: u128) -> Vec<u8> {
    [&[status][..], &created.to_be_bytes(), &tx.to_be_bytes()].concat()
}
fn k_payout(payout: u64, tx: u128) -> Vec<u8> {
    [&payout.to_be_bytes()[..], &tx.to_be_bytes()].concat()
}
fn k_entry(acct: u64, seq: u64) -> Vec<u8> {
    [&acct.to_be_bytes()[..], b"USD\0", &seq.to_be_bytes()].concat()
}
fn v_entry(tx: u128, kind: u8, amt: u64, at: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(49);
    v.extend_from_slice(&tx.to_be_bytes());
    v.push(kind);
    v.extend_from_slice(&amt.to_be_bytes());
    v.extend_from_slice(&at.to_be_bytes());
    v.extend_from_slice(&(amt * 3).to_be_bytes()); // available after
    v.extend_from_slice(&amt.to_be_bytes()); // locked after
    v
}

/// The write ops one batch turns into, engine-neutral. `Get` rows are read
/// through `Store::get_withdrawal` (with a batch-local overlay).
enum Op {
    Put(usize, Vec<u8>, Vec<u8>),
    Del(usize, Vec<u8>),
}

const T_W: usize = 0;
const T_ACCT: usize = 1;
const T_STATUS: usize = 2;
const T_PAYOUT: usize = 3;
const T_ENTRY: usize = 4;
const T_TX: usize = 5;
const T_META: usize = 6;
const TABLES: [&str; 7] = [
    "withdrawals",
    "by_account",
    "by_status",
    "by_payout",
    "entries",
    "transactions",
    "meta",
];

/// Turns one batch into ops: the follower's real work (row upserts, index
/// moves on a status change, entries, watermark).
fn plan(
    store: &dyn Store,
    lsn: u64,
    batch: &[Ev],
    entry_seq: &mut [u64],
    now: u64,
    rows: &mut u64,
) -> Vec<Op> {
    let mut ops = Vec::with_capacity(batch.len() * 4);
    let mut overlay: HashMap<u128, WRow> = HashMap::new();
    let mut entry = |ops: &mut Vec<Op>, acct: u64, tx: u128, kind: u8, amt: u64| {
        entry_seq[acct as usize] += 1;
        ops.push(Op::Put(
            T_ENTRY,
            k_entry(acct, entry_seq[acct as usize]),
            v_entry(tx, kind, amt, now),
        ));
    };
    for ev in batch {
        match *ev {
            Ev::Deposit { tx, acct, amt } => {
                ops.push(Op::Put(
                    T_TX,
                    tx.to_be_bytes().to_vec(),
                    v_entry(tx, 0, amt, now),
                ));
                entry(&mut ops, acct, tx, 0, amt);
            }
            Ev::Transfer { tx, from, to, amt } => {
                ops.push(Op::Put(
                    T_TX,
                    tx.to_be_bytes().to_vec(),
                    v_entry(tx, 5, amt, now),
                ));
                entry(&mut ops, from, tx, 6, amt);
                entry(&mut ops, to, tx, 5, amt);
            }
            Ev::Request { tx, acct, amt } => {
                let row = WRow {
                    acct,
                    amt,
                    status: PENDING,
                    payout: 0,
                    created: now,
                    updated: now,
                };
                ops.push(Op::Put(T_W, tx.to_be_bytes().to_vec(), row.encode()));
                ops.push(Op::Put(T_ACCT, k_acct(acct, now, tx), vec![]));
                ops.push(Op::Put(T_STATUS, k_status(PENDING, now, tx), vec![]));
                entry(&mut ops, acct, tx, 1, amt);
                overlay.insert(tx, row);
            }
            Ev::Claim { tx, payout } => {
                transition(
                    store,
                    &mut overlay,
                    &mut ops,
                    tx,
                    PROCESSING,
                    Some(payout),
                    now,
                );
            }
            Ev::Complete { tx } => {
                if let Some(row) =
                    transition(store, &mut overlay, &mut ops, tx, COMPLETED, None, now)
                {
                    entry(&mut ops, row.acct, tx, 2, row.amt);
                }
            }
        }
    }
    ops.push(Op::Put(
        T_META,
        b"applied_lsn".to_vec(),
        lsn.to_be_bytes().to_vec(),
    ));
    *rows += ops.len() as u64;
    ops
}

/// A status change: the row is rewritten and its status index entry moves.
fn transition(
    store: &dyn Store,
    overlay: &mut HashMap<u128, WRow>,
    ops: &mut Vec<Op>,
    tx: u128,
    status: u8,
    payout: Option<u64>,
    now: u64,
) -> Option<WRow> {
    let old = match overlay.get(&tx) {
        Some(r) => *r,
        None => store.get_withdrawal(tx)?,
    };
    let row = WRow {
        status,
        payout: payout.unwrap_or(old.payout),
        updated: now,
        ..old
    };
    ops.push(Op::Put(T_W, tx.to_be_bytes().to_vec(), row.encode()));
    ops.push(Op::Del(T_STATUS, k_status(old.status, old.created, tx)));
    ops.push(Op::Put(T_STATUS, k_status(status, old.created, tx), vec![]));
    if let Some(p) = payout {
        ops.push(Op::Put(T_PAYOUT, k_payout(p, tx), vec![]));
    }
    overlay.insert(tx, row);
    Some(row)
}

// ---------------------------------------------------------------- engines

trait Store {
    fn get_withdrawal(&self, tx: u128) -> Option<WRow>;
    fn write(&mut self, ops: Vec<Op>, durable: bool);
    /// Reads one page of up to 100 withdrawal keys of `acct`; returns the count.
    fn page(&self, acct: u64) -> usize;
    fn finish(&mut self);
}

struct Fjall {
    db: fjall::Database,
    ks: Vec<fjall::Keyspace>,
}

impl Fjall {
    fn open(dir: &Path) -> Fjall {
        let db = fjall::Database::builder(dir)
            .open()
            .unwrap_or_else(|e| panic!("fjall open: {e}"));
        // FJALL_MEMTABLE_MB (default 64, fjall's own) sizes each keyspace's memtable.
        let mb: u64 = std::env::var("FJALL_MEMTABLE_MB")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64);
        let memtable = move || fjall::KeyspaceCreateOptions::default().max_memtable_size(mb << 20);
        let ks = TABLES
            .iter()
            .map(|n| db.keyspace(n, memtable).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        Fjall { db, ks }
    }
}

impl Store for Fjall {
    fn get_withdrawal(&self, tx: u128) -> Option<WRow> {
        self.ks[T_W]
            .get(tx.to_be_bytes())
            .ok()
            .flatten()
            .map(|v| WRow::decode(&v))
    }
    fn write(&mut self, ops: Vec<Op>, durable: bool) {
        let mut b = self.db.batch();
        for op in ops {
            match op {
                Op::Put(t, k, v) => b.insert(&self.ks[t], k, v),
                Op::Del(t, k) => b.remove(&self.ks[t], k),
            }
        }
        b.commit().unwrap_or_else(|e| panic!("fjall commit: {e}"));
        if durable {
            self.db
                .persist(fjall::PersistMode::SyncAll)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    fn page(&self, acct: u64) -> usize {
        use fjall::Readable;
        let snap = self.db.snapshot();
        snap.prefix(&self.ks[T_ACCT], acct.to_be_bytes())
            .rev()
            .take(100)
            .filter_map(|g| g.into_inner().ok())
            .filter_map(|(k, _)| {
                let tx = u128::from_be_bytes(k[16..32].try_into().ok()?);
                snap.get(&self.ks[T_W], tx.to_be_bytes()).ok().flatten()
            })
            .count()
    }
    fn finish(&mut self) {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

struct Redb {
    db: redb::Database,
}

type Def = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;
const DEFS: [Def; 7] = [
    Def::new("withdrawals"),
    Def::new("by_account"),
    Def::new("by_status"),
    Def::new("by_payout"),
    Def::new("entries"),
    Def::new("transactions"),
    Def::new("meta"),
];

impl Redb {
    fn open(dir: &Path) -> Redb {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let db = redb::Database::create(dir.join("history.redb"))
            .unwrap_or_else(|e| panic!("redb open: {e}"));
        Redb { db }
    }
}

impl Store for Redb {
    fn get_withdrawal(&self, tx: u128) -> Option<WRow> {
        use redb::ReadableDatabase;
        let r = self.db.begin_read().ok()?;
        let t = r.open_table(DEFS[T_W]).ok()?;
        let v = t.get(&tx.to_be_bytes()[..]).ok()??;
        Some(WRow::decode(v.value()))
    }
    fn write(&mut self, ops: Vec<Op>, durable: bool) {
        let mut w = self.db.begin_write().unwrap_or_else(|e| panic!("{e}"));
        let d = if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        };
        w.set_durability(d).unwrap_or_else(|e| panic!("{e}"));
        {
            let mut tables: Vec<_> = DEFS
                .iter()
                .map(|d| w.open_table(*d).unwrap_or_else(|e| panic!("{e}")))
                .collect();
            for op in ops {
                match op {
                    Op::Put(t, k, v) => {
                        tables[t]
                            .insert(&k[..], &v[..])
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                    Op::Del(t, k) => {
                        tables[t].remove(&k[..]).unwrap_or_else(|e| panic!("{e}"));
                    }
                }
            }
        }
        w.commit().unwrap_or_else(|e| panic!("redb commit: {e}"));
    }
    fn page(&self, acct: u64) -> usize {
        use redb::ReadableDatabase;
        let Ok(r) = self.db.begin_read() else {
            return 0;
        };
        let (Ok(idx), Ok(rows)) = (r.open_table(DEFS[T_ACCT]), r.open_table(DEFS[T_W])) else {
            return 0;
        };
        let lo = acct.to_be_bytes();
        let hi = (acct + 1).to_be_bytes();
        let Ok(range) = idx.range(&lo[..]..&hi[..]) else {
            return 0;
        };
        range
            .rev()
            .take(100)
            .filter_map(|e| e.ok())
            .filter_map(|(k, _)| {
                let tx = u128::from_be_bytes(k.value()[16..32].try_into().ok()?);
                rows.get(&tx.to_be_bytes()[..]).ok()?
            })
            .count()
    }
    fn finish(&mut self) {
        self.write(vec![], true);
    }
}

// ---------------------------------------------------------------- one run

fn cpu_seconds() -> f64 {
    // utime + stime of the whole process (background compaction included).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn one(engine: &str, events: u64, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let mut store: Box<dyn Store> = match engine {
        "fjall" => Box::new(Fjall::open(dir)),
        _ => Box::new(Redb::open(dir)),
    };
    // Generate first, outside the timing: the follower gets decoded batches.
    let mut gen = Gen::new();
    let mut batches = Vec::new();
    let mut made = 0;
    while made < events {
        let size = 1000 + (gen.next_u64() % 3001);
        let b: Vec<Ev> = (0..size).map(|_| gen.event()).collect();
        made += size;
        batches.push(b);
    }
    let mut entry_seq = vec![0u64; ACCOUNTS as usize];
    let mut rows = 0u64;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for (i, b) in batches.iter().enumerate() {
        let lsn = i as u64 + 1;
        let now = 1_700_000_000_000 + lsn;
        let ops = plan(store.as_ref(), lsn, b, &mut entry_seq, now, &mut rows);
        store.write(ops, lsn % DURABLE_EVERY == 0);
    }
    store.finish();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    // Reads: pages of 100 by account prefix, newest first.
    let mut lat: Vec<Duration> = Vec::new();
    let mut rng = Gen::new();
    let mut found = 0;
    for _ in 0..5_000 {
        let acct = rng.next_u64() % ACCOUNTS;
        let t = Instant::now();
        found += store.page(acct);
        lat.push(t.elapsed());
    }
    lat.sort();
    let p50 = lat[lat.len() / 2].as_secs_f64() * 1e6;
    let p99 = lat[lat.len() * 99 / 100].as_secs_f64() * 1e6;
    drop(store);
    let size_mb = dir_size(dir) as f64 / 1e6;
    println!(
        "result {engine} events={made} rows={rows} wall_s={wall:.3} events_per_s={:.0} rows_per_s={:.0} cpu_us_per_event={:.3} size_mb={size_mb:.1} page100_p50_us={p50:.1} page100_p99_us={p99:.1} peak_rss_mb={:.1} rows_read={found}",
        made as f64 / wall,
        rows as f64 / wall,
        cpu * 1e6 / made as f64,
        peak_rss_mb(),
    );
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------- compare

fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn compare(runs: usize, events: u64, base: &Path) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut lines: HashMap<&str, Vec<String>> = HashMap::new();
    for r in 0..runs {
        for engine in ["fjall", "redb"] {
            let dir = base.join(format!("{engine}-{r}"));
            let out = Command::new(&exe)
                .args(["one", engine, &events.to_string(), &dir.to_string_lossy()])
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let line = text
                .lines()
                .find(|l| l.starts_with("result"))
                .unwrap_or("")
                .to_string();
            println!("run {r}: {line}");
            lines.entry(engine).or_default().push(line);
        }
    }
    let names = [
        "events_per_s",
        "rows_per_s",
        "cpu_us_per_event",
        "size_mb",
        "page100_p50_us",
        "page100_p99_us",
        "peak_rss_mb",
    ];
    println!("\nmedians of {runs} runs, {events} events each:");
    println!("{:<18} {:>14} {:>14}", "metric", "fjall", "redb");
    for n in names {
        let m = |e: &str| median(lines[e].iter().map(|l| field(l, n)).collect());
        println!("{n:<18} {:>14.1} {:>14.1}", m("fjall"), m("redb"));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("one") if args.len() == 5 => one(
            &args[2],
            args[3].parse().unwrap_or(1_000_000),
            &PathBuf::from(&args[4]),
        ),
        Some("compare") => {
            let runs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
            let events = args
                .get(3)
                .and_then(|s| s.parse().ok())
                .unwrap_or(2_000_000);
            let base = args.get(4).map_or_else(
                || std::env::temp_dir().join("history_store_choice"),
                PathBuf::from,
            );
            compare(runs, events, &base)
        }
        _ => eprintln!(
            "usage: history_store_choice compare [RUNS] [EVENTS] [DIR] | one ENGINE EVENTS DIR"
        ),
    }
}

//! Memory per account, for the 1,000,000-accounts RSS target: the size of
//! the structures an account is made of, and the resident memory one
//! account costs in each container the engine keeps states in, with the
//! binary's allocator (mimalloc).
//!
//!   cargo bench --bench memory_per_account            # 1,000,000 accounts
//!   cargo bench --bench memory_per_account -- 200000  # fewer
//!
//! Each layout is built in a child process of its own (this program runs
//! itself with the layout's name), which reports its RSS growth
//! (`/proc/self/statm`) divided by the count: allocator rounding and hash
//! table slack included, as the engine pays them. Every account holds one
//! USD balance after one deposit, as in `bench deposits`. The layouts are
//! those of main at the time of writing (engine/coordinator.rs: an
//! `Rc<RefCell<AccountState>>` per account in a foldhash map;
//! storage/checkpoint.rs: a `Box<AccountState>` per account in a std map)
//! and the compact alternatives PERF-NOTES.md proposes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::mem::size_of;
use std::process::Command;
use std::rc::Rc;

use burnledger::domain::account::{AccountState, BalanceEntry};
use burnledger::domain::event::Event;
use burnledger::domain::money::{Currency, CurrencyCode};
use burnledger::domain::withdrawal::{TransitionAction, WithdrawalRecord};
use burnledger::UnixMs;

/// The time every prepared event is stamped with.
const AT: UnixMs = UnixMs::from_millis(1_767_225_600_000);

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The layouts measured, each in its own process.
const LAYOUTS: [(&str, &str); 6] = [
    (
        "vec",
        "AccountState inline in a Vec (the floor: no table, no box)",
    ),
    (
        "live",
        "foldhash map of Rc<RefCell<AccountState>> (coordinator's directory today, no actor)",
    ),
    (
        "checkpointer",
        "std map of Box<AccountState> (the checkpointer's copy today)",
    ),
    (
        "inline_map",
        "foldhash map of AccountState by value (a directory that parks states inline)",
    ),
    (
        "withdrawals",
        "per withdrawal kept: accounts of 20 settled ones (as `bench withdrawals` leaves them), 10 % failed",
    ),
    (
        "encoded",
        "bincode bytes of the state, boxed, in a foldhash map (a parked or checkpointer copy kept encoded)",
    ),
];

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let first = args.next();
    match first.as_deref() {
        Some(layout) if LAYOUTS.iter().any(|(name, _)| *name == layout) => {
            let count = args
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1_000_000);
            measure(layout, count);
        }
        other => {
            let count: u64 = other.and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
            print_sizes();
            for (layout, what) in LAYOUTS {
                run_child(layout, what, count);
            }
        }
    }
}

fn print_sizes() {
    println!("size_of (bytes):");
    let sizes = [
        ("AccountState", size_of::<AccountState>()),
        (
            "RefCell<AccountState> (+16 for the Rc)",
            size_of::<RefCell<AccountState>>(),
        ),
        (
            "BalanceEntry (one per currency, in a Vec)",
            size_of::<BalanceEntry>(),
        ),
        (
            "(u64, WithdrawalRecord) (one per withdrawal kept)",
            size_of::<(u64, WithdrawalRecord)>(),
        ),
        ("Event", size_of::<Event>()),
    ];
    for (name, size) in sizes {
        println!("  {size:>5}  {name}");
    }
}

fn run_child(layout: &str, what: &str, count: u64) {
    let output = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .arg(layout)
            .arg(count.to_string())
            .output()
    });
    match output {
        Ok(out) if out.status.success() => {
            let line = String::from_utf8_lossy(&out.stdout);
            println!("{:>7} B  {layout:<13} {what}", line.trim());
        }
        Ok(out) => println!(
            "{layout}: failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(error) => println!("{layout}: cannot run: {error}"),
    }
}

/// Resident bytes of this process now.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn usd() -> Currency {
    Currency {
        code: CurrencyCode::new("USD").expect("USD"),
        decimals: 2,
    }
}

/// An account after one deposit.
fn funded(id: u64) -> AccountState {
    let mut state = AccountState::new(id);
    state.deposit(usd(), 1_000_000, None, AT).expect("deposit");
    state
}

/// Builds `count` of `layout` and prints the RSS growth per item.
fn measure(layout: &str, count: u64) {
    let before = resident();
    let kept: Box<dyn std::any::Any> = match layout {
        "vec" => Box::new((1..=count).map(funded).collect::<Vec<_>>()),
        "live" => Box::new(
            (1..=count)
                .map(|id| (id, Rc::new(RefCell::new(funded(id)))))
                .collect::<foldhash::HashMap<_, _>>(),
        ),
        "checkpointer" => Box::new(
            (1..=count)
                .map(|id| (id, Box::new(funded(id))))
                .collect::<HashMap<_, _>>(),
        ),
        "inline_map" => Box::new(
            (1..=count)
                .map(|id| (id, funded(id)))
                .collect::<foldhash::HashMap<_, _>>(),
        ),
        "withdrawals" => Box::new(
            (1..=count / WITHDRAWALS_PER_ACCOUNT)
                .map(with_withdrawals)
                .collect::<Vec<_>>(),
        ),
        "encoded" => Box::new(
            (1..=count)
                .map(|id| (id, encode(&funded(id))))
                .collect::<foldhash::HashMap<_, _>>(),
        ),
        _ => unreachable!("checked by main"),
    };
    let grown = resident().saturating_sub(before);
    black_box(&kept);
    println!("{:.1}", grown as f64 / count as f64);
}

/// Settled withdrawals per account in the `withdrawals` layout: what a
/// 4,000,000-op `bench withdrawals` over 100,000 accounts leaves.
const WITHDRAWALS_PER_ACCOUNT: u64 = 20;

/// An account with [`WITHDRAWALS_PER_ACCOUNT`] settled withdrawals, as the
/// engine keeps them. (Its state itself is counted too: 1/20 of an
/// account per withdrawal, ≈ 12 B.)
fn with_withdrawals(id: u64) -> AccountState {
    let mut state = AccountState::new(id);
    state.deposit(usd(), 1_000_000, None, AT).expect("deposit");
    for i in 0..WITHDRAWALS_PER_ACCOUNT {
        let effect = state
            .request_withdrawal(usd(), 100, None, u32::MAX, AT)
            .expect("request");
        let tx = effect.output.transaction_id;
        let (action, reason) = match i % 10 {
            0 => (
                TransitionAction::Fail,
                "bench: refused by the payment service",
            ),
            _ => (TransitionAction::Complete, ""),
        };
        state
            .update_withdrawal(tx, action, reason, AT)
            .expect("settle");
    }
    state
}

/// The state as a snapshot stores it.
fn encode(state: &AccountState) -> Box<[u8]> {
    bincode::serde::encode_to_vec(state, bincode::config::standard())
        .expect("encodes")
        .into_boxed_slice()
}

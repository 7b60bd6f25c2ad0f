//! Black-box tests of `burnledger bench`, the embedded load harness: the
//! JSON report's fields and their consistency for every workload and sync
//! mode, refusals of bad input, and the HTTP mode (`--http URL`, also
//! `http-bench`) still driving a running server. Runs are kept small so
//! each takes a second or so in a debug build.

#![cfg(feature = "cli")]

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burnledger"))
        .arg("bench")
        .args(args)
        .output()
        .expect("burnledger runs")
}

/// Runs a bench with `--json` and returns its one JSON object, after the
/// checks every report must pass.
fn report(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let output = bench(&all);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "bench {args:?} failed: {stderr}\n{stdout}"
    );
    // stdout holds the JSON object alone: progress and notes go to stderr.
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));
    let number = |field: &str| {
        report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} missing or not a number in {report}"))
    };
    for field in [
        "accounts",
        "shards",
        "in_flight",
        "batch",
        "seconds",
        "setup_seconds",
        "baseline_ops",
    ] {
        number(field);
    }
    assert!(report["workload"].is_string() && report["sync"].is_string());
    assert_eq!(number("errors"), 0.0);
    assert!(number("ops_per_sec") > 0.0);
    assert!(number("peak_rss_bytes") > 0.0);
    let baseline = number("baseline_ops_per_sec");
    assert!(baseline > 0.0);
    let ratio = number("ratio_to_baseline");
    let expected = number("ops_per_sec") / baseline;
    assert!(
        (ratio - expected).abs() <= 1e-9 * expected.max(1.0),
        "ratio {ratio} is not ops_per_sec / baseline_ops_per_sec = {expected}"
    );
    assert_eq!(
        number("baseline_ops"),
        number("ops"),
        "the same ops replayed"
    );
    let latency = &report["latency_us"];
    let percentile = |p: &str| {
        latency[p]
            .as_u64()
            .unwrap_or_else(|| panic!("latency_us.{p} missing in {report}"))
    };
    let (p50, p99, p999, max) = (
        percentile("p50"),
        percentile("p99"),
        percentile("p999"),
        percentile("max"),
    );
    assert!(
        p50 <= p99 && p99 <= p999 && p999 <= max,
        "percentiles out of order: {latency}"
    );
    report
}

fn ops(report: &Value) -> u64 {
    report["ops"].as_u64().expect("ops")
}

#[test]
fn withdrawals_in_memory() {
    let report = report(&[
        "withdrawals",
        "--accounts",
        "1000",
        "--ops",
        "20000",
        "--sync",
        "none",
    ]);
    assert_eq!(report["workload"], "withdrawals");
    assert_eq!(report["sync"], "none");
    assert_eq!(report["accounts"], 1000);
    assert!(ops(&report) >= 20_000);
}

#[test]
fn withdrawals_with_fsync_in_a_given_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_arg = data.to_str().expect("UTF-8 path");
    let report = report(&[
        "withdrawals",
        "--accounts",
        "1000",
        "--ops",
        "20000",
        "--sync",
        "fsync",
        "--data-dir",
        data_arg,
        "--shards",
        "2",
    ]);
    assert_eq!(report["sync"], "fsync");
    assert_eq!(report["shards"], 2);
    assert!(ops(&report) >= 20_000);
    // A folder the caller named is kept, with the log in it.
    assert!(data.join("wal").is_dir(), "{data:?} has no WAL");
}

#[test]
fn each_workload_runs_clean() {
    for workload in ["deposits", "transfers", "mixed"] {
        let report = report(&[
            workload,
            "--accounts",
            "500",
            "--ops",
            "5000",
            "--sync",
            "buffered",
            "--in-flight",
            "3",
            "--batch",
            "100",
        ]);
        assert_eq!(report["workload"], workload);
        assert_eq!(
            (report["in_flight"].as_u64(), report["batch"].as_u64()),
            (Some(3), Some(100))
        );
        assert!(ops(&report) >= 5_000, "{workload}: {report}");
    }
}

#[test]
fn workload_flag_and_duration() {
    let report = report(&[
        "--workload",
        "mixed",
        "--accounts",
        "200",
        "--duration",
        "0.5",
        "--sync",
        "none",
        "--batch",
        "64",
    ]);
    assert_eq!(report["workload"], "mixed");
    assert!(ops(&report) > 0);
    assert!(report["seconds"].as_f64().expect("seconds") >= 0.5);
}

#[test]
fn human_table_by_default() {
    let output = bench(&[
        "deposits",
        "--accounts",
        "100",
        "--ops",
        "1000",
        "--sync",
        "none",
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for row in [
        "workload",
        "ops/s",
        "latency µs",
        "peak RSS MiB",
        "baseline ops/s",
        "ratio",
    ] {
        assert!(stdout.contains(row), "no {row:?} row in:\n{stdout}");
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let cases: [(&[&str], &str); 4] = [
        (&["--accounts", "0"], "--accounts"),
        (&["loans"], "possible values"),
        (&["--ops", "0"], "at least 1 op"),
        (
            &["transfers", "--accounts", "1", "--sync", "none"],
            "--accounts 2 or more",
        ),
    ];
    for (args, message) in cases {
        let output = bench(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "bench {args:?} succeeded");
        assert!(stderr.contains(message), "bench {args:?} said: {stderr}");
        assert!(output.stdout.is_empty(), "bench {args:?} printed a report");
    }
}

/// `--http URL` still drives a running server, as `bench` and `http-bench`.
#[cfg(feature = "http")]
#[test]
fn http_mode_drives_a_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = common::serve::serve_command(dir.path());
    let (mut server, url) =
        common::serve::spawn_listening(&mut command, std::time::Duration::from_secs(30));
    for subcommand in ["bench", "http-bench"] {
        let output = Command::new(env!("CARGO_BIN_EXE_burnledger"))
            .args([
                subcommand,
                "--http",
                &url,
                "--requests",
                "40",
                "--connections",
                "2",
            ])
            .env_remove("BURNLEDGER_API_TOKEN")
            .output()
            .expect("burnledger runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{subcommand} --http failed: {stdout}"
        );
        assert!(stdout.contains("201: 40"), "{subcommand}: {stdout}");
    }
    let _ = server.kill();
    let _ = server.wait();
}

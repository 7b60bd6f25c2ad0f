//! Black-box tests of `burnledger bench`, the embedded load harness: the
//! JSON report's fields and their consistency for every workload and sync
//! mode, the open loop (`--rate`: the rate it keeps, latency from the
//! schedule), refusals of bad input, and the HTTP mode (`--http URL`, also
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
    let (cpu, cpu_per_op) = (number("cpu_seconds"), number("cpu_us_per_op"));
    assert!(cpu >= 0.0, "{report}");
    let expected = cpu * 1e6 / number("ops");
    assert!(
        (cpu_per_op - expected).abs() <= 1e-9 * expected.max(1.0),
        "cpu_us_per_op {cpu_per_op} is not cpu_seconds / ops = {expected}"
    );
    let latency = &report["latency_us"];
    let percentile = |p: &str| {
        latency[p]
            .as_u64()
            .unwrap_or_else(|| panic!("latency_us.{p} missing in {report}"))
    };
    let (p50, p90, p99, p999, max) = (
        percentile("p50"),
        percentile("p90"),
        percentile("p99"),
        percentile("p999"),
        percentile("max"),
    );
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "percentiles out of order: {latency}"
    );
    report
}

fn ops(report: &Value) -> u64 {
    report["ops"].as_u64().expect("ops")
}

/// The open loop's `rate` object, its fields checked for presence and
/// consistency.
fn rate_figures(report: &Value) -> [u64; 5] {
    let rate = &report["rate"];
    let field = |name: &str| {
        rate[name]
            .as_u64()
            .unwrap_or_else(|| panic!("rate.{name} missing in {report}"))
    };
    let figures = [
        field("batches"),
        field("late_batches"),
        field("late_ops"),
        field("capped_batches"),
        field("send_lag_max_us"),
    ];
    let [batches, late, late_ops, capped, _] = figures;
    assert!(late <= batches && capped <= batches, "{rate}");
    assert!(late_ops <= ops(report), "{rate}");
    figures
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
fn closed_loop_reports_no_rate() {
    let report = report(&[
        "deposits",
        "--accounts",
        "50",
        "--ops",
        "500",
        "--sync",
        "none",
    ]);
    assert!(report["rate"].is_null(), "{report}");
}

/// At a rate well within what even a debug build handles, the open loop
/// keeps to its schedule: the achieved rate is the offered one, and the
/// ops were spread over ops / rate seconds rather than sent at once.
#[test]
fn open_loop_achieves_a_low_offered_rate() {
    let report = report(&[
        "withdrawals",
        "--accounts",
        "1000",
        "--ops",
        "8000",
        "--rate",
        "4000",
        "--batch",
        "40",
        "--sync",
        "buffered",
    ]);
    let offered = report["rate"]["offered_ops_per_sec"]
        .as_f64()
        .expect("offered rate");
    assert_eq!(offered, 4000.0);
    let achieved = report["ops_per_sec"].as_f64().expect("ops/s");
    assert!(
        (achieved / offered - 1.0).abs() < 0.1,
        "achieved {achieved} ops/s, offered {offered}: {report}"
    );
    // 8,000 ops (4,000 withdrawals) in batches of 40, one every 10 ms:
    // about 2 s, which the achieved rate above checks. The batches are
    // full but for the first (half: the steady state) and the last few
    // (the outcomes still owed when the quota ran out).
    assert_eq!(ops(&report), 8_000);
    // Two seconds of sending, checking and applying use some CPU.
    assert!(
        report["cpu_seconds"].as_f64().expect("cpu") > 0.0,
        "{report}"
    );
    let [batches, ..] = rate_figures(&report);
    assert!(
        (201..=205).contains(&batches),
        "{batches} batches: {report}"
    );
    // The default cap (1,024 batches) is far above what 4,000 ops/s needs.
    assert_eq!(report["in_flight"], 1024);
}

/// Offered far more than it can do, with one batch in flight, the open
/// loop falls behind its schedule; latency runs from each batch's
/// scheduled start, so it grows with the backlog (a closed loop's, timed
/// from the send, would stay at one round trip), and the lateness is
/// reported, not hidden.
#[test]
fn open_loop_latency_counts_the_wait_behind_the_schedule() {
    let report = report(&[
        "deposits",
        "--accounts",
        "100",
        "--ops",
        "20000",
        "--rate",
        "10000000",
        "--batch",
        "10",
        "--in-flight",
        "1",
        "--sync",
        "none",
    ]);
    let [batches, late, late_ops, capped, lag_max_us] = rate_figures(&report);
    assert_eq!(batches, 2_000);
    assert!(capped > batches / 2, "{report}");
    assert!(late > batches / 2 && late_ops == late * 10, "{report}");
    let seconds = report["seconds"].as_f64().expect("seconds");
    let latency = &report["latency_us"];
    let (p50, max) = (
        latency["p50"].as_f64().expect("p50"),
        latency["max"].as_u64().expect("max"),
    );
    // The schedule wanted it all sent in 2 ms: the median op waited a good
    // part of the run, and no op's latency is below its batch's lag.
    assert!(
        p50 >= seconds * 1e6 / 4.0,
        "p50 {p50} µs in a {seconds} s run"
    );
    assert!(max >= lag_max_us, "{report}");
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
        "CPU µs/op",
        "baseline ops/s",
        "ratio",
    ] {
        assert!(stdout.contains(row), "no {row:?} row in:\n{stdout}");
    }
}

#[test]
fn human_table_with_rate() {
    let output = bench(&[
        "deposits",
        "--accounts",
        "100",
        "--ops",
        "1000",
        "--rate",
        "5000",
        "--batch",
        "50",
        "--sync",
        "none",
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let offered = stdout.lines().find(|l| l.starts_with("offered ops/s"));
    assert!(offered.is_some_and(|l| l.ends_with(" 5000")), "{stdout}");
    for row in ["batches", "late", "--in-flight"] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}");
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let cases: [(&[&str], &str); 5] = [
        (&["--accounts", "0"], "--accounts"),
        (&["--rate", "0"], "--rate"),
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

//! Starting the real `burnledger serve` binary for black-box HTTP tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `burnledger serve` on a free loopback port, durable in `data_dir`, with
/// no API token and external payouts (the test reports outcomes itself).
pub fn serve_command(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_burnledger"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--payout-mode",
            "external",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("BURNLEDGER_API_TOKEN");
    command
}

/// Spawns `command` (a `burnledger serve …`) with its stdout piped and
/// waits, at most `timeout`, for the `listening on URL` line it prints
/// first. Returns the child and the URL. Later stdout lines are drained by
/// a thread so the server never blocks on a full pipe.
pub fn spawn_listening(command: &mut Command, timeout: Duration) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("burnledger starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(timeout)
        .expect("serve prints `listening on http://ADDR`");
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, url)
}

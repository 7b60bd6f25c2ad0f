//! Starting the real `burnledger serve` binary for black-box HTTP tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

//! Starting the real `burnledger serve` binary for black-box HTTP tests.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
        .env_remove("BURNLEDGER_API_TOKEN")
        .env_remove("BURNLEDGER_METRICS_TOKEN");
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
    (child, url_of(&line))
}

/// Like [`spawn_listening`], but stdout's read end is closed once the
/// first line is read, so every later write to stdout fails (EPIPE).
pub fn spawn_listening_then_close_stdout(
    command: &mut Command,
    timeout: Duration,
) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("burnledger starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line.trim_end().to_string());
        // `reader` drops here: the pipe's read end closes.
    });
    let line = rx
        .recv_timeout(timeout)
        .expect("serve prints `listening on http://ADDR`");
    (child, url_of(&line))
}

/// What a command that should refuse to start printed, and how it exited.
pub struct Refused {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` (one expected to exit by itself) to its end; kills it
/// and fails the test if it is still running after `timeout` (a serve that
/// started when it should have refused).
pub fn run_to_exit(command: &mut Command, timeout: Duration) -> Refused {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("burnledger starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_exit(&mut child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not exit by itself within {timeout:?}")
    });
    Refused {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The exit status, or `None` if the child still runs after `timeout`
/// (a bounded poll: a child's exit has no event to await here).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM to `child`.
pub fn terminate(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill -TERM failed");
}

fn url_of(line: &str) -> String {
    line.strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string()
}

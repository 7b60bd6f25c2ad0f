//! A real 3-node NATS JetStream cluster on loopback for the replication
//! tests: finds the server binary, writes the nodes' configs into a temp
//! dir (`sync_interval: always`, so acknowledged means on disk on a
//! quorum), starts them on free ports, waits until the cluster can take an
//! R=3 stream, and SIGKILLs them on drop. Nodes can be killed, restarted,
//! paused and resumed; the monitoring endpoint (`/jsz`) tells which node
//! leads a stream and what each replica holds.
//!
//! The binary: `$BURNLEDGER_NATS_SERVER`, else the one `.ci/install-nats`
//! installs, else `nats-server` on PATH if it is ≥ 2.10. Without one,
//! [`NatsCluster::start`] says "skipped" and returns `None` — unless
//! `BURNLEDGER_REQUIRE_NATS=1` (CI), where it panics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster (or one restarted node) may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
const NODES: usize = 3;

/// One replica's view of a stream (from its `/jsz`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

struct Node {
    client_port: u16,
    http_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    /// Holds the configs, stores and logs; removed on drop.
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts the cluster and waits until it is ready, or `None` (after
    /// saying "skipped") when no suitable server is installed.
    pub fn start() -> Option<Self> {
        let Some(binary) = find_server() else {
            let why = "nats-server ≥ 2.10 not found; run .ci/install-nats";
            if std::env::var("BURNLEDGER_REQUIRE_NATS").as_deref() == Ok("1") {
                panic!("BURNLEDGER_REQUIRE_NATS=1 but {why}");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(3 * NODES);
        let routes: Vec<String> = (0..NODES)
            .map(|i| format!("nats-route://127.0.0.1:{}", ports[NODES + i]))
            .collect();
        let nodes = (0..NODES)
            .map(|i| {
                let node = Node {
                    client_port: ports[i],
                    http_port: ports[2 * NODES + i],
                    config: dir.path().join(format!("n{}.conf", i + 1)),
                    log: dir.path().join(format!("n{}.log", i + 1)),
                    child: None,
                };
                let text = config_text(dir.path(), i, &node, ports[NODES + i], &routes);
                std::fs::write(&node.config, text).expect("write node config");
                node
            })
            .collect();
        let mut cluster = Self {
            binary,
            nodes,
            _dir: dir,
        };
        for i in 0..NODES {
            cluster.spawn(i);
        }
        cluster.wait_ready();
        Some(cluster)
    }

    /// The nodes' client URLs (`nats://127.0.0.1:port`), n1 first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// SIGKILLs node `i` (0-based) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().expect("SIGKILL nats-server");
            child.wait().expect("reap nats-server");
        }
    }

    /// Starts node `i` again on its store and ports, and waits until it is
    /// healthy (JetStream up, the meta leader known).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_until(&format!("n{} healthy after a restart", i + 1), |c| {
            c.healthy(i)
        });
    }

    /// Pauses node `i` (SIGSTOP).
    pub fn stop(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Resumes node `i` (SIGCONT).
    pub fn cont(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    /// Which node (0-based) leads `stream`, as the running nodes' `/jsz`
    /// report it; `None` while there is none (an election).
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        (0..NODES)
            .filter(|&i| self.nodes[i].child.is_some())
            .filter_map(|i| self.stream_detail(i, stream))
            .find_map(|detail| {
                let name = detail["cluster"]["leader"].as_str()?;
                let n: usize = name.strip_prefix('n')?.parse().ok()?;
                (1..=NODES).contains(&n).then(|| n - 1)
            })
    }

    /// What node `i`'s replica of `stream` holds, if it is up and has one.
    pub fn replica_state(&self, i: usize, stream: &str) -> Option<ReplicaState> {
        let detail = self.stream_detail(i, stream)?;
        let state = &detail["state"];
        Some(ReplicaState {
            messages: state["messages"].as_u64()?,
            bytes: state["bytes"].as_u64()?,
            first_seq: state["first_seq"].as_u64()?,
            last_seq: state["last_seq"].as_u64()?,
        })
    }

    /// Polls `condition` every 50 ms until it holds; panics (naming `what`)
    /// after a minute.
    pub fn wait_until(&self, what: &str, mut condition: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + READY_WITHIN;
        while !condition(self) {
            if Instant::now() >= deadline {
                panic!("{what}: not within {READY_WITHIN:?}\n{}", self.logs());
            }
            std::thread::sleep(POLL);
        }
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open node log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        node.child = Some(child);
    }

    /// Ready: every node healthy, and the meta leader sees both other
    /// nodes current (so an R=3 stream can be placed).
    fn wait_ready(&self) {
        self.wait_until("the NATS cluster ready", |c| {
            (0..NODES).all(|i| c.healthy(i)) && c.meta_complete()
        });
    }

    fn healthy(&self, i: usize) -> bool {
        http_get(self.nodes[i].http_port, "/healthz").is_some_and(|h| h["status"] == "ok")
    }

    fn meta_complete(&self) -> bool {
        (0..NODES).any(|i| {
            let Some(jsz) = http_get(self.nodes[i].http_port, "/jsz") else {
                return false;
            };
            let meta = &jsz["meta_cluster"];
            let name = format!("n{}", i + 1);
            let replicas = meta["replicas"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            meta["leader"] == name.as_str()
                && replicas.len() == NODES - 1
                && replicas.iter().all(|r| r["current"] == true)
        })
    }

    fn stream_detail(&self, i: usize, stream: &str) -> Option<serde_json::Value> {
        self.nodes[i].child.as_ref()?;
        let jsz = http_get(self.nodes[i].http_port, "/jsz?accounts=true&streams=true")?;
        jsz["account_details"]
            .as_array()?
            .iter()
            .filter_map(|account| account["stream_detail"].as_array())
            .flatten()
            .find(|detail| detail["name"] == stream)
            .cloned()
    }

    fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].child.as_ref().expect("node runs").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// The nodes' logs' last lines, for a failure message.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let text = std::fs::read_to_string(&node.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- n{} log:\n{}\n", i + 1, tail.join("\n"))
            })
            .collect()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn config_text(dir: &Path, i: usize, node: &Node, route_port: u16, routes: &[String]) -> String {
    let store = dir.join(format!("n{}", i + 1));
    format!(
        "server_name: n{n}\n\
         listen: 127.0.0.1:{client}\n\
         http: 127.0.0.1:{http}\n\
         jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n\
         cluster {{\n  name: burnledger-test\n  listen: 127.0.0.1:{route}\n  routes: [\n    {routes}\n  ]\n}}\n",
        n = i + 1,
        client = node.client_port,
        http = node.http_port,
        store = store.display(),
        route = route_port,
        routes = routes.join("\n    "),
    )
}

/// `count` distinct ports free on loopback now (held together while
/// picked, so none is handed out twice).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// GET `path` from a node's monitoring port as JSON; `None` on any error
/// or a non-2xx status (a node down, or not healthy yet).
fn http_get(port: u16, path: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    response.body_mut().read_json().ok()
}

/// The server binary to run, if one ≥ 2.10 is found.
fn find_server() -> Option<PathBuf> {
    let installed = std::env::var_os("BURNLEDGER_NATS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/burnledger/nats-2.15.1"))
        })
        .map(|dir| dir.join("nats-server"));
    let candidates = [
        std::env::var_os("BURNLEDGER_NATS_SERVER").map(PathBuf::from),
        installed,
        Some(PathBuf::from("nats-server")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|binary| version_at_least_2_10(binary))
}

/// Runs `binary --version` ("nats-server: v2.15.1") and checks it.
fn version_at_least_2_10(binary: &Path) -> bool {
    let Ok(output) = Command::new(binary).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(version) = text.trim().rsplit('v').next() else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (2, 10),
        _ => false,
    }
}

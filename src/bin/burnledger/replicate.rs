//! Replication from the command line (feature `replication`): the flags
//! `serve` takes to join a NATS JetStream cluster as the writer or a
//! standby (`--replicate`, `--stream`, `--standby`, ...), running such a
//! node behind the HTTP API, and `burnledger promote`, which asks a
//! standby to take over (`POST /v1/admin/promote`).
//!
//! A binary built without the feature still knows the flags, and refuses
//! them with a clear error.

use std::io::Write as _;
use std::time::Duration;

use burnledger::http::HttpOptions;
use burnledger::Config;
use clap::Args;

/// How `serve` joins a replicated ledger.
#[derive(Args, Debug, Clone, Default)]
pub struct ReplicationArgs {
    /// Replicate the log on this NATS JetStream cluster
    /// (nats://h1:4222,nats://h2:4222,...). Needs nats-server ≥ 2.10 run
    /// with `jetstream { sync_interval: always }`.
    #[arg(long)]
    pub replicate: Option<String>,
    /// The JetStream stream holding the log (made if missing).
    #[arg(long, default_value = "burnledger")]
    pub stream: String,
    /// Start as a standby: follow the stream, serve reads, refuse writes
    /// with `not_leader`; promote when the writer's lease lapses.
    #[arg(long)]
    pub standby: bool,
    /// This node's name in the writer's lease (default: its --listen
    /// address).
    #[arg(long)]
    pub node: Option<String>,
    /// This node's HTTP base URL, named to callers a standby refuses
    /// (default: http://<--listen>).
    #[arg(long)]
    pub advertise: Option<String>,
    /// How long the writer's lease lasts unrenewed: 10s, 1m... (1s to 1h).
    /// Keep it above the time NATS takes to elect a new stream leader (4
    /// to 9 s): a shorter lease lapses while the cluster elects, and the
    /// standby takes over from a writer that is alive (safe — the old one
    /// is fenced — but a failover nobody needed).
    #[arg(long, default_value = "10s")]
    pub lease_ttl: String,
    /// Stream replicas (3 on a 3-node cluster).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// A standby promotes itself only when told to (`burnledger promote`,
    /// `POST /v1/admin/promote`), never on a lapsed lease.
    #[arg(long)]
    pub manual_promotion: bool,
}

/// `burnledger promote`'s flags.
#[derive(Args, Debug, Clone)]
pub struct PromoteArgs {
    /// The standby's HTTP base URL, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    pub url: String,
    /// The standby's API token (default: BURNLEDGER_API_TOKEN).
    #[arg(long)]
    pub api_token: Option<String>,
}

/// Asks the standby at `--url` to take over; prints its answer.
pub fn promote(args: PromoteArgs) -> Result<bool, String> {
    let url = format!("{}/v1/admin/promote", args.url.trim_end_matches('/'));
    let token = args
        .api_token
        .or_else(|| std::env::var(crate::serve::API_TOKEN_ENV).ok());
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    let mut request = agent.post(&url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut answer = request
        .send_empty()
        .map_err(|error| format!("POST {url}: {error}"))?;
    let status = answer.status();
    let body = answer.body_mut().read_to_string().unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{body}");
    if status.is_success() {
        Ok(true)
    } else {
        Err(format!("POST {url}: {status}"))
    }
}

/// Runs `serve` as a replicated node (see the module docs).
#[cfg(feature = "replication")]
pub fn run(
    args: &ReplicationArgs,
    listen: &str,
    config: Config,
    options: &HttpOptions,
) -> Result<bool, String> {
    use burnledger::replication::node::{Node, NodeSettings};
    use burnledger::replication::StreamSettings;

    let servers: Vec<String> = args
        .replicate
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        return Err("--replicate: expected nats://HOST:PORT[,...]".into());
    }
    let ttl = crate::serve::parse_duration_flag(&args.lease_ttl, "lease TTL", 3600)?;
    let settings = NodeSettings {
        stream: StreamSettings {
            servers,
            stream: args.stream.clone(),
            replicas: args.replicas,
            request_timeout: Duration::from_secs(2),
        },
        node: args.node.clone().unwrap_or_else(|| listen.to_string()),
        url: Some(
            args.advertise
                .clone()
                .unwrap_or_else(|| format!("http://{listen}")),
        ),
        lease_ttl: Duration::from_secs(ttl),
        append_deadline: Duration::from_secs(30),
        auto_promote: !args.manual_promotion,
        snapshot_publish_every: Duration::from_secs(30),
    };
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let node = Node::start(config, settings, !args.standby)
            .await
            .map_err(|error| error.to_string())?;
        let bound = match burnledger::http::bind(std::sync::Arc::clone(&node), listen, options) {
            Ok(bound) => bound,
            Err(error) => {
                node.ledger().shutdown().await;
                return Err(format!("cannot listen on {listen}: {error}"));
            }
        };
        crate::serve::print_listening(&bound.addrs);
        let served = bound.server.await;
        tracing::info!("stopped serving; shutting the node down");
        node.ledger().shutdown().await;
        served
            .map(|()| true)
            .map_err(|error| format!("server error: {error}"))
    })
}

/// Without the feature: `--replicate` is refused.
#[cfg(not(feature = "replication"))]
pub fn run(
    _args: &ReplicationArgs,
    _listen: &str,
    _config: Config,
    _options: &HttpOptions,
) -> Result<bool, String> {
    Err(
        "--replicate: this burnledger was built without replication \
         (cargo build --release --features replication)"
            .into(),
    )
}

//! A replicated node's routes and metrics: `POST /v1/admin/promote` makes
//! a standby the writer (fencing the old one), `GET /v1/replication` shows
//! the node's role, epoch and lag, and `/metrics` gets the same figures
//! plus the publish latency histogram. A server that is not a replicated
//! node (no `--replicate`, or built without the `replication` feature)
//! answers both routes 409 `not_replicated`.

#[cfg(feature = "replication")]
use std::fmt::Write;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::http::error::ApiError;
use crate::http::openapi::PromoteErrors;
use crate::http::source::LedgerSource;

type Answer = Result<HttpResponse, ApiError>;

/// A replicated node's state, as `GET /v1/replication` and
/// `POST /v1/admin/promote` answer it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplicationJson {
    /// `standby`, `writer` or `fenced` (was the writer until another took
    /// over; refuses writes).
    pub role: &'static str,
    /// The epoch this node writes (or last saw taken).
    pub epoch: u64,
    /// The stream sequence this node last applied or appended.
    pub applied_seq: u64,
    /// The stream's last sequence, as last seen.
    pub stream_seq: u64,
    /// Messages of the stream this node has not applied yet.
    pub lag: u64,
}

fn not_replicated() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_replicated",
        "this server is not a replicated node (serve --replicate)",
    )
}

/// Makes this standby the writer: it reads the stream to its end, fences
/// it under a new epoch (the old writer's next append is refused), takes
/// the lease and starts writing. A writer answers its state unchanged.
#[utoipa::path(post, path = "/v1/admin/promote",
    responses((status = 200, body = ReplicationJson), PromoteErrors),
    security((), ("api_token" = [])))]
pub(crate) async fn promote(source: web::Data<LedgerSource>) -> Answer {
    match source.get_ref() {
        LedgerSource::Fixed(_) => Err(not_replicated()),
        #[cfg(feature = "replication")]
        LedgerSource::Node(node) => {
            node.promote().await.map_err(|error| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "promotion_failed",
                    error.to_string(),
                )
            })?;
            Ok(HttpResponse::Ok().json(state_of(node)))
        }
    }
}

/// This node's role, epoch and lag.
#[utoipa::path(get, path = "/v1/replication",
    responses((status = 200, body = ReplicationJson), PromoteErrors),
    security((), ("api_token" = [])))]
pub(crate) async fn status(source: web::Data<LedgerSource>) -> Answer {
    match source.get_ref() {
        LedgerSource::Fixed(_) => Err(not_replicated()),
        #[cfg(feature = "replication")]
        LedgerSource::Node(node) => Ok(HttpResponse::Ok().json(state_of(node))),
    }
}

#[cfg(feature = "replication")]
fn state_of(node: &crate::replication::node::Node) -> ReplicationJson {
    let metrics = node.metrics();
    ReplicationJson {
        role: metrics.role.as_str(),
        epoch: metrics.epoch,
        applied_seq: metrics.applied_seq,
        stream_seq: metrics.stream_seq,
        lag: metrics.lag,
    }
}

/// The node's lines of `/metrics` (none for a server that is not one).
pub fn render(source: &LedgerSource) -> String {
    match source {
        LedgerSource::Fixed(_) => String::new(),
        #[cfg(feature = "replication")]
        LedgerSource::Node(node) => {
            let mut out = String::new();
            render_node(&mut out, &node.metrics());
            out
        }
    }
}

#[cfg(feature = "replication")]
fn render_node(out: &mut String, m: &crate::replication::metrics::ReplicationSnapshot) {
    out.push_str("# HELP burnledger_replication_role This node's role (1 for the one it has).\n");
    out.push_str("# TYPE burnledger_replication_role gauge\n");
    for role in ["standby", "writer", "fenced"] {
        let has = u8::from(m.role.as_str() == role);
        let _ = writeln!(out, "burnledger_replication_role{{role=\"{role}\"}} {has}");
    }
    for (name, help, value) in [
        ("epoch", "The epoch this node writes or last saw.", m.epoch),
        (
            "lag_messages",
            "Messages of the stream this node has not applied.",
            m.lag,
        ),
        (
            "stream_sequence",
            "The stream's last sequence, as last seen.",
            m.stream_seq,
        ),
    ] {
        let _ = writeln!(out, "# HELP burnledger_replication_{name} {help}");
        let _ = writeln!(out, "# TYPE burnledger_replication_{name} gauge");
        let _ = writeln!(out, "burnledger_replication_{name} {value}");
    }
    out.push_str("# HELP burnledger_replication_publish_duration_seconds Time from a batch's publish to the stream's acknowledgement.\n");
    out.push_str("# TYPE burnledger_replication_publish_duration_seconds histogram\n");
    for (bound_us, count) in &m.publish_buckets_us {
        let le = bound_us.map_or("+Inf".to_string(), |us| format!("{}", us as f64 / 1e6));
        let _ = writeln!(
            out,
            "burnledger_replication_publish_duration_seconds_bucket{{le=\"{le}\"}} {count}"
        );
    }
    let sum = m.publish_nanos as f64 / 1e9;
    let _ = writeln!(
        out,
        "burnledger_replication_publish_duration_seconds_sum {sum}"
    );
    let _ = writeln!(
        out,
        "burnledger_replication_publish_duration_seconds_count {}",
        m.publishes
    );
}

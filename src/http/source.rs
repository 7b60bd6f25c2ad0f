//! Where the app finds the ledger to serve: one fixed [`Ledger`], or — a
//! replicated node (feature `replication`) — whichever ledger the node
//! runs now, a standby until it is promoted, then the writer. Handlers
//! take a `Ledger` argument; its extractor asks the source on every
//! request, so a promotion is seen by the next request without a restart.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};

use crate::http::error::ApiError;
use crate::ledger::Ledger;

/// The ledger (or the node) an app serves.
#[derive(Clone)]
pub enum LedgerSource {
    Fixed(Ledger),
    #[cfg(feature = "replication")]
    Node(std::sync::Arc<crate::replication::node::Node>),
}

impl LedgerSource {
    /// The ledger to serve this request.
    pub fn current(&self) -> Ledger {
        match self {
            Self::Fixed(ledger) => ledger.clone(),
            #[cfg(feature = "replication")]
            Self::Node(node) => node.ledger(),
        }
    }
}

impl From<Ledger> for LedgerSource {
    fn from(ledger: Ledger) -> Self {
        Self::Fixed(ledger)
    }
}

#[cfg(feature = "replication")]
impl From<std::sync::Arc<crate::replication::node::Node>> for LedgerSource {
    fn from(node: std::sync::Arc<crate::replication::node::Node>) -> Self {
        Self::Node(node)
    }
}

impl FromRequest for Ledger {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let source = req.app_data::<web::Data<LedgerSource>>();
        ready(source.map(|s| s.current()).ok_or_else(|| {
            ApiError::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the app was configured without a ledger",
            )
        }))
    }
}

//! Test doubles for the bus's unit tests (compiled for tests only): a session store that keeps
//! nothing ([`NoStore`]), a bus of `example.com` over it ([`bus`]), and a cluster whose shared
//! database is down for some calls ([`DownCluster`], a double of `cluster::Link`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use super::remote::{
    Adopted, Claimed, Forwarded, Remote, RemoteHolders, RemoteTarget, RuntimeClaim,
};
use super::{Bus, BusConfig, RouteError, RouteFailure, RuntimeStatus, Session};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::PolicyPoint;
use crate::store::{
    PersistedSession, SessionStore, StoreError, StoreOp, WriterConfig, spawn_writer,
};

/// A session store that keeps nothing.
pub(super) struct NoStore;

impl SessionStore for NoStore {
    fn next_epoch(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async { Ok(1) })
    }

    fn load_sessions(&self) -> BoxFuture<'_, Result<Vec<PersistedSession>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn apply<'a>(&'a self, _: &'a [StoreOp]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A bus of `example.com` without policies, over [`NoStore`]; in a cluster as `node_id` when
/// given (its remote set by the test).
pub(super) fn bus(node_id: Option<&str>) -> Bus {
    let config = Config::for_tests(std::path::Path::new("unused"), "example.com");
    let metrics = Arc::new(Metrics::new());
    let policy = PolicyPoint::new(&config.policy, Arc::clone(&metrics)).unwrap();
    let (writer, _task) = spawn_writer(Arc::new(NoStore), WriterConfig::default());
    Bus::new(
        BusConfig {
            domain: config.domain,
            session: config.session,
            allocation: config.allocation,
            epoch: 1,
            clock: config.clock,
            node_id: node_id.map(str::to_owned),
        },
        writer,
        metrics,
        Arc::new(policy),
        None,
    )
}

/// What the cluster answers when its shared database is unreachable.
pub(super) fn db_down() -> RouteError {
    RouteError::Cluster("the shared database is unreachable; retry".into())
}

/// A cluster whose shared database is down: adoptions, token lookups and runtime statuses
/// fail. Lookups find nobody, or, with `slow_lookups`, say they are entered (`entered`), wait
/// for `release` (as for the pool's acquire timeout) and fail. Claims of a runtime URL succeed,
/// or fail with `claims_fail`.
#[derive(Debug, Default)]
pub(super) struct DownCluster {
    pub(super) slow_lookups: bool,
    pub(super) entered: Notify,
    pub(super) release: Notify,
    pub(super) claims_fail: bool,
}

impl Remote for DownCluster {
    fn lookup<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<RemoteHolders, RouteError>> {
        Box::pin(async {
            if !self.slow_lookups {
                return Ok(RemoteHolders::default());
            }
            self.entered.notify_one();
            self.release.notified().await;
            Err(db_down())
        })
    }

    fn forward<'a>(
        &'a self,
        _: Forwarded<'a>,
        _: Vec<RemoteTarget>,
    ) -> BoxFuture<'a, Vec<RouteFailure>> {
        Box::pin(async { Vec::new() })
    }

    fn announce(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn adopt(&self, _: [u8; 32]) -> BoxFuture<'_, Result<Option<Adopted>, RouteError>> {
        Box::pin(async { Err(db_down()) })
    }

    fn find_by_token(
        &self,
        _: [u8; 32],
    ) -> BoxFuture<'_, Result<Option<(String, String)>, RouteError>> {
        Box::pin(async { Err(db_down()) })
    }

    fn runtime_status<'a>(
        &'a self,
        _: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, RuntimeStatus)>, RouteError>> {
        Box::pin(async { Err(db_down()) })
    }

    fn forget_lookups(&self) {}

    fn drain<'a>(&'a self, _: &'a Arc<Session>) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn claim_runtime<'a>(
        &'a self,
        _: RuntimeClaim<'a>,
    ) -> BoxFuture<'a, Result<Claimed, RouteError>> {
        Box::pin(async {
            if self.claims_fail {
                Err(db_down())
            } else {
                Ok(Claimed::Yes)
            }
        })
    }
}

//! Shared state of the SignalingCluster controller: the services it calls (metrics, etcd
//! clients, shard managers, the finalizer's cleanup), its member-watch triggers and the
//! per-object bookkeeping (failure counts for backoff, pending config revisions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{EnvVar, ObjectReference};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use tokio::time::Instant;

use super::triggers::{ClusterRef, Triggers};
use crate::controller::Result;
use crate::controller::labels::FIELD_MANAGER;
use crate::controller::policy::Failures;
use crate::controller::shards::ShardManagers;
use crate::crd::SignalingCluster;
use crate::etcd::EtcdClients;
use crate::metrics::Metrics;

/// What a cleanup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupOutcome {
    /// The etcd prefix was removed (it held `keys` keys).
    Removed {
        /// The removed prefix.
        prefix: String,
        /// How many keys it held.
        keys: i64,
    },
    /// Nothing could be removed, for this reason (the object is released anyway).
    Skipped(String),
}

/// Cleanup of what Kubernetes does not own (the cluster's etcd prefix), run by the finalizer.
pub trait ClusterCleanup: Send + Sync + 'static {
    /// Removes everything stored for `cluster`; must be idempotent.
    fn cleanup<'a>(
        &'a self,
        cluster: &'a SignalingCluster,
    ) -> BoxFuture<'a, Result<CleanupOutcome>>;
}

/// A cleanup that has nothing to remove (clusters without an etcd side, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCleanup;

impl ClusterCleanup for NoCleanup {
    fn cleanup<'a>(
        &'a self,
        _cluster: &'a SignalingCluster,
    ) -> BoxFuture<'a, Result<CleanupOutcome>> {
        Box::pin(async { Ok(CleanupOutcome::Skipped("nothing to clean up".into())) })
    }
}

/// What the controller needs besides the Kubernetes client.
#[derive(Clone)]
pub struct Services {
    /// Metrics (reconcile counts, status writes, config lag).
    pub metrics: Metrics,
    /// etcd clients of the clusters.
    pub etcd: EtcdClients,
    /// The per-cluster shard managers.
    pub shards: ShardManagers,
    /// The finalizer's cleanup.
    pub cleanup: Arc<dyn ClusterCleanup>,
    /// Environment every node pod gets unless its cluster's pod template sets the variable
    /// (the operator's trace export settings, passed on to the nodes).
    pub node_env: Vec<EnvVar>,
}

/// Shared state of the SignalingCluster controller.
pub struct Context {
    pub(super) client: Client,
    pub(super) recorder: Recorder,
    pub(super) services: Services,
    pub(super) triggers: Triggers,
    pub(super) trigger_receiver: Mutex<Option<mpsc::Receiver<ClusterRef>>>,
    /// Consecutive failed reconciles per object, for backoff.
    pub(super) failures: Failures<ObjectRef<SignalingCluster>>,
    // Per cluster: the config revision not yet applied everywhere and when it was first seen.
    pending: Mutex<HashMap<ObjectRef<SignalingCluster>, (u64, Instant)>>,
}

impl Context {
    /// A context publishing Events as `switchboard-operator` (`instance`: this pod's name).
    pub fn new(client: Client, instance: Option<String>, services: Services) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        let (triggers, receiver) = Triggers::new();
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            services,
            triggers,
            trigger_receiver: Mutex::new(Some(receiver)),
            failures: Failures::default(),
            pending: Mutex::default(),
        }
    }

    /// How long `revision` of `cluster` has been waiting for acks (zero when first seen);
    /// `applied` clears the record.
    pub(super) fn pending_for(
        &self,
        cluster: &ObjectRef<SignalingCluster>,
        revision: u64,
        applied: bool,
    ) -> Duration {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if applied {
            pending.remove(cluster);
            return Duration::ZERO;
        }
        let now = Instant::now();
        let entry = pending.entry(cluster.clone()).or_insert((revision, now));
        if entry.0 != revision {
            *entry = (revision, now);
        }
        now.saturating_duration_since(entry.1)
    }

    /// Publishes an Event about `cluster` (and the `related` object); failures are logged,
    /// never fatal.
    pub(super) async fn publish(
        &self,
        cluster: &SignalingCluster,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: related,
        };
        let reference: ObjectReference = cluster.object_ref(&());
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::debug!(%error, reason, "could not publish event");
        }
    }

    pub(super) fn forget(&self, cluster: &ObjectRef<SignalingCluster>) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(cluster);
        self.failures.reset(cluster);
    }
}

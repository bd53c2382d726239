//! A SignalingCluster's state in etcd as its reconciler reads and writes it: the `config` key
//! (compare-and-set on the key's mod revision), the `nodes/` and `acks/` ranges (one
//! consistent read), and the whole prefix on deletion ([`EtcdCleanup`]). Every request is
//! bounded by the etcd clients' timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use futures::future::BoxFuture;
use switchboard_contract::keys::{Ack, ConfigValue, Key, Keyspace, NodeInfo, Value};

use super::config::StoredConfig;
use super::context::{CleanupOutcome, ClusterCleanup};
use crate::controller::{Error, Result};
use crate::crd::{EtcdSpec, SignalingCluster};
use crate::etcd::{EtcdClients, EtcdError, bounded};

/// The registered nodes and their acks, read at one etcd revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Members {
    /// `nodes/<pod>` values that parse.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// `acks/<pod>` values that parse.
    pub acks: BTreeMap<String, Ack>,
}

/// One cluster's keys on one etcd client.
pub struct ClusterStore {
    client: etcd_client::Client,
    keys: Keyspace,
    spec: EtcdSpec,
    timeout: Duration,
}

impl ClusterStore {
    /// The store of cluster `name` in `namespace`.
    pub fn new(
        client: etcd_client::Client,
        namespace: &str,
        name: &str,
        spec: &EtcdSpec,
        timeout: Duration,
    ) -> Result<Self, EtcdError> {
        Ok(Self {
            client,
            keys: Keyspace::new(namespace, name)?,
            spec: spec.clone(),
            timeout,
        })
    }

    /// The cluster's keyspace.
    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    /// The `config` key and its mod revision (0 when missing).
    pub async fn read_config(&mut self) -> Result<(StoredConfig, i64), EtcdError> {
        let key = self.keys.config();
        let response = bounded(
            &self.spec,
            self.timeout,
            "read config",
            self.client.get(key.clone(), None),
        )
        .await?;
        Ok(match response.kvs().first() {
            None => (StoredConfig::Missing, 0),
            Some(kv) => match ConfigValue::decode(kv.value()) {
                Ok(value) => (StoredConfig::Valid(value), kv.mod_revision()),
                Err(error) => {
                    tracing::warn!(%key, %error, "stored node config is invalid; overwriting it");
                    (StoredConfig::Invalid, kv.mod_revision())
                }
            },
        })
    }

    /// Writes `value` if the key still has `mod_revision` (0: still missing). `false` when
    /// someone else wrote in between.
    pub async fn write_config(
        &mut self,
        value: &ConfigValue,
        mod_revision: i64,
    ) -> Result<bool, EtcdError> {
        let key = self.keys.config();
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([TxnOp::put(key, value.encode(), None)]);
        let response = bounded(
            &self.spec,
            self.timeout,
            "write config",
            self.client.txn(txn),
        )
        .await?;
        Ok(response.succeeded())
    }

    /// Every registered node and every ack (values that do not parse are skipped).
    pub async fn members(&mut self) -> Result<Members, EtcdError> {
        let prefix = || Some(GetOptions::new().with_prefix());
        let txn = Txn::new().and_then([
            TxnOp::get(self.keys.nodes_prefix(), prefix()),
            TxnOp::get(self.keys.acks_prefix(), prefix()),
        ]);
        let response = bounded(
            &self.spec,
            self.timeout,
            "read members",
            self.client.txn(txn),
        )
        .await?;
        let mut members = Members::default();
        for op in response.op_responses() {
            let TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                match self.keys.parse(kv.key()) {
                    Ok(Key::Node(pod)) => match NodeInfo::decode(kv.value()) {
                        Ok(info) => {
                            members.nodes.insert(pod, info);
                        }
                        Err(error) => tracing::debug!(%pod, %error, "skipping unreadable node key"),
                    },
                    Ok(Key::Ack(pod)) => match Ack::decode(kv.value()) {
                        Ok(ack) => {
                            members.acks.insert(pod, ack);
                        }
                        Err(error) => tracing::debug!(%pod, %error, "skipping unreadable ack"),
                    },
                    _ => {}
                }
            }
        }
        Ok(members)
    }

    /// Deletes every key of the cluster; returns how many there were.
    pub async fn delete_all(&mut self) -> Result<i64, EtcdError> {
        let prefix = self.keys.prefix().to_string();
        let response = bounded(
            &self.spec,
            self.timeout,
            "delete prefix",
            self.client
                .delete(prefix, Some(DeleteOptions::new().with_prefix())),
        )
        .await?;
        Ok(response.deleted())
    }
}

/// The finalizer's cleanup: delete the cluster's etcd prefix (idempotent: deleting an empty
/// prefix succeeds).
///
/// An unreachable etcd fails the cleanup, and the finalizer retries with backoff (the
/// cluster object stays until etcd answers, or until someone removes the finalizer by hand).
/// A TLS Secret that is already gone (a namespace being deleted removes it together with the
/// cluster) cannot be waited for: the cleanup then uses an existing connection if there is
/// one, and otherwise gives up with a Warning Event naming the prefix left behind.
#[derive(Clone, Debug)]
pub struct EtcdCleanup {
    clients: EtcdClients,
}

impl EtcdCleanup {
    /// Cleanup through `clients`.
    pub fn new(clients: EtcdClients) -> Self {
        Self { clients }
    }

    async fn run(&self, cluster: &SignalingCluster) -> Result<CleanupOutcome> {
        let namespace = cluster
            .metadata
            .namespace
            .as_deref()
            .ok_or(Error::MissingObjectKey("namespace"))?;
        let name = cluster
            .metadata
            .name
            .as_deref()
            .ok_or(Error::MissingObjectKey("name"))?;
        let keys = Keyspace::new(namespace, name).map_err(EtcdError::from)?;
        let client = match self.clients.for_cluster(cluster).await {
            Ok(client) => client,
            Err(EtcdError::TlsSecretMissing(secret)) => {
                match self.clients.cached(namespace, &cluster.spec.etcd) {
                    Some(client) => client,
                    None => {
                        return Ok(CleanupOutcome::Skipped(format!(
                            "etcd TLS Secret {secret} is gone: left etcd prefix {} behind \
                             (remove it with `etcdctl del --prefix {}`)",
                            keys.prefix(),
                            keys.prefix()
                        )));
                    }
                }
            }
            Err(error) => return Err(error.into()),
        };
        let mut store = ClusterStore::new(
            client,
            namespace,
            name,
            &cluster.spec.etcd,
            self.clients.timeout(),
        )?;
        let deleted = store.delete_all().await?;
        Ok(CleanupOutcome::Removed {
            prefix: keys.prefix().to_string(),
            keys: deleted,
        })
    }
}

impl ClusterCleanup for EtcdCleanup {
    fn cleanup<'a>(
        &'a self,
        cluster: &'a SignalingCluster,
    ) -> BoxFuture<'a, Result<CleanupOutcome>> {
        Box::pin(self.run(cluster))
    }
}

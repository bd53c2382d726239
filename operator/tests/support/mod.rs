//! What the operator's integration tests share beyond the test kit (`switchboard-testkit`
//! starts etcd and the kube-apiserver): simulated signaling nodes that register under leases
//! and answer handoffs the way docs/architecture.md says nodes do, the CRDs, namespaces and
//! SignalingCluster objects.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use futures::StreamExt;
use switchboard_contract::keys::{
    Ack, Assignment, Key, Keyspace, Load, NodeInfo, NodeState, Value,
};
use switchboard_testkit::eventually;
use tokio::task::JoinHandle;

/// Installs the Switchboard CRDs and waits until they are served.
pub async fn install_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in switchboard_operator::crd::crds() {
        api.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    for (_, crd) in switchboard_operator::crd::crds() {
        let name = crd.metadata.name.clone().expect("crd name");
        eventually(&format!("CRD {name} established"), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let crd = api.get(&name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            }
        })
        .await;
    }
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &kube::Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// Every assignment of the cluster.
pub async fn assignments(client: &Client, keys: &Keyspace) -> BTreeMap<u32, Assignment> {
    let response = client
        .kv_client()
        .get(
            keys.assignments_prefix(),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .expect("get assignments");
    response
        .kvs()
        .iter()
        .filter_map(|kv| match keys.parse(kv.key()).ok()? {
            Key::Assignment(shard) => Some((shard, Assignment::decode(kv.value()).ok()?)),
            _ => None,
        })
        .collect()
}

/// A simulated signaling node: its `nodes/<pod>` key under its own lease, kept alive until
/// [`SimNode::stop_keepalive`].
pub struct SimNode {
    /// Pod name.
    pub name: String,
    /// Its lease.
    pub lease: i64,
    info: NodeInfo,
    keepalive: Option<JoinHandle<()>>,
}

impl SimNode {
    /// Registers node `name` of `version` with a lease of `ttl` seconds.
    pub async fn register(
        client: &Client,
        keys: &Keyspace,
        name: &str,
        version: &str,
        ttl: i64,
    ) -> Self {
        let lease = client
            .lease_client()
            .grant(ttl, None)
            .await
            .expect("grant")
            .id();
        let info = NodeInfo {
            url: format!("ws://127.0.0.1:7000/{name}"),
            version: version.into(),
            protocols: vec!["switchboard.v1".into()],
            state: NodeState::Ready,
            load: Load::default(),
            error_rate: 0.0,
            started_at_ms: 0,
            liveness: None,
        };
        client
            .kv_client()
            .put(
                keys.node(name).expect("node key"),
                info.encode(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .expect("put node");
        let mut lease_client = client.lease_client();
        let period = Duration::from_millis(u64::try_from(ttl).unwrap_or(2) * 250);
        let keepalive = tokio::spawn(async move {
            let Ok((mut keeper, mut responses)) = lease_client.keep_alive(lease).await else {
                return;
            };
            loop {
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                if responses.message().await.is_err() {
                    return;
                }
                tokio::time::sleep(period).await;
            }
        });
        Self {
            name: name.into(),
            lease,
            info,
            keepalive: Some(keepalive),
        }
    }

    /// Stops renewing the lease: the key expires after the TTL, like a crashed process.
    pub fn stop_keepalive(&mut self) {
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
    }

    /// Rewrites the node value with `state` (under the same lease).
    pub async fn set_state(&mut self, client: &Client, keys: &Keyspace, state: NodeState) {
        self.info.state = state;
        self.put(client, keys).await;
    }

    /// Rewrites the node value with `error_rate`.
    pub async fn set_error_rate(&mut self, client: &Client, keys: &Keyspace, rate: f64) {
        self.info.error_rate = rate;
        self.put(client, keys).await;
    }

    async fn put(&self, client: &Client, keys: &Keyspace) {
        client
            .kv_client()
            .put(
                keys.node(&self.name).expect("node key"),
                self.info.encode(),
                Some(PutOptions::new().with_lease(self.lease)),
            )
            .await
            .expect("put node");
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.stop_keepalive();
    }
}

/// Answers for simulated nodes the way real ones do: for every assignment naming one of
/// `nodes`, `acks/<node>` reports `released` (when `handoff_to` is set) or `serving`.
/// Nodes in `mute` never release (their handoffs end at the operator's deadline).
pub fn spawn_responder(
    client: Client,
    keys: Keyspace,
    nodes: BTreeSet<String>,
    mute: BTreeSet<String>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut current: BTreeMap<u32, Assignment> = BTreeMap::new();
        let mut written: BTreeMap<String, Ack> = BTreeMap::new();
        let response = client
            .kv_client()
            .get(
                keys.assignments_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .expect("read assignments");
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        for kv in response.kvs() {
            if let (Ok(Key::Assignment(shard)), Ok(a)) =
                (keys.parse(kv.key()), Assignment::decode(kv.value()))
            {
                current.insert(shard, a);
            }
        }
        let mut stream = client
            .watch_client()
            .watch(
                keys.assignments_prefix(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await
            .expect("watch assignments");
        loop {
            for node in &nodes {
                let mut ack = Ack::default();
                for (shard, a) in &current {
                    if a.node != *node {
                        continue;
                    }
                    if a.handoff_to.is_some() {
                        if !mute.contains(node) {
                            ack.released.insert(*shard, a.epoch);
                        }
                    } else {
                        ack.serving.insert(*shard, a.epoch);
                    }
                }
                if written.get(node) != Some(&ack) {
                    let key = keys.ack(node).expect("ack key");
                    if client
                        .kv_client()
                        .put(key, ack.encode(), None)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    written.insert(node.clone(), ack);
                }
            }
            let Some(Ok(response)) = stream.next().await else {
                return;
            };
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(Key::Assignment(shard)) = keys.parse(kv.key()) else {
                    continue;
                };
                match event.event_type() {
                    EventType::Put => {
                        if let Ok(a) = Assignment::decode(kv.value()) {
                            current.insert(shard, a);
                        }
                    }
                    EventType::Delete => {
                        current.remove(&shard);
                    }
                }
            }
        }
    })
}

/// A SignalingCluster object (not stored) for namespace `namespace`.
pub fn cluster(
    namespace: &str,
    name: &str,
    replicas: i32,
    shards: i32,
    etcd: &str,
) -> switchboard_operator::crd::SignalingCluster {
    use switchboard_operator::crd::{EtcdSpec, NodeConfig, SignalingCluster, SignalingClusterSpec};
    let mut cluster = SignalingCluster::new(
        name,
        SignalingClusterSpec {
            replicas,
            image: "switchboard/signaling-node:test".into(),
            port: 7000,
            shards,
            etcd: EtcdSpec {
                endpoints: vec![etcd.into()],
                tls_secret: None,
            },
            auth_secret: "auth".into(),
            config: NodeConfig::default(),
            client_access: None,
            pod_template: None,
            termination_grace_period_seconds: 60,
            drain_timeout_seconds: 30,
            disruption_budget: None,
        },
    );
    cluster.metadata.namespace = Some(namespace.into());
    cluster
}

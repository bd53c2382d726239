//! The environment every soak run uses, deployed the way `e2e/up` deploys it: a control plane
//! and one real node (kubelet, containerd + runc, CNI, kube-proxy, CoreDNS; [`RealCluster`]),
//! with Switchboard installed by `e2e/scripts/deploy`: the fleet etcd of `examples/etcd/`, the
//! CRDs, and the operator from the Helm chart (2 replicas, leader election on). Each run then
//! gets a fresh SignalingCluster (and ProtocolRollout) under its own name, so its etcd prefix,
//! pods, shards and rooms are new; the cluster, the operator and etcd are shared across runs.
//!
//! Every pod is a container in its own network namespace, so faults use the real mechanisms:
//! signals to a container's process and iptables in a pod's namespace ([`SoakEnv::fault`],
//! [`SoakEnv::net_fault`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use switchboard_operator::crd::SignalingCluster;
use switchboard_protocol::auth::{Claims, JwtSecret, RoomGrant, mint, unix_now};

use super::error::SoakError;
use crate::cluster::eventually;
use crate::real_node::{self, Fault, NetFault, RealCluster};

/// Namespace of the operator (as in `e2e/up`).
pub const OPERATOR_NS: &str = "switchboard-system";
/// Namespace of the fleets.
pub const NS: &str = "default";
/// Members of the fleet etcd.
pub const ETCD_MEMBERS: usize = 3;
/// Shards per run cluster.
pub const SHARDS: u32 = 16;
/// Label naming a pod's SignalingCluster.
pub const CLUSTER_LABEL: &str = "switchboard.dev/cluster";
/// How long a fault waits for a pod's container to run again after a kill.
pub const CONTAINER_RESTART: Duration = Duration::from_secs(15);
/// Bound for anything that should happen promptly on a loaded two-core machine.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The fleet etcd's members as a SignalingCluster lists them: each member by its own name,
/// so a client can go to another member when one is down or cut off, fully qualified because
/// the operator resolves them from its own namespace.
pub fn etcd_endpoints() -> Vec<String> {
    (0..ETCD_MEMBERS)
        .map(|i| format!("http://etcd-{i}.etcd-peers.{NS}.svc:2379"))
        .collect()
}

/// Whether `e` says the pod's container is between a kill and its restart
/// (`e2e/scripts/node`'s messages).
fn restarting(e: &crate::cluster::ClusterError) -> bool {
    let text = e.to_string();
    text.contains("is not running on this node") || text.contains("has no running container")
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A pod's name.
pub fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// A pod's IP.
pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

/// The shared environment.
pub struct SoakEnv {
    /// The control plane and the real node.
    pub cluster: RealCluster,
    /// The fleet etcd's client URL: its Service, which this machine routes to the node.
    pub etcd_url: String,
    key: JwtSecret,
}

/// `examples/basic/` as JSON objects, in file order.
fn examples() -> Result<Vec<Value>, SoakError> {
    real_node::basic_examples().map_err(SoakError::Setup)
}

impl SoakEnv {
    /// Starts the cluster and installs Switchboard on it.
    pub async fn start() -> Result<Self, SoakError> {
        real_node::prerequisites().map_err(SoakError::Setup)?;
        // Pods are killed again and again: without a cap the kubelet's crash-loop back-off (up
        // to 5 min) would keep a run's fleet a node short for the rest of the run.
        let cluster =
            RealCluster::start_with(&[("SWITCHBOARD_KUBELET_MAX_RESTART_PERIOD", "1s")]).await?;
        let members = ETCD_MEMBERS.to_string();
        tokio::task::block_in_place(|| {
            cluster.deploy(&["--operator-replicas", "2", "--etcd-members", &members])
        })?;
        let etcd_url = cluster.fleet_etcd_url(NS)?;
        let secret = examples()?
            .into_iter()
            .find(|d| d["kind"] == "Secret")
            .and_then(|d| d["stringData"]["secret"].as_str().map(str::to_string))
            .ok_or_else(|| SoakError::Setup("examples/basic has no demo Secret".into()))?;
        let key = JwtSecret::from_file_contents(secret.as_bytes())
            .map_err(|e| SoakError::Setup(format!("demo secret: {e}")))?;
        let env = Self {
            cluster,
            etcd_url,
            key,
        };
        let pods: Api<Pod> = Api::namespaced(env.cluster.client.clone(), OPERATOR_NS);
        eventually("operator pods Ready", PATIENCE, || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            (list.items.iter().filter(|p| pod_ready(p)).count() >= 2).then_some(())
        })
        .await?;
        Ok(env)
    }

    /// kubectl against the cluster.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, SoakError> {
        Ok(tokio::task::block_in_place(|| {
            self.cluster.kubectl(args, None)
        })?)
    }

    /// kubectl with `stdin`.
    pub fn kubectl_in(&self, args: &[&str], stdin: &str) -> Result<String, SoakError> {
        Ok(tokio::task::block_in_place(|| {
            self.cluster.kubectl(args, Some(stdin))
        })?)
    }

    /// Injects `fault` into pod `namespace/pod`'s container (kill -9, SIGSTOP, SIGCONT, a cut
    /// of its network namespace or the heal of every network fault in it).
    pub async fn fault(&self, fault: Fault, namespace: &str, pod: &str) -> Result<(), SoakError> {
        self.on_running(namespace, pod, || self.cluster.fault(fault, namespace, pod))
            .await
    }

    /// Runs `act` on pod `namespace/pod`'s container, again while the container is between a
    /// kill and its restart: the Pod's status names the old container for a moment after the
    /// kubelet restarted it, and a fault aimed at the pod means the pod, whichever container
    /// runs. A pod deleted meanwhile is [`SoakError::PodGone`].
    async fn on_running<T>(
        &self,
        namespace: &str,
        pod: &str,
        act: impl Fn() -> Result<T, crate::cluster::ClusterError>,
    ) -> Result<T, SoakError> {
        let started = Instant::now();
        loop {
            match tokio::task::block_in_place(&act) {
                Err(e) if restarting(&e) && self.pod_gone(namespace, pod).await => {
                    return Err(SoakError::PodGone(format!("{namespace}/{pod}")));
                }
                Err(e) if restarting(&e) && started.elapsed() < CONTAINER_RESTART => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Whether pod `namespace/name` was deleted (or is being deleted) rather than restarting.
    async fn pod_gone(&self, namespace: &str, name: &str) -> bool {
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(None) => true,
            Ok(Some(pod)) => pod.metadata.deletion_timestamp.is_some(),
            Err(_) => false,
        }
    }

    /// The network namespace of pod `namespace/pod`, as a path for `nsenter --net=`.
    pub async fn pod_netns(&self, namespace: &str, pod: &str) -> Result<PathBuf, SoakError> {
        self.on_running(namespace, pod, || self.cluster.pod_netns(namespace, pod))
            .await
    }

    /// Injects the network fault `fault` into pod `namespace/pod`'s network namespace.
    pub async fn net_fault(
        &self,
        fault: &NetFault,
        namespace: &str,
        pod: &str,
    ) -> Result<(), SoakError> {
        self.on_running(namespace, pod, || {
            self.cluster.net_fault(fault, namespace, pod)
        })
        .await
    }

    /// The manifests of run cluster `name`: examples/basic renamed, a 50/50 rollout (so weight
    /// edits move shards).
    pub fn manifests(&self, name: &str) -> Result<Vec<Value>, SoakError> {
        let mut docs = examples()?;
        for doc in &mut docs {
            match doc["kind"].as_str() {
                Some("SignalingCluster") => {
                    doc["metadata"]["name"] = json!(name);
                    doc["spec"]["etcd"]["endpoints"] = json!(etcd_endpoints());
                    doc["spec"]["shards"] = json!(SHARDS);
                    doc["spec"]["terminationGracePeriodSeconds"] = json!(10);
                    doc["spec"]["drainTimeoutSeconds"] = json!(5);
                }
                Some("ProtocolRollout") => {
                    doc["metadata"]["name"] = json!(name);
                    doc["spec"]["clusterRef"] = json!(name);
                    doc["spec"]["versions"][0]["weight"] = json!(50);
                    doc["spec"]["versions"][1]["weight"] = json!(50);
                    doc["spec"]["strategy"]["pauseBetweenStepsSeconds"] = json!(2);
                }
                _ => {}
            }
        }
        Ok(docs)
    }

    /// Applies `docs` server-side.
    pub fn apply(&self, docs: &[Value]) -> Result<String, SoakError> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
        self.kubectl_in(
            &["apply", "--server-side", "--field-manager=soak", "-f", "-"],
            &list.to_string(),
        )
    }

    /// The run cluster `name`.
    pub async fn sigc(&self, name: &str) -> Option<SignalingCluster> {
        let api: Api<SignalingCluster> = Api::namespaced(self.cluster.client.clone(), NS);
        api.get_opt(name).await.ok().flatten()
    }

    /// Deploys run cluster `name` and waits until it is Ready with every shard assigned and
    /// every node pod Ready.
    pub async fn deploy(&self, name: &str) -> Result<Duration, SoakError> {
        let started = Instant::now();
        self.apply(&self.manifests(name)?)?;
        self.wait_ready(name).await?;
        Ok(started.elapsed())
    }

    /// Waits until `name` is Ready, all shards assigned, all node pods Ready.
    pub async fn wait_ready(&self, name: &str) -> Result<(), SoakError> {
        eventually(&format!("sigc/{name} Ready"), PATIENCE, || async {
            let sigc = self.sigc(name).await?;
            let status = sigc.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !ready || status.shards_assigned != sigc.spec.shards {
                return None;
            }
            let pods = self.node_pods(name).await;
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            (ready == usize::try_from(sigc.spec.replicas).ok()?).then_some(())
        })
        .await?;
        Ok(())
    }

    /// Node pods of `name` (not terminating), by name.
    pub async fn node_pods(&self, name: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), NS);
        let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
        let mut pods: Vec<Pod> = api.list(&lp).await.map(|l| l.items).unwrap_or_default();
        pods.retain(|p| p.metadata.deletion_timestamp.is_none());
        pods.sort_by_key(pod_name);
        pods
    }

    /// Deletes run cluster `name` and waits until its pods are gone.
    pub async fn teardown(&self, name: &str) -> Result<(), SoakError> {
        let _ = self.kubectl(&[
            "delete",
            "prollout,sigc",
            name,
            "--ignore-not-found",
            "--wait=false",
        ]);
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), NS);
        let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
        eventually(&format!("pods of {name} gone"), PATIENCE, || async {
            let pods = api.list(&lp).await.ok()?;
            pods.items.is_empty().then_some(())
        })
        .await?;
        Ok(())
    }

    /// A join token for `user` in `room`.
    pub fn token(&self, user: &str, room: &str) -> String {
        mint(
            &self.key,
            &Claims::new(
                user,
                RoomGrant::Rooms(vec![room.to_string()]),
                unix_now(),
                3600,
            ),
        )
    }

    /// The operator Lease holder.
    pub async fn leader(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.cluster.client.clone(), OPERATOR_NS);
        let lease = api.get_opt("switchboard-operator").await.ok()??;
        lease.spec?.holder_identity
    }

    /// Copies the cluster's component logs and every pod's log (and its previous container's,
    /// when it was restarted) into `to`.
    pub async fn keep_logs(&self, to: &Path) {
        let from = self.cluster.run_dir.join("logs");
        let dest = to.join("logs");
        let _ = std::fs::create_dir_all(&dest);
        if let Ok(entries) = std::fs::read_dir(&from) {
            for e in entries.flatten() {
                if let Some(name) = e.path().file_name() {
                    let _ = std::fs::copy(e.path(), dest.join(name));
                }
            }
        }
        let dest = to.join("pods");
        let _ = std::fs::create_dir_all(&dest);
        for ns in [NS, OPERATOR_NS] {
            let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), ns);
            let pods = api.list(&ListParams::default()).await.map(|l| l.items);
            for pod in pods.unwrap_or_default() {
                let name = pod_name(&pod);
                for (suffix, previous) in [("", false), (".previous", true)] {
                    let mut args = vec!["-n", ns, "logs", name.as_str(), "--all-containers"];
                    if previous {
                        args.push("--previous");
                    }
                    if let Ok(text) = self.kubectl(&args) {
                        let _ = std::fs::write(dest.join(format!("{ns}_{name}{suffix}.log")), text);
                    }
                }
            }
        }
    }
}

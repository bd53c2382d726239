//! The environment every scenario runs in, deployed the way `e2e/up` deploys it: a private
//! [`RealCluster`] (control plane and one real node: containerd, kubelet, kube-proxy, CoreDNS),
//! then `e2e/scripts/deploy` (restricted namespaces, the fleet etcd of `examples/etcd/`, the CRDs
//! from `crds/`, the operator rendered from the Helm chart into `switchboard-system`, running as
//! a container with the chart's ServiceAccount, so its RBAC is real), and `examples/basic/`
//! applied with kubectl. Helpers read what a user would read (sigc/rshard/pod status, the Lease,
//! etcd, `kubectl logs`) and every failure message carries the cluster's state and the
//! operator's log tail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use switchboard_e2e::cluster::eventually;
use switchboard_e2e::otel::Collector;
use switchboard_e2e::real_node::{self, RealCluster};
use switchboard_operator::crd::{RoomShard, SignalingCluster};
use switchboard_protocol::auth::{Claims, JwtSecret, RoomGrant, mint, unix_now};

/// Namespace of the operator (as in `e2e/up`).
pub const OPERATOR_NS: &str = "switchboard-system";
/// Namespace of the sample fleet.
pub const NS: &str = "default";
/// The sample cluster's name (examples/basic).
pub const CLUSTER: &str = "demo";
/// Shards of the sample cluster.
pub const SHARDS: u32 = 16;
/// Label naming a pod's SignalingCluster.
pub const CLUSTER_LABEL: &str = "switchboard.dev/cluster";

/// Wall-clock bound for anything that should happen promptly (a correctness bound for a loaded
/// two-core machine, not a performance assertion).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Prints how long a scenario took when it ends (`SCENARIO <name> passed|FAILED in N ms`);
/// e2e/scripts/run-scenarios collects these lines.
pub struct ScenarioTimer {
    name: &'static str,
    started: Instant,
}

impl ScenarioTimer {
    /// Starts timing `name`.
    pub fn start(name: &'static str) -> Self {
        // The client library's reconnect/redirect/migrate decisions, for failure analysis.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("SCENARIO_LOG").unwrap_or_else(|_| "switchboard_client=info".into()),
            ))
            .with_test_writer()
            .try_init();
        eprintln!("SCENARIO {name} started");
        Self {
            name,
            started: Instant::now(),
        }
    }
}

impl Drop for ScenarioTimer {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            "FAILED"
        } else {
            "passed"
        };
        eprintln!(
            "SCENARIO {} {outcome} in {} ms",
            self.name,
            self.started.elapsed().as_millis()
        );
    }
}

/// Prints a measured number in one greppable form.
pub fn measured(what: &str, value: Duration) {
    eprintln!("MEASURED {what}: {} ms", value.as_millis());
}

/// `Some(reason)` when the scenarios cannot run here (missing tools or images); the test
/// command builds them, so this only happens on a bare `cargo test`.
pub fn skip_reason() -> Option<String> {
    real_node::prerequisites().err()
}

/// How to set the environment up.
#[derive(Debug, Clone, Copy)]
pub struct EnvOptions {
    /// Install the operator (Helm chart) at all.
    pub operator: bool,
    /// Operator replicas (`operator.replicas`; leader election stays on).
    pub operator_replicas: u32,
    /// Install the Ingress controller (Traefik, `deploy --ingress`).
    pub ingress: bool,
    /// The chart's `clusterWide: false`: Roles in the fleet namespace and
    /// `--watch-namespace` instead of a ClusterRole.
    pub namespaced: bool,
    /// Run an OpenTelemetry Collector on this machine and install with the chart's
    /// `tracing.otlpEndpoint` pointing at it.
    pub tracing: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            operator: true,
            operator_replicas: 1,
            ingress: false,
            namespaced: false,
            tracing: false,
        }
    }
}

/// One scenario's cluster with Switchboard installed. Dropping it stops everything.
pub struct Env {
    etcd_url: String,
    /// The cluster (kubectl, failure injection, logs).
    pub cluster: RealCluster,
    /// Admin client.
    pub client: kube::Client,
    /// The OTLP receiver, with [`EnvOptions::tracing`].
    pub collector: Option<Collector>,
}

/// `examples/basic/` as JSON objects, in file order (secret, rollout, cluster).
pub fn examples() -> Vec<Value> {
    real_node::basic_examples().unwrap_or_else(|e| panic!("{e}"))
}

fn condition(cluster: &SignalingCluster, type_: &str) -> Option<(String, String, String)> {
    cluster
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Whether a condition of the cluster is True.
pub fn condition_true(cluster: &SignalingCluster, type_: &str) -> bool {
    condition(cluster, type_).is_some_and(|(status, _, _)| status == "True")
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's IP.
pub fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

/// The signaling URL of a node pod.
pub fn node_url(pod: &Pod) -> String {
    format!("ws://{}:7000/ws", pod_ip(pod).unwrap_or_default())
}

impl Env {
    /// Starts the cluster and installs the fleet etcd, the CRDs and (unless disabled) the
    /// operator (`e2e/scripts/deploy`); waits until the operator is available.
    pub async fn start(options: EnvOptions) -> Self {
        let cluster = match RealCluster::start().await {
            Ok(cluster) => cluster,
            Err(e) => panic!("the real-node cluster did not start: {e}"),
        };
        eprintln!(
            "cluster up in {} ms (node {}, pods {}, services {})",
            cluster.startup.as_millis(),
            cluster.addresses.node_ip,
            cluster.addresses.pod_cidr,
            cluster.addresses.service_cidr
        );
        let replicas = options.operator_replicas.to_string();
        let mut args = vec!["--operator-replicas", replicas.as_str()];
        if !options.operator {
            args.push("--no-operator");
        }
        if options.ingress {
            args.push("--ingress");
        }
        if options.namespaced {
            args.push("--namespaced");
        }
        // The collector listens on this machine's end of the node's link, which pods reach.
        let collector = options.tracing.then(|| {
            let port = switchboard_testkit::free_port();
            Collector::start(&cluster.addresses.host_ip, port, &cluster.run_dir)
                .unwrap_or_else(|e| panic!("{e}"))
        });
        if let Some(collector) = &collector {
            args.push("--otlp-endpoint");
            args.push(collector.endpoint.as_str());
        }
        if let Err(e) = cluster.deploy(&args) {
            panic!("{e}");
        }
        let etcd_url = cluster
            .fleet_etcd_url(NS)
            .unwrap_or_else(|e| panic!("the fleet etcd Service: {e}"));
        let client = cluster.client.clone();
        Self {
            etcd_url,
            cluster,
            client,
            collector,
        }
    }

    /// The fleet etcd's client URL (what `spec.etcd.endpoints` names).
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// kubectl against the cluster; panics with the error output and the diagnostics.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        match self.cluster.kubectl(args, stdin) {
            Ok(out) => out,
            Err(e) => self.fail(format!("kubectl {}: {e}", args.join(" "))),
        }
    }

    /// A merge patch of this scenario's `kind` (`sigc`, `prollout`) named [`CLUSTER`] in [`NS`],
    /// the way `kubectl edit` sends one: a server-side apply of a fragment would drop the other
    /// fields its manager applied.
    pub fn merge_patch(&self, kind: &str, patch: &str) -> String {
        self.kubectl(&Self::merge_patch_args(kind, patch), None)
    }

    /// [`Env::merge_patch`] that is expected to be refused: its error output.
    pub fn merge_patch_err(&self, kind: &str, patch: &str) -> String {
        self.kubectl_err(&Self::merge_patch_args(kind, patch), None)
    }

    fn merge_patch_args<'a>(kind: &'a str, patch: &'a str) -> [&'a str; 8] {
        [
            "-n",
            NS,
            "patch",
            kind,
            CLUSTER,
            "--type=merge",
            "-p",
            patch,
        ]
    }

    /// kubectl that is expected to fail: its error output.
    pub fn kubectl_err(&self, args: &[&str], stdin: Option<&str>) -> String {
        match self.cluster.kubectl(args, stdin) {
            Ok(out) => self.fail(format!(
                "kubectl {} succeeded but should have been refused:\n{out}",
                args.join(" ")
            )),
            Err(e) => e.to_string(),
        }
    }

    /// Applies `docs` with `kubectl apply --server-side` (stdin, as a List).
    pub fn apply(&self, docs: &[Value]) -> String {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
        self.kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=scenarios",
                "-f",
                "-",
            ],
            Some(&list.to_string()),
        )
    }

    /// `examples/basic/` as it is (its etcd endpoint `http://etcd:2379` resolves through the
    /// cluster DNS); without the ProtocolRollout unless `rollout` (a single-version fleet), with
    /// `tweak` applied to the SignalingCluster.
    pub fn demo_manifests(&self, rollout: bool, tweak: impl FnOnce(&mut Value)) -> Vec<Value> {
        let mut docs: Vec<Value> = examples()
            .into_iter()
            .filter(|d| rollout || d["kind"] != "ProtocolRollout")
            .collect();
        let sigc = docs
            .iter_mut()
            .find(|d| d["kind"] == "SignalingCluster")
            .expect("examples/basic has a SignalingCluster");
        tweak(sigc);
        docs
    }

    /// Applies the sample fleet (see [`Env::demo_manifests`]) and waits until `sigc/demo` is
    /// Ready; returns how long that took.
    pub async fn deploy_demo(&self, rollout: bool, tweak: impl FnOnce(&mut Value)) -> Duration {
        let started = Instant::now();
        self.apply(&self.demo_manifests(rollout, tweak));
        self.wait_ready().await;
        started.elapsed()
    }

    /// The sample cluster.
    pub async fn sigc(&self) -> Option<SignalingCluster> {
        let api: Api<SignalingCluster> = Api::namespaced(self.client.clone(), NS);
        api.get_opt(CLUSTER).await.ok().flatten()
    }

    /// Waits until `sigc/demo` is Ready, all its shards Assigned and as many node pods Ready
    /// as it wants, both in the Pods and in the cluster's status (what `kubectl get sigc` shows;
    /// Ready itself needs only one ready node).
    pub async fn wait_ready(&self) -> SignalingCluster {
        let waited = eventually("sigc/demo Ready", PATIENCE, || async {
            let sigc = self.sigc().await?;
            if !condition_true(&sigc, "Ready") {
                return None;
            }
            let status = sigc.status.as_ref()?;
            if status.shards_assigned != sigc.spec.shards
                || status.ready_replicas != sigc.spec.replicas
            {
                return None;
            }
            let pods = self.node_pods().await;
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            (ready == usize::try_from(sigc.spec.replicas).ok()?).then_some(sigc)
        })
        .await;
        match waited {
            Ok(sigc) => sigc,
            Err(e) => self.fail(e),
        }
    }

    /// The sample cluster's node pods (not terminating), by name.
    pub async fn node_pods(&self) -> Vec<Pod> {
        let mut pods = self.all_node_pods().await;
        pods.retain(|p| p.metadata.deletion_timestamp.is_none());
        pods
    }

    /// The sample cluster's node pods including terminating ones, by name.
    pub async fn all_node_pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}={CLUSTER}"));
        let mut pods: Vec<Pod> = api.list(&lp).await.map(|l| l.items).unwrap_or_default();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pods
    }

    /// A node pod by name.
    pub async fn pod(&self, name: &str) -> Option<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        api.get_opt(name).await.ok().flatten()
    }

    /// Every RoomShard of the sample cluster, by index.
    pub async fn shards(&self) -> BTreeMap<u32, RoomShard> {
        let api: Api<RoomShard> = Api::namespaced(self.client.clone(), NS);
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.spec.cluster == CLUSTER)
            .filter_map(|s| Some((u32::try_from(s.spec.index).ok()?, s)))
            .collect()
    }

    /// The RoomShard of `room`.
    pub async fn shard_of_room(&self, room: &str) -> Option<RoomShard> {
        let index = switchboard_contract::shard::shard_of(room, SHARDS);
        self.shards().await.remove(&index)
    }

    /// The node pod owning `room` (per its RoomShard), once it is Assigned to a Ready pod.
    pub async fn owner_of(&self, room: &str) -> Pod {
        let waited = eventually(&format!("an owner of room {room}"), PATIENCE, || async {
            let shard = self.shard_of_room(room).await?;
            let node = shard.status.as_ref()?.node.clone()?;
            let pod = self.pod(&node).await?;
            pod_ready(&pod).then_some(pod)
        })
        .await;
        match waited {
            Ok(pod) => pod,
            Err(e) => self.fail(e),
        }
    }

    /// Shards per owning node.
    pub async fn shards_per_node(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for shard in self.shards().await.values() {
            if let Some(node) = shard.status.as_ref().and_then(|s| s.node.clone()) {
                *counts.entry(node).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The join-token key of the demo Secret (`demo-auth`, key `secret`).
    pub async fn auth_key(&self) -> Vec<u8> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        let secret = api.get("demo-auth").await.expect("Secret demo-auth");
        secret
            .data
            .as_ref()
            .and_then(|d| d.get("secret"))
            .map(|b| b.0.clone())
            .expect("Secret demo-auth has key `secret`")
    }

    /// A join token for `user` and `room`, signed with the demo Secret read from the cluster
    /// (what `signaling-node token --jwt-secret-file` does with `kubectl get secret`).
    pub async fn token(&self, user: &str, room: &str) -> String {
        let bytes = self.auth_key().await;
        let key = JwtSecret::from_file_contents(&bytes).expect("a usable JWT secret");
        mint(
            &key,
            &Claims::new(
                user,
                RoomGrant::Rooms(vec![room.to_string()]),
                unix_now(),
                3600,
            ),
        )
    }

    /// The holder of the operator's leader Lease.
    pub async fn leader(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), OPERATOR_NS);
        let lease = api.get_opt("switchboard-operator").await.ok()??;
        lease.spec?.holder_identity
    }

    /// The operator pods (not terminating).
    pub async fn operator_pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), OPERATOR_NS);
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Keys (and values) under the sample cluster's etcd prefix.
    pub async fn etcd_keys(&self) -> Vec<(String, String)> {
        let prefix = format!("/switchboard/{NS}/{CLUSTER}/");
        let mut client = etcd_client::Client::connect([self.etcd_url()], None)
            .await
            .expect("connecting to the fleet etcd");
        let resp = client
            .get(
                prefix.as_bytes(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("reading the fleet etcd");
        resp.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    }

    /// The last lines of every operator pod's log (`kubectl logs`).
    pub fn operator_log_tail(&self, lines: usize) -> String {
        let names = self
            .cluster
            .kubectl(
                &[
                    "-n",
                    OPERATOR_NS,
                    "get",
                    "pods",
                    "-o",
                    "jsonpath={.items[*].metadata.name}",
                ],
                None,
            )
            .unwrap_or_default();
        let mut out = String::new();
        for pod in names.split_whitespace() {
            out.push_str(&format!("--- kubectl -n {OPERATOR_NS} logs {pod}\n"));
            out.push_str(&self.cluster.logs(OPERATOR_NS, pod, lines));
        }
        out
    }

    /// What the cluster shows (sigc conditions, shards, pods) and the operator's log tail.
    pub fn diagnostics(&self) -> String {
        let get = |args: &[&str]| {
            self.cluster
                .kubectl(args, None)
                .unwrap_or_else(|e| format!("({e})\n"))
        };
        format!(
            "{}{}{}\n{}",
            get(&["get", "sigc,prollout,rshard,pods", "-A", "-o", "wide"]),
            get(&[
                "get",
                "sigc",
                "-A",
                "-o",
                "jsonpath={range .items[*].status.conditions[*]}{.type}={.status} {.reason}: {.message}{\"\\n\"}{end}",
            ]),
            get(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n"),
            self.operator_log_tail(25)
        )
    }

    /// Panics with `what`, the cluster's state and the operator's log tail.
    pub fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "{what}\n\n===== cluster state =====\n{}",
            self.diagnostics()
        )
    }

    /// Unwraps a wait, failing with the diagnostics.
    pub fn check<T, E: std::fmt::Display>(&self, result: Result<T, E>) -> T {
        match result {
            Ok(v) => v,
            Err(e) => self.fail(e),
        }
    }
}

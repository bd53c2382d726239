//! The environment every scenario runs in, deployed the way `e2e/up` deploys it: a private
//! [`LocalCluster`] (3 runner nodes), the fleet's own etcd (`e2e/scripts/fleet-etcd`), the CRDs
//! from `crds/`, the operator rendered from the Helm chart into `switchboard-system` (run by the
//! pod runner with the chart's ServiceAccount, so its RBAC is real), and `examples/basic/` applied
//! with kubectl. Helpers read what a user would read (sigc/rshard/pod status, the Lease, etcd)
//! and every failure message carries the cluster's state and the operator's log tail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use switchboard_e2e::cluster::{ClusterOptions, LocalCluster, eventually, repo_root, tools_bin};
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

/// The binaries the pods run, next to this test's pod-runner in the cargo target dir.
struct Bins {
    pod_runner: PathBuf,
    signaling_node: PathBuf,
    operator: PathBuf,
}

fn bins() -> Bins {
    let pod_runner = PathBuf::from(env!("CARGO_BIN_EXE_pod-runner"));
    let dir = pod_runner
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let bins = Bins {
        signaling_node: dir.join("signaling-node"),
        operator: dir.join("switchboard-operator"),
        pod_runner,
    };
    for bin in [&bins.signaling_node, &bins.operator] {
        assert!(
            bin.is_file(),
            "{} not found: build it first (e2e/scripts/run-scenarios does: cargo build --bin \
             signaling-node --bin switchboard-operator)",
            bin.display()
        );
    }
    bins
}

/// `Some(reason)` when the scenarios cannot run here (missing Kubernetes tools); the test
/// command builds them, so this only happens on a bare `cargo test`.
pub fn skip_reason() -> Option<String> {
    LocalCluster::tools_present().err()
}

/// The fleet's etcd, started by `e2e/scripts/fleet-etcd` in the cluster's run directory on a
/// free port; stopped on drop.
struct FleetEtcd {
    env: Vec<(String, String)>,
    url: String,
}

impl FleetEtcd {
    fn start(cluster: &LocalCluster) -> Self {
        let ports: Vec<u16> = (0..2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect::<Vec<_>>()
            .iter()
            .map(|l| l.local_addr().expect("local address").port())
            .collect();
        let mut env = cluster.env().to_vec();
        env.push(("SWITCHBOARD_FLEET_ETCD_PORT".into(), ports[0].to_string()));
        env.push((
            "SWITCHBOARD_FLEET_ETCD_PEER_PORT".into(),
            ports[1].to_string(),
        ));
        let etcd = Self {
            url: format!("http://127.0.0.1:{}", ports[0]),
            env,
        };
        let out = etcd.script("start");
        assert!(
            out.status.success(),
            "e2e/scripts/fleet-etcd start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        etcd
    }

    fn script(&self, command: &str) -> std::process::Output {
        Command::new(repo_root().join("e2e/scripts/fleet-etcd"))
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("running e2e/scripts/fleet-etcd")
    }
}

impl Drop for FleetEtcd {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// How to set the environment up.
#[derive(Debug, Clone, Copy)]
pub struct EnvOptions {
    /// Install the operator (Helm chart) at all.
    pub operator: bool,
    /// Operator replicas (`operator.replicas`; leader election stays on).
    pub operator_replicas: u32,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            operator: true,
            operator_replicas: 1,
        }
    }
}

/// One scenario's cluster with Switchboard installed. Dropping it stops everything (the
/// fleet etcd first: it lives in the cluster's run directory).
pub struct Env {
    etcd: FleetEtcd,
    /// The local cluster (kubectl, failure injection, logs).
    pub cluster: LocalCluster,
    /// Admin client.
    pub client: kube::Client,
}

/// `examples/basic/` as JSON objects, in file order (secret, rollout, cluster).
pub fn examples() -> Vec<Value> {
    let dir = repo_root().join("examples/basic");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("reading an example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    docs
}

/// The Kubernetes version the project pins (e2e/tools/go.mod), for `helm template`.
fn kube_version() -> Option<String> {
    let gomod = std::fs::read_to_string(repo_root().join("e2e/tools/go.mod")).ok()?;
    gomod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == "k8s.io/kubernetes")?;
        words
            .next()
            .filter(|v| v.starts_with('v'))
            .map(str::to_string)
    })
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
    /// operator; waits until the operator pods are Ready.
    pub async fn start(options: EnvOptions) -> Self {
        let bins = bins();
        let opts = ClusterOptions::new(&bins.pod_runner)
            .nodes(3)
            .image("signaling-node", &bins.signaling_node)
            .image("operator", &bins.operator);
        let cluster = LocalCluster::start(opts)
            .await
            .expect("the local cluster starts");
        let etcd = FleetEtcd::start(&cluster);
        let client = cluster.client.clone();
        let env = Self {
            etcd,
            cluster,
            client,
        };
        env.kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=scenarios",
                "-f",
                &repo_root().join("crds").display().to_string(),
            ],
            None,
        );
        env.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "-f",
                &repo_root().join("crds").display().to_string(),
            ],
            None,
        );
        if options.operator {
            env.install_operator(options.operator_replicas).await;
        }
        env
    }

    /// The fleet etcd's client URL (what `spec.etcd.endpoints` names).
    pub fn etcd_url(&self) -> &str {
        &self.etcd.url
    }

    /// kubectl against the cluster; panics with the error output and the diagnostics.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        match self.cluster.kubectl(args, stdin) {
            Ok(out) => out,
            Err(e) => self.fail(format!("kubectl {}: {e}", args.join(" "))),
        }
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

    /// Renders the Helm chart and applies it, as `e2e/up` does; waits for Ready operator pods.
    async fn install_operator(&self, replicas: u32) {
        let helm = tools_bin().join("helm");
        let chart = repo_root().join("charts/switchboard");
        let mut cmd = Command::new(&helm);
        cmd.args(["template", "switchboard"])
            .arg(&chart)
            .args(["--namespace", OPERATOR_NS])
            .args(["--set", "operator.logFormat=text"])
            .args(["--set", &format!("operator.replicas={replicas}")]);
        if let Some(version) = kube_version() {
            cmd.args(["--kube-version", &version]);
        }
        let out = cmd.output().expect("running helm");
        assert!(
            out.status.success(),
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = String::from_utf8_lossy(&out.stdout).into_owned();
        self.kubectl(&["create", "namespace", OPERATOR_NS], None);
        self.kubectl(
            &[
                "apply",
                "--server-side",
                "--field-manager=scenarios",
                "-f",
                "-",
            ],
            Some(&manifest),
        );
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), OPERATOR_NS);
        let want = replicas as usize;
        let waited = eventually("operator pods Ready", PATIENCE, || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            (list.items.iter().filter(|p| pod_ready(p)).count() >= want).then_some(())
        })
        .await;
        if let Err(e) = waited {
            self.fail(e);
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

    /// `examples/basic/` with `spec.etcd.endpoints` pointed at the fleet etcd; without the
    /// ProtocolRollout unless `rollout` (a single-version fleet), with `tweak` applied to the
    /// SignalingCluster.
    pub fn demo_manifests(&self, rollout: bool, tweak: impl FnOnce(&mut Value)) -> Vec<Value> {
        let mut docs: Vec<Value> = examples()
            .into_iter()
            .filter(|d| rollout || d["kind"] != "ProtocolRollout")
            .collect();
        let sigc = docs
            .iter_mut()
            .find(|d| d["kind"] == "SignalingCluster")
            .expect("examples/basic has a SignalingCluster");
        sigc["spec"]["etcd"]["endpoints"] = json!([self.etcd_url()]);
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

    /// A join token for `user` and `room`, signed with the demo Secret read from the cluster
    /// (what `signaling-node token --jwt-secret-file` does with `kubectl get secret`).
    pub async fn token(&self, user: &str, room: &str) -> String {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), NS);
        let secret = api.get("demo-auth").await.expect("Secret demo-auth");
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get("secret"))
            .map(|b| b.0.clone())
            .expect("Secret demo-auth has key `secret`");
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

    /// The last lines of every operator pod's log.
    pub fn operator_log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        let dir = self.cluster.run_dir.join("pods");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return format!("(no pod logs in {})", dir.display());
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(OPERATOR_NS) && n.ends_with(".log"))
            })
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", log.display()));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
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
            // Without the endpoint controllers' complaints about loopback pod IPs.
            get(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
                .lines()
                .filter(|l| !l.contains("FailedToUpdateEndpoint"))
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

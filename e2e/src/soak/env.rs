//! The environment every soak run uses, deployed the way `e2e/up` deploys it: one private
//! [`LocalCluster`] (3 runner nodes, its own control plane), the fleet etcd with the
//! fault-injecting proxy in front, the CRDs, and the operator from the Helm chart (2 replicas,
//! leader election on). Each run then gets a fresh SignalingCluster (and ProtocolRollout) under
//! its own name, so its etcd prefix, pods, shards and rooms are new; the control plane,
//! operator and etcd process are shared across runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use switchboard_operator::crd::SignalingCluster;
use switchboard_protocol::auth::{Claims, JwtSecret, RoomGrant, mint, unix_now};

use super::error::SoakError;
use super::etcd::{EtcdProxy, FleetEtcd};
use crate::cluster::{ClusterOptions, LocalCluster, eventually, repo_root, tools_bin};

/// Namespace of the operator (as in `e2e/up`).
pub const OPERATOR_NS: &str = "switchboard-system";
/// Namespace of the fleets.
pub const NS: &str = "default";
/// Shards per run cluster.
pub const SHARDS: u32 = 16;
/// Label naming a pod's SignalingCluster.
pub const CLUSTER_LABEL: &str = "switchboard.dev/cluster";
/// Bound for anything that should happen promptly on a loaded two-core machine.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// The binaries the pods run and the runner.
#[derive(Debug, Clone)]
pub struct Bins {
    /// pod-runner.
    pub pod_runner: PathBuf,
    /// signaling-node.
    pub signaling_node: PathBuf,
    /// switchboard-operator.
    pub operator: PathBuf,
}

impl Bins {
    /// Next to `dir` (the soak binary's directory).
    pub fn in_dir(dir: &Path) -> Result<Self, SoakError> {
        let bins = Self {
            pod_runner: dir.join("pod-runner"),
            signaling_node: dir.join("signaling-node"),
            operator: dir.join("switchboard-operator"),
        };
        for bin in [&bins.pod_runner, &bins.signaling_node, &bins.operator] {
            if !bin.is_file() {
                return Err(SoakError::Setup(format!(
                    "{} not found: build it first (e2e/soak does)",
                    bin.display()
                )));
            }
        }
        Ok(bins)
    }
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
    /// The fault-injecting proxy in front of etcd.
    pub proxy: EtcdProxy,
    /// The fleet etcd (restartable).
    pub etcd: FleetEtcd,
    /// The local cluster.
    pub cluster: LocalCluster,
    key: JwtSecret,
}

/// `examples/basic/` as JSON objects, in file order.
fn examples() -> Result<Vec<Value>, SoakError> {
    let dir = repo_root().join("examples/basic");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(SoakError::io(dir.display().to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(SoakError::io(file.display().to_string()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| SoakError::Setup(format!("{}: {e}", file.display())))?;
            if !value.is_null() {
                docs.push(value);
            }
        }
    }
    Ok(docs)
}

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

impl SoakEnv {
    /// Starts everything shared by the runs; `dir` keeps the etcd data and log.
    pub async fn start(bins: &Bins, dir: &Path) -> Result<Self, SoakError> {
        let etcd_bin = std::env::var_os("SWITCHBOARD_ETCD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| tools_bin().join("etcd"));
        let opts = ClusterOptions::new(&bins.pod_runner)
            .nodes(3)
            .image("signaling-node", &bins.signaling_node)
            .image("operator", &bins.operator);
        let cluster = LocalCluster::start(opts).await?;
        let etcd = FleetEtcd::start(etcd_bin, dir.to_path_buf()).await?;
        let proxy = EtcdProxy::start(etcd.addr()).await?;
        let secret = examples()?
            .into_iter()
            .find(|d| d["kind"] == "Secret")
            .and_then(|d| d["stringData"]["secret"].as_str().map(str::to_string))
            .ok_or_else(|| SoakError::Setup("examples/basic has no demo Secret".into()))?;
        let key = JwtSecret::from_file_contents(secret.as_bytes())
            .map_err(|e| SoakError::Setup(format!("demo secret: {e}")))?;
        let env = Self {
            proxy,
            etcd,
            cluster,
            key,
        };
        let crds = repo_root().join("crds").display().to_string();
        env.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=soak",
            "-f",
            &crds,
        ])?;
        env.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            &crds,
        ])?;
        env.install_operator(2).await?;
        Ok(env)
    }

    /// kubectl against the cluster.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, SoakError> {
        Ok(self.cluster.kubectl(args, None)?)
    }

    /// kubectl with `stdin`.
    pub fn kubectl_in(&self, args: &[&str], stdin: &str) -> Result<String, SoakError> {
        Ok(self.cluster.kubectl(args, Some(stdin))?)
    }

    async fn install_operator(&self, replicas: u32) -> Result<(), SoakError> {
        let chart = repo_root().join("charts/switchboard");
        let mut cmd = Command::new(tools_bin().join("helm"));
        cmd.args(["template", "switchboard"])
            .arg(&chart)
            .args(["--namespace", OPERATOR_NS])
            .args(["--set", "operator.logFormat=text"])
            .args(["--set", &format!("operator.replicas={replicas}")]);
        if let Some(version) = kube_version() {
            cmd.args(["--kube-version", &version]);
        }
        let out = cmd.output().map_err(SoakError::io("running helm"))?;
        if !out.status.success() {
            return Err(SoakError::Setup(format!(
                "helm template: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let manifest = String::from_utf8_lossy(&out.stdout).into_owned();
        self.kubectl(&["create", "namespace", OPERATOR_NS])?;
        self.kubectl_in(
            &["apply", "--server-side", "--field-manager=soak", "-f", "-"],
            &manifest,
        )?;
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), OPERATOR_NS);
        let want = replicas as usize;
        eventually("operator pods Ready", PATIENCE, || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            (list.items.iter().filter(|p| pod_ready(p)).count() >= want).then_some(())
        })
        .await?;
        Ok(())
    }

    /// The manifests of run cluster `name`: examples/basic renamed, etcd through the proxy,
    /// a 50/50 rollout (so weight edits move shards).
    pub fn manifests(&self, name: &str) -> Result<Vec<Value>, SoakError> {
        let mut docs = examples()?;
        for doc in &mut docs {
            match doc["kind"].as_str() {
                Some("SignalingCluster") => {
                    doc["metadata"]["name"] = json!(name);
                    doc["spec"]["etcd"]["endpoints"] = json!([self.proxy.endpoint()]);
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

    /// Copies the cluster's logs (components and pods) and the etcd log into `to`.
    pub fn keep_logs(&self, to: &Path) {
        for sub in ["logs", "pods"] {
            let from = self.cluster.run_dir.join(sub);
            let dest = to.join(sub);
            let _ = std::fs::create_dir_all(&dest);
            if let Ok(entries) = std::fs::read_dir(&from) {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "log")
                        && let Some(name) = p.file_name()
                    {
                        let _ = std::fs::copy(&p, dest.join(name));
                    }
                }
            }
        }
    }
}

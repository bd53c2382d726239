//! Test harness for the operator's integration tests: a real etcd and, for the Kubernetes
//! parts, a real kube-apiserver (token auth, AlwaysAllow, loopback only) on free ports with
//! temporary directories; simulated signaling nodes that register under leases and answer
//! handoffs the way docs/architecture.md says nodes do.
//!
//! Binaries: `$SWITCHBOARD_ETCD_BIN`, else `etcd` on `PATH`, else
//! `<repo>/e2e/.tools/bin/etcd`; kube-apiserver from `$SWITCHBOARD_KUBE_APISERVER_BIN`, else
//! next to the etcd binary, else `<repo>/e2e/.tools/bin/kube-apiserver`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use futures::StreamExt;
use switchboard_contract::keys::{
    Ack, Assignment, Key, Keyspace, Load, NodeInfo, NodeState, Value,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a test waits for something that should happen promptly (a correctness bound,
/// generous for a loaded machine, not a performance assertion).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A fresh private temp directory for `what` (removed by its owner).
pub fn temp_dir(what: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchboard-op-{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A free loopback port (the listener is closed before the port is used).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running etcd server owned by one test.
pub struct Etcd {
    dir: PathBuf,
    client_port: u16,
    child: Child,
}

impl Etcd {
    /// Starts etcd without fsync on free ports.
    pub async fn start() -> Self {
        let bin = etcd_bin();
        let dir = temp_dir("etcd");
        let (client_port, peer_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new(bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let etcd = Self {
            dir,
            client_port,
            child,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                Client::connect([etcd.endpoint()], None),
            )
            .await
                && c.status().await.is_ok()
            {
                return etcd;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not start: {}",
                etcd.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None)
            .await
            .expect("connect etcd")
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tools_dir() -> PathBuf {
    // Run-time manifest dir first: a cached test binary may come from another checkout.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../e2e/.tools/bin")
}

fn etcd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SWITCHBOARD_ETCD_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("etcd").is_file() {
                return dir.join("etcd");
            }
        }
    }
    let built = tools_dir().join("etcd");
    assert!(
        built.is_file(),
        "no etcd binary: set SWITCHBOARD_ETCD_BIN or run e2e/scripts/build-tools"
    );
    built
}

fn apiserver_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SWITCHBOARD_KUBE_APISERVER_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(dir) = etcd_bin().parent() {
        let beside = dir.join("kube-apiserver");
        if beside.is_file() {
            return beside;
        }
    }
    let built = tools_dir().join("kube-apiserver");
    assert!(
        built.is_file(),
        "no kube-apiserver binary: set SWITCHBOARD_KUBE_APISERVER_BIN or run e2e/scripts/build-tools"
    );
    built
}

/// A kube-apiserver on loopback backed by an [`Etcd`], with one admin token and
/// `AlwaysAllow` authorization.
pub struct ApiServer {
    dir: PathBuf,
    port: u16,
    child: Child,
}

const TOKEN: &str = "switchboard-test-admin";

impl ApiServer {
    /// Starts the apiserver and waits until `/readyz` answers ok.
    pub async fn start(etcd: &Etcd) -> Self {
        let bin = apiserver_bin();
        let dir = temp_dir("apiserver");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl");
            assert!(out.status.success(), "openssl {args:?} failed");
        };
        openssl(&["genrsa", "-out", "sa.key", "2048"]);
        openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{TOKEN},admin,admin,\"system:masters\"\n"),
        )
        .expect("token file");
        let port = free_port();
        let log = std::fs::File::create(dir.join("apiserver.log")).expect("log");
        let child = Command::new(bin)
            .arg(format!("--etcd-servers={}", etcd.endpoint()))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .arg(format!(
                "--token-auth-file={}",
                dir.join("tokens.csv").display()
            ))
            .arg("--authorization-mode=AlwaysAllow")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--endpoint-reconciler-type=none")
            // No controller-manager creates default ServiceAccounts in test namespaces.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--profiling=false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start kube-apiserver");
        let mut server = Self { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("kube-apiserver exited with {status}: {}", server.log());
            }
            let client = server.client().await;
            let ready = tokio::time::timeout(Duration::from_secs(2), async {
                client.apiserver_version().await?;
                kube::api::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                    .get("default")
                    .await
            })
            .await;
            if matches!(ready, Ok(Ok(_))) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "apiserver not ready: {}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A kubeconfig (YAML) for the admin, context `test`.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n",
            self.port
        )
    }

    /// A client authenticated as the admin.
    pub async fn client(&self) -> kube::Client {
        let yaml = self.kubeconfig_yaml();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("config");
        kube::Client::try_from(config).expect("client")
    }

    /// The apiserver log.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        log[start..].to_string()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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

/// Polls `check` every 20 ms until it returns `Some`, or panics after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
            pod_template: None,
            termination_grace_period_seconds: 60,
            drain_timeout_seconds: 30,
        },
    );
    cluster.metadata.namespace = Some(namespace.into());
    cluster
}

//! Test harness for operator integration tests: a real etcd and a real kube-apiserver as
//! processes on free loopback ports (no controller-manager, scheduler or kubelet: pods are
//! created but never run), the CRDs applied, and operator processes started from the built
//! binary. Everything is killed on drop; the run directory (logs) is removed unless the test
//! panicked or `SWITCHBOARD_KEEP_TEST_DIRS` is set, in which case its path is printed.
//!
//! Binaries: `$SWITCHBOARD_TOOLS_DIR/bin` (default `<repo>/e2e/.tools/bin`, built by
//! `e2e/scripts/build-tools`); etcd may also come from `$SWITCHBOARD_ETCD_BIN`. The apiserver
//! serves a self-signed certificate (`--cert-dir`) and authenticates a static admin token
//! (`--token-auth-file`, group `system:masters`, `AlwaysAllow`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::time::Instant;

/// How long a test waits for something that should happen promptly (a correctness bound,
/// generous for a loaded two-core machine, not a performance assertion).
pub const PATIENCE: Duration = Duration::from_secs(60);

const TOKEN: &str = "switchboard-test-admin-token";

/// The repository root, from the manifest directory cargo passes at run time (a cached test
/// binary may have been built in another checkout).
fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn tools_bin() -> PathBuf {
    std::env::var_os("SWITCHBOARD_TOOLS_DIR")
        .map_or_else(|| repo_root().join("e2e/.tools"), PathBuf::from)
        .join("bin")
}

fn tool(name: &str) -> PathBuf {
    if name == "etcd"
        && let Some(bin) = std::env::var_os("SWITCHBOARD_ETCD_BIN")
    {
        return PathBuf::from(bin);
    }
    let path = tools_bin().join(name);
    assert!(
        path.exists(),
        "{} not found: run e2e/scripts/build-tools or set SWITCHBOARD_TOOLS_DIR",
        path.display()
    );
    path
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("create log file");
    let err = out.try_clone().expect("clone log file");
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
}

/// etcd + kube-apiserver for one test.
pub struct ControlPlane {
    /// Run directory (logs, certificates, data).
    pub dir: PathBuf,
    /// etcd client URL (also usable as a SignalingCluster's etcd).
    pub etcd_url: String,
    /// Admin kubeconfig (token, insecure TLS).
    pub kubeconfig: PathBuf,
    /// Admin client.
    pub client: kube::Client,
    children: Vec<Child>,
}

impl ControlPlane {
    /// Starts etcd and the apiserver, waits until the apiserver is ready and applies the CRDs.
    pub async fn start() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchboard-operator-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("certs")).expect("create run dir");
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut children = Vec::new();
        children.push(spawn(
            &tool("etcd"),
            &[
                "--name=default".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &dir.join("etcd.log"),
        ));

        // Service-account signing keys (the apiserver refuses to start without them).
        let openssl = |args: &[&str]| {
            let status = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(status.success(), "openssl {args:?} failed");
        };
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sa.key",
        ]);
        openssl(&["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{TOKEN},admin,admin-uid,system:masters\n"),
        )
        .expect("write token file");
        let path = |name: &str| dir.join(name).display().to_string();
        children.push(spawn(
            &tool("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", path("certs")),
                format!("--token-auth-file={}", path("tokens.csv")),
                "--authorization-mode=AlwaysAllow".into(),
                // No controller-manager creates the default ServiceAccount.
                "--disable-admission-plugins=ServiceAccount".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", path("sa.pub")),
                format!("--service-account-signing-key-file={}", path("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--endpoint-reconciler-type=none".into(),
                "--profiling=false".into(),
            ],
            &dir.join("kube-apiserver.log"),
        ));
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    \
                 server: https://127.0.0.1:{api_port}\n    insecure-skip-tls-verify: true\n\
                 users:\n- name: admin\n  user:\n    token: {TOKEN}\ncontexts:\n- name: test\n  \
                 context:\n    cluster: test\n    user: admin\n    namespace: default\n\
                 current-context: test\n"
            ),
        )
        .expect("write kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig).expect("read kubeconfig"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig");
        let client = kube::Client::try_from(config).expect("client");
        let mut plane = Self {
            dir,
            etcd_url,
            kubeconfig,
            client,
            children,
        };
        plane.wait_ready().await;
        plane
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "a control-plane process exited ({status}); logs in {}",
                        self.dir.display()
                    );
                }
            }
            let ready = self
                .client
                .request_text(
                    http::Request::get("/readyz")
                        .body(Vec::new())
                        .expect("request"),
                )
                .await;
            if matches!(ready.as_deref(), Ok("ok")) {
                break;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "kube-apiserver not ready in {PATIENCE:?}: {ready:?}; logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("control plane ready in {:?}", started.elapsed());
    }

    /// Applies the operator's CRDs and waits until they are served.
    pub async fn apply_crds(&self) {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for (_, crd) in switchboard_operator::crd::crds() {
            api.create(&PostParams::default(), &crd)
                .await
                .expect("create CRD");
        }
        eventually("CRDs served", || async {
            switchboard_operator::client::check_crds(&self.client)
                .await
                .is_ok()
        })
        .await;
    }

    /// An etcd client of the control plane's etcd.
    pub async fn etcd(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.etcd_url.as_str()], None)
            .await
            .expect("connect etcd")
    }

    /// Starts the operator binary with `args` (plus the kubeconfig and a metrics address).
    pub fn operator(&self, name: &str, args: &[&str]) -> Operator {
        let port = free_port();
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create operator log");
        let err = out.try_clone().expect("clone log");
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard-operator"))
            .args(args)
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start operator");
        Operator {
            child: Some(child),
            metrics_port: port,
            log,
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || std::env::var_os("SWITCHBOARD_KEEP_TEST_DIRS").is_some() {
            eprintln!("control plane logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running operator process.
pub struct Operator {
    child: Option<Child>,
    /// Port of its admin server.
    pub metrics_port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl Operator {
    /// Its `/metrics` text (empty when unreachable).
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics")
            .await
            .unwrap_or_default()
    }

    /// The value of the first sample of `name` whose labels contain `labels` (0 when absent).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        metric_value(&self.metrics().await, name, labels)
    }

    /// The HTTP status of `path` on its admin server.
    pub async fn status_of(&self, path: &str) -> Option<u16> {
        let response = http_get_raw(self.metrics_port, path).await?;
        response.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success());
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit (up to [`PATIENCE`]) and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let started = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            assert!(started.elapsed() < PATIENCE, "operator did not exit");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Parses one sample out of Prometheus text.
pub fn metric_value(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn http_get_raw(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    Some(response)
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    let response = http_get_raw(port, path).await?;
    Some(response.split_once("\r\n\r\n")?.1.to_string())
}

/// Polls `check` every 100 ms until it holds; panics after [`PATIENCE`]. Returns the time it
/// took.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

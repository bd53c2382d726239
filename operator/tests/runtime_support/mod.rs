//! What the operator's process-level tests share beyond the test kit: a control plane
//! (`switchboard-testkit`: etcd and a kube-apiserver, no controller-manager, scheduler or
//! kubelet, so pods are created but never run) with the CRDs applied, and operator processes
//! started from the built binary, killed on drop, their logs beside the control plane's.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use switchboard_testkit::{free_port, patience};
use tokio::time::Instant;

pub use switchboard_testkit::eventually;

/// etcd + kube-apiserver for one test.
pub struct ControlPlane {
    inner: switchboard_testkit::ControlPlane,
    /// etcd client URL (also usable as a SignalingCluster's etcd).
    pub etcd_url: String,
    /// Admin kubeconfig (token, insecure TLS).
    pub kubeconfig: PathBuf,
    /// Admin client.
    pub client: kube::Client,
}

impl ControlPlane {
    /// Starts etcd and the apiserver and waits until the apiserver is ready.
    pub async fn start() -> Self {
        let inner = switchboard_testkit::ControlPlane::start().await;
        Self {
            etcd_url: inner.etcd().endpoint(),
            kubeconfig: inner.kubeconfig().to_path_buf(),
            client: inner.client().clone(),
            inner,
        }
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
        self.inner.etcd().client().await
    }

    /// Starts the operator binary with `args` (plus the kubeconfig and a metrics address).
    pub fn operator(&self, name: &str, args: &[&str]) -> Operator {
        let port = free_port();
        let log = self.inner.dir().join(format!("{name}.log"));
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

    /// Waits for the process to exit (up to the test kit's patience) and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let started = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            assert!(started.elapsed() < patience(), "operator did not exit");
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

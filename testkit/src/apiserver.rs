//! A real kube-apiserver process on a free loopback port, backed by an [`Etcd`], with one
//! admin token (group `system:masters`, `AlwaysAllow`) and a self-signed serving certificate;
//! and [`ControlPlane`], the two together. No controller-manager, scheduler or kubelet: Pods
//! are stored but never run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::time::Instant;

use crate::dirs::TempDir;
use crate::error::{Error, io, log_tail};
use crate::etcd::{Etcd, EtcdOptions};
use crate::net::free_port;
use crate::pki::openssl;
use crate::tools;
use crate::wait::patience;

const TOKEN: &str = "switchboard-test-admin-token";

/// A running kube-apiserver, killed on drop.
pub struct ApiServer {
    dir: PathBuf,
    _temp: Option<TempDir>,
    port: u16,
    child: Child,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts an apiserver on `etcd` and waits until it is ready; panics if it cannot.
    pub async fn start(etcd: &Etcd) -> Self {
        Self::try_start(&etcd.endpoint(), None)
            .await
            .unwrap_or_else(|e| panic!("starting kube-apiserver: {e}"))
    }

    /// Starts an apiserver on the etcd at `etcd_url`, with its files in `dir` (kept) or a
    /// [`TempDir`], and waits until `/readyz` is ok and the `default` namespace exists.
    pub async fn try_start(etcd_url: &str, dir: Option<PathBuf>) -> Result<Self, Error> {
        let bin = tools::kube_apiserver_bin()?;
        let (dir, temp) = match dir {
            Some(dir) => (dir, None),
            None => {
                let temp = TempDir::new("apiserver")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(dir.join("certs"))
            .map_err(io(format!("creating {}", dir.display())))?;
        // Service-account signing keys: the apiserver refuses to start without them.
        openssl(
            &dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "sa.key",
            ],
        )?;
        openssl(&dir, &["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{TOKEN},admin,admin-uid,system:masters\n"),
        )
        .map_err(io("writing tokens.csv"))?;
        let port = free_port();
        let log_path = dir.join("kube-apiserver.log");
        let log = std::fs::File::create(&log_path).map_err(io("creating kube-apiserver.log"))?;
        let log_err = log.try_clone().map_err(io("opening kube-apiserver.log"))?;
        let path = |name: &str| dir.join(name).display().to_string();
        let child = Command::new(&bin)
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", path("certs")))
            .arg(format!("--token-auth-file={}", path("tokens.csv")))
            .arg("--authorization-mode=AlwaysAllow")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", path("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--endpoint-reconciler-type=none")
            // No controller-manager creates the default ServiceAccount in test namespaces.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--profiling=false")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io(format!("starting {}", bin.display())))?;
        let mut server = Self {
            dir,
            _temp: temp,
            port,
            child,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + patience();
        let log_path = self.dir.join("kube-apiserver.log");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Exited {
                    name: "kube-apiserver",
                    status,
                    path: log_path.clone(),
                    log: log_tail(&log_path, 4000),
                });
            }
            let client = self.try_client().await?;
            let ready = tokio::time::timeout(Duration::from_secs(2), async {
                let readyz = client
                    .request_text(http::Request::get("/readyz").body(Vec::new()).ok()?)
                    .await
                    .ok()?;
                let api = kube::Api::<Namespace>::all(client.clone());
                (readyz == "ok" && api.get("default").await.is_ok()).then_some(())
            })
            .await;
            if matches!(ready, Ok(Some(()))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    name: "kube-apiserver",
                    after: patience(),
                    path: log_path.clone(),
                    log: log_tail(&log_path, 4000),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Its URL (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig (YAML) for the admin: context `test`, namespace `default`, the server's
    /// self-signed certificate not verified.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    \
             insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {TOKEN}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n    \
             namespace: default\ncurrent-context: test\n",
            self.url()
        )
    }

    /// A client authenticated as the admin; panics if it cannot be built.
    pub async fn client(&self) -> kube::Client {
        self.try_client()
            .await
            .unwrap_or_else(|e| panic!("kube client: {e}"))
    }

    /// A client authenticated as the admin.
    pub async fn try_client(&self) -> Result<kube::Client, Error> {
        let client_error = |detail: String| Error::Client {
            what: "kube client",
            detail,
        };
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig_yaml())
            .map_err(|e| client_error(e.to_string()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| client_error(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| client_error(e.to_string()))
    }

    /// The end of its log.
    pub fn log(&self) -> String {
        log_tail(&self.dir.join("kube-apiserver.log"), 4000)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd and a kube-apiserver for one test, with their files (logs, certificates, the admin
/// kubeconfig) in one directory.
pub struct ControlPlane {
    // Declared first so it stops before the etcd it uses.
    apiserver: ApiServer,
    etcd: Etcd,
    dir: TempDir,
    kubeconfig: PathBuf,
    client: kube::Client,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("dir", &self.dir.path())
            .field("etcd", &self.etcd.endpoint())
            .field("apiserver", &self.apiserver.url())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts etcd and the apiserver and waits until the apiserver is ready; panics if it
    /// cannot.
    pub async fn start() -> Self {
        Self::try_start()
            .await
            .unwrap_or_else(|e| panic!("starting the control plane: {e}"))
    }

    /// Starts etcd and the apiserver and waits until the apiserver is ready.
    pub async fn try_start() -> Result<Self, Error> {
        let started = Instant::now();
        let dir = TempDir::new("control-plane")?;
        let etcd = Etcd::try_start(EtcdOptions {
            dir: Some(dir.join("etcd")),
            ..EtcdOptions::default()
        })
        .await?;
        let apiserver =
            ApiServer::try_start(&etcd.endpoint(), Some(dir.join("kube-apiserver"))).await?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, apiserver.kubeconfig_yaml())
            .map_err(io("writing the kubeconfig"))?;
        let client = apiserver.try_client().await?;
        eprintln!("control plane ready in {:?}", started.elapsed());
        Ok(Self {
            apiserver,
            etcd,
            dir,
            kubeconfig,
            client,
        })
    }

    /// The directory of its files; other processes of the test may put their logs here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The etcd server.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The apiserver.
    pub fn apiserver(&self) -> &ApiServer {
        &self.apiserver
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// An admin client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }
}

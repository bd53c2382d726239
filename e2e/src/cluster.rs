//! A throw-away local cluster for tests: the control plane from `e2e/scripts/control-plane`
//! plus a pod runner, in a private run directory on free loopback ports, stopped and removed on
//! drop (kept, with its path printed, when the test panicked so the logs can be read).
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_e2e::cluster::ClusterError> {
//! use switchboard_e2e::cluster::{ClusterOptions, LocalCluster};
//! if let Err(missing) = LocalCluster::tools_present() {
//!     eprintln!("SKIP: {missing}");
//!     return Ok(());
//! }
//! let opts = ClusterOptions::new("target/debug/pod-runner") // env!("CARGO_BIN_EXE_pod-runner") in tests
//!     .image("signaling-node", "/path/to/signaling-node");
//! let cluster = LocalCluster::start(opts).await?;
//! let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(cluster.client.clone());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::pod_runner::control::{self, Action, DarkProcesses};

/// Errors starting or using the local cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A command could not run.
    #[error("running {what}: {source}")]
    Io {
        /// The command or file.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `control-plane start` failed; its output says why.
    #[error("control plane did not start:\n{0}")]
    ControlPlane(String),
    /// The pod runner did not come up.
    #[error("pod runner did not start: {0}")]
    Runner(String),
    /// An `e2e/scripts` command on a running cluster failed; its output says why.
    #[error("{0}")]
    Script(String),
    /// Loading the kubeconfig failed.
    #[error("kube client: {0}")]
    Kube(String),
    /// A condition was not reached in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
    },
    /// A kubectl call failed.
    #[error("kubectl {args}: {stderr}")]
    Kubectl {
        /// Its arguments.
        args: String,
        /// Its error output.
        stderr: String,
    },
    /// A control request failed.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The OpenTelemetry Collector of the tracing scenario did not start.
    #[error("OpenTelemetry Collector: {0}")]
    Collector(String),
}

pub use switchboard_testkit::tools::{repo_root, tools_bin};

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The pod-runner binary (`env!("CARGO_BIN_EXE_pod-runner")` in this crate's tests).
    pub pod_runner: PathBuf,
    /// Number of runner nodes.
    pub nodes: usize,
    /// `--image-map` entries.
    pub images: Vec<(String, PathBuf)>,
    /// How long a silent node stays Ready (`SWITCHBOARD_NODE_GRACE`).
    pub node_grace: Duration,
    /// Extra `pod-runner run` arguments.
    pub runner_args: Vec<String>,
}

impl ClusterOptions {
    /// Two nodes, no images, a 6 s node grace period, fast probes and heartbeats.
    pub fn new(pod_runner: impl Into<PathBuf>) -> Self {
        Self {
            pod_runner: pod_runner.into(),
            nodes: 2,
            images: Vec::new(),
            node_grace: Duration::from_secs(6),
            runner_args: vec![
                "--heartbeat".into(),
                "1s".into(),
                "--max-probe-period".into(),
                "500ms".into(),
            ],
        }
    }

    /// Adds an image mapping.
    pub fn image(mut self, name: &str, program: impl Into<PathBuf>) -> Self {
        self.images.push((name.to_string(), program.into()));
        self
    }

    /// Sets the node count.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }
}

/// A running local cluster.
pub struct LocalCluster {
    /// Private run directory (logs under `logs/` and `pods/`).
    pub run_dir: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Admin client.
    pub client: kube::Client,
    /// The pod runner's control endpoint.
    pub control: SocketAddr,
    /// etcd client URL (`http://127.0.0.1:PORT`), usable by the application too.
    pub etcd_url: String,
    /// How long `control-plane start` took.
    pub control_plane_startup: Duration,
    env: Vec<(String, String)>,
    runner: Option<Child>,
}

/// `n` free TCP ports on loopback (bound and released, so a race is possible but rare).
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, ClusterError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ClusterError::Io {
            what: "binding a free port".into(),
            source,
        })?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|source| ClusterError::Io {
            what: "reading a free port".into(),
            source,
        })
}

/// Polls `check` every 50 ms until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::Timeout {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `e2e/scripts/<script> <command>` with `env`; its output, whatever the exit status.
pub(crate) fn script(
    env: &[(String, String)],
    script: &str,
    command: &str,
) -> Result<Output, ClusterError> {
    let script = repo_root().join("e2e/scripts").join(script);
    Command::new(&script)
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ClusterError::Io {
            what: script.display().to_string(),
            source,
        })
}

fn control_plane(env: &[(String, String)], command: &str) -> Result<Output, ClusterError> {
    script(env, "control-plane", command)
}

/// An admin client from a kubeconfig file.
pub(crate) async fn new_client(kubeconfig: &Path) -> Result<kube::Client, ClusterError> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| ClusterError::Kube(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| ClusterError::Kube(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| ClusterError::Kube(e.to_string()))
}

/// Runs kubectl with `kubeconfig`, `stdin` piped in; fails on a non-zero exit.
pub(crate) fn kubectl(
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, ClusterError> {
    use std::io::Write;
    let kubectl = tools_bin().join("kubectl");
    let mut child = Command::new(&kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ClusterError::Io {
            what: kubectl.display().to_string(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| ClusterError::Io {
                what: "kubectl stdin".into(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ClusterError::Io {
            what: "kubectl".into(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ClusterError::Kubectl {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

impl LocalCluster {
    /// `Err` naming the missing tools when the control plane cannot run here.
    pub fn tools_present() -> Result<(), String> {
        let bin = tools_bin();
        let missing: Vec<&str> = [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
        ]
        .into_iter()
        .filter(|t| !bin.join(t).is_file())
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} not found in {} (run e2e/scripts/build-tools or set SWITCHBOARD_TOOLS_DIR)",
                missing.join(", "),
                bin.display()
            ))
        }
    }

    /// Starts the control plane and the pod runner, waits until every node is registered.
    pub async fn start(opts: ClusterOptions) -> Result<Self, ClusterError> {
        let ports = free_ports(5)?;
        let run_dir = fresh_run_dir("switchboard-e2e", ports[0])?;
        let env: Vec<(String, String)> = vec![
            ("SWITCHBOARD_RUN_DIR".into(), run_dir.display().to_string()),
            (
                "SWITCHBOARD_TOOLS_DIR".into(),
                tools_bin()
                    .parent()
                    .unwrap_or(Path::new("."))
                    .display()
                    .to_string(),
            ),
            ("SWITCHBOARD_ETCD_PORT".into(), ports[0].to_string()),
            ("SWITCHBOARD_ETCD_PEER_PORT".into(), ports[1].to_string()),
            ("SWITCHBOARD_APISERVER_PORT".into(), ports[2].to_string()),
            (
                "SWITCHBOARD_CONTROLLER_MANAGER_PORT".into(),
                ports[3].to_string(),
            ),
            ("SWITCHBOARD_SCHEDULER_PORT".into(), ports[4].to_string()),
            (
                "SWITCHBOARD_NODE_GRACE".into(),
                format!("{}s", opts.node_grace.as_secs().max(1)),
            ),
        ];
        let started = Instant::now();
        let out = control_plane(&env, "start")?;
        if !out.status.success() {
            // Stop whatever did start before reporting.
            let _ = control_plane(&env, "stop");
            return Err(ClusterError::ControlPlane(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        let control_plane_startup = started.elapsed();
        let kubeconfig = run_dir.join("kubeconfig");
        let client = match new_client(&kubeconfig).await {
            Ok(c) => c,
            Err(e) => {
                let _ = control_plane(&env, "stop");
                return Err(e);
            }
        };
        // From here on, Drop stops everything.
        let mut cluster = Self {
            kubeconfig,
            control: SocketAddr::from(([127, 0, 0, 1], 0)),
            etcd_url: format!("http://127.0.0.1:{}", ports[0]),
            run_dir,
            client,
            control_plane_startup,
            env,
            runner: None,
        };
        cluster.start_runner(&opts)?;
        let ctl_file = crate::pod_runner::config::control_file(&cluster.run_dir);
        let runner_log = cluster.run_dir.join("logs/pod-runner.log");
        cluster.control = eventually(
            "the pod runner's control endpoint",
            Duration::from_secs(30),
            || {
                let file = ctl_file.clone();
                async move { std::fs::read_to_string(file).ok()?.trim().parse().ok() }
            },
        )
        .await
        .map_err(|e| ClusterError::Runner(format!("{e}; see {}", runner_log.display())))?;
        let control = cluster.control;
        let nodes = opts.nodes;
        eventually(
            "all runner nodes registered",
            Duration::from_secs(30),
            || async move {
                let state = control::fetch_state(control).await.ok()?;
                (state.nodes.len() == nodes).then_some(())
            },
        )
        .await?;
        Ok(cluster)
    }

    fn start_runner(&mut self, opts: &ClusterOptions) -> Result<(), ClusterError> {
        let log_path = self.run_dir.join("logs/pod-runner.log");
        let io = |source| ClusterError::Io {
            what: log_path.display().to_string(),
            source,
        };
        let log = std::fs::File::create(&log_path).map_err(io)?;
        let err = log.try_clone().map_err(io)?;
        // A private /16 per cluster so concurrent clusters never share pod addresses.
        let second = 100 + (std::process::id() % 150) as u8;
        let mut cmd = Command::new(&opts.pod_runner);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--nodes")
            .arg(opts.nodes.to_string())
            .arg("--pod-network")
            .arg(format!("127.{second}.0.0/16"))
            .arg("--run-dir")
            .arg(&self.run_dir);
        for (name, program) in &opts.images {
            cmd.arg("--image-map")
                .arg(format!("{name}={}", program.display()));
        }
        cmd.args(&opts.runner_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let child = cmd.spawn().map_err(|source| ClusterError::Io {
            what: opts.pod_runner.display().to_string(),
            source,
        })?;
        self.runner = Some(child);
        Ok(())
    }

    /// Runs kubectl against the cluster, `stdin` piped in; fails on a non-zero exit.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, ClusterError> {
        kubectl(&self.kubeconfig, args, stdin)
    }

    /// Sends a failure-simulation command to the pod runner.
    pub async fn ctl(
        &self,
        action: Action,
        target: &str,
        processes: Option<DarkProcesses>,
    ) -> Result<String, ClusterError> {
        Ok(control::request(self.control, action, target, processes).await?)
    }

    /// Path of a pod's log file.
    pub fn pod_log(&self, namespace: &str, name: &str) -> PathBuf {
        self.run_dir
            .join("pods")
            .join(format!("{namespace}_{name}.log"))
    }

    /// Environment for `e2e/scripts/control-plane` and friends of this cluster.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    fn stop(&mut self) {
        if let Some(mut runner) = self.runner.take() {
            let pid = rustix::process::Pid::from_raw(i32::try_from(runner.id()).unwrap_or(0));
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(runner.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = runner.kill();
            let _ = runner.wait();
        }
        if let Err(e) = control_plane(&self.env, "stop") {
            eprintln!("stopping the control plane: {e}");
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("local cluster logs kept in {}", self.run_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// A new, empty `<tmp>/<prefix>-<pid>-<port>` with a `logs` directory: one run's state.
pub(crate) fn fresh_run_dir(prefix: &str, port: u16) -> Result<PathBuf, ClusterError> {
    let run_dir = std::env::temp_dir().join(format!("{prefix}-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(run_dir.join("logs")).map_err(|source| ClusterError::Io {
        what: run_dir.display().to_string(),
        source,
    })?;
    Ok(run_dir)
}

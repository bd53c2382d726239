//! The runner as a whole: registers the nodes, starts their heartbeats and pod watches, serves
//! the control endpoint, and on shutdown stops every pod process (SIGTERM, a short grace, then
//! SIGKILL) before returning, so nothing it started survives it.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::control;
use super::node::{self, Heartbeat, NodeSpec};
use super::process::{ProcessTable, Sig};
use super::registry::Registry;
use super::worker::{NodeContext, WorkerContext};
use super::{addr, config::RunnerConfig, watch};

/// Errors starting the runner.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Building the API client failed.
    #[error("creating the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The address plan cannot hold the nodes.
    #[error(transparent)]
    Addr(#[from] addr::AddrError),
    /// Registering a node failed.
    #[error(transparent)]
    Node(#[from] node::NodeError),
    /// The control endpoint failed.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// Creating the run directory or the control file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The environment every pod process starts with, before its own.
fn base_env(kube_config: &kube::Config) -> Vec<(String, String)> {
    let cluster_url = &kube_config.cluster_url;
    let mut env = vec![(
        "PATH".to_string(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    )];
    if let (Some(host), Some(port)) = (cluster_url.host(), cluster_url.port_u16().or(Some(443))) {
        env.push(("KUBERNETES_SERVICE_HOST".into(), host.to_string()));
        env.push(("KUBERNETES_SERVICE_PORT".into(), port.to_string()));
        env.push(("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()));
    }
    env
}

/// Runs until `shutdown` resolves (or the control endpoint fails), then stops every pod process.
pub async fn run(
    config: RunnerConfig,
    kube_config: kube::Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunnerError> {
    let client = kube::Client::try_from(kube_config.clone()).map_err(RunnerError::Client)?;
    let pods_dir = config.pods_dir();
    std::fs::create_dir_all(&pods_dir).map_err(|source| RunnerError::Io {
        path: pods_dir.clone(),
        source,
    })?;
    let registry = Arc::new(Registry::default());
    let processes = Arc::new(ProcessTable::default());
    let (control_addr, server) = control::bind(config.control_listen, registry.clone()).await?;

    let ctx = Arc::new(WorkerContext {
        client: client.clone(),
        apiserver_url: kube_config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string(),
        base_env: base_env(&kube_config),
        config: config.clone(),
        processes: processes.clone(),
        registry: registry.clone(),
    });
    let beat = Heartbeat {
        lease_every: config.heartbeat,
        status_every: config.node_status_every,
    };
    let mut tasks = Vec::new();
    for index in 0..config.nodes {
        let spec = NodeSpec {
            name: config.node_name(index),
            host_ip: config.network.host_ip(index)?,
            cpu: config.cpu.clone(),
            memory: config.memory.clone(),
            pods: config.max_pods.clone(),
        };
        let pool = config.network.pool(index)?;
        let dark = registry.add_node(&spec.name, spec.host_ip);
        let uid = node::register(&client, &spec).await?;
        tracing::info!(node = %spec.name, host_ip = %spec.host_ip, "node registered");
        tasks.push(tokio::spawn(node::heartbeat_loop(
            client.clone(),
            spec.clone(),
            uid,
            beat,
            dark,
        )));
        let node_ctx = Arc::new(NodeContext {
            spec,
            pool: Mutex::new(pool),
        });
        tasks.push(tokio::spawn(watch::run(ctx.clone(), node_ctx)));
    }

    // Written once every node is registered: its presence tells scripts the runner is up.
    let control_file = config.control_file();
    std::fs::write(&control_file, format!("{control_addr}\n")).map_err(|source| {
        RunnerError::Io {
            path: control_file.clone(),
            source,
        }
    })?;
    tracing::info!(%control_addr, file = %control_file.display(), "control endpoint");

    tokio::select! {
        result = server => if let Err(e) = result { tracing::error!(error = %e, "control endpoint failed") },
        () = shutdown => tracing::info!("shutting down"),
    }
    // Dark nodes restart nothing and report nothing: the pods' exits below stay exits.
    for index in 0..config.nodes {
        registry.set_dark(&config.node_name(index), true);
    }
    stop_all(&processes, config.shutdown_grace).await;
    for task in tasks {
        task.abort();
    }
    let _ = std::fs::remove_file(&control_file);
    Ok(())
}

/// SIGTERM to every pod process group, up to `grace` for them to exit, then SIGKILL.
pub async fn stop_all(processes: &ProcessTable, grace: Duration) {
    if processes.groups().is_empty() {
        return;
    }
    processes.signal_all(Sig::Term);
    let deadline = tokio::time::Instant::now() + grace;
    while !processes.groups().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = processes.groups();
    if !left.is_empty() {
        tracing::warn!(groups = ?left, "pod processes ignored SIGTERM; killing");
        processes.signal_all(Sig::Kill);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

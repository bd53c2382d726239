//! `pod-runner`: plays Kubernetes nodes for the local e2e control plane and runs their pods as
//! local processes on loopback addresses; `pod-runner ctl` drives its failure simulation.
//!
//! ```text
//! pod-runner run --nodes 3 --image-map signaling-node=target/debug/signaling-node
//! pod-runner ctl dark runner-1 [--processes freeze|kill|keep]
//! pod-runner ctl resume runner-1 | freeze live/sig-0 | kill sig-0
//! pod-runner ctl state
//! ```
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use switchboard_e2e::pod_runner::addr::PodNetwork;
use switchboard_e2e::pod_runner::config::{self, RunnerConfig, parse_duration};
use switchboard_e2e::pod_runner::control::{self, Action, DarkProcesses};
use switchboard_e2e::pod_runner::image::ImageMap;
use switchboard_e2e::pod_runner::lifecycle::BackoffPolicy;
use switchboard_e2e::pod_runner::runner;

#[derive(Debug, Parser)]
#[command(
    name = "pod-runner",
    about = "Kubernetes nodes as local processes for Switchboard's e2e tests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register nodes and run the pods bound to them until SIGTERM/SIGINT.
    Run(Box<RunArgs>),
    /// Drive a running pod-runner's failure simulation.
    Ctl(CtlArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Kubeconfig of the control plane (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Number of nodes to register.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Node name prefix; nodes are PREFIX-0, PREFIX-1, …
    #[arg(long, default_value = "runner")]
    node_prefix: String,
    /// Loopback /16 for nodes and pods; node i gets 127.X.(i+1).0/24.
    #[arg(long, default_value = "127.0.0.0/16")]
    pod_network: String,
    /// Image to program: NAME=PATH, NAME is an image basename with an optional :TAG (repeatable).
    #[arg(long = "image-map", value_name = "NAME=PATH")]
    image_map: Vec<String>,
    /// Run directory for pod logs, pid files and the control address file.
    #[arg(long, env = "SWITCHBOARD_RUN_DIR", default_value = "e2e/.run")]
    run_dir: PathBuf,
    /// Control endpoint address (loopback; port 0 picks one, written to RUN_DIR/pod-runner.ctl).
    #[arg(long, default_value = "127.0.0.1:0")]
    control_listen: SocketAddr,
    /// Node lease renewal period.
    #[arg(long, default_value = "2s", value_parser = duration)]
    heartbeat: Duration,
    /// Node status period.
    #[arg(long, default_value = "10s", value_parser = duration)]
    node_status_every: Duration,
    /// Delay before the second restart of a crashing container (the first is immediate).
    #[arg(long, default_value = "1s", value_parser = duration)]
    restart_backoff: Duration,
    /// Longest restart delay.
    #[arg(long, default_value = "30s", value_parser = duration)]
    max_restart_backoff: Duration,
    /// Upper bound of readiness probe periods (the API default period is 10 s).
    #[arg(long, default_value = "1s", value_parser = duration)]
    max_probe_period: Duration,
    /// Node CPU capacity.
    #[arg(long, default_value = "8")]
    cpu: String,
    /// Node memory capacity.
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// Node pod capacity.
    #[arg(long, default_value = "110")]
    max_pods: String,
    /// Time pods get between SIGTERM and SIGKILL when the runner itself exits.
    #[arg(long, default_value = "2s", value_parser = duration)]
    shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CtlAction {
    /// Node stops heartbeats and reports; its processes freeze (or --processes).
    Dark,
    /// Node or pod resumes (SIGCONT, heartbeats, restarts).
    Resume,
    /// SIGSTOP a node's or pod's processes.
    Freeze,
    /// SIGKILL a node's or pod's processes.
    Kill,
    /// Print the runner's nodes and pods as JSON.
    State,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Processes {
    Freeze,
    Kill,
    Keep,
}

#[derive(Debug, clap::Args)]
struct CtlArgs {
    /// What to do.
    action: CtlAction,
    /// Node name, namespace/pod, or a unique pod name (not for `state`).
    target: Option<String>,
    /// With `dark`: what happens to the node's processes.
    #[arg(long, value_enum)]
    processes: Option<Processes>,
    /// Control endpoint (default: read from RUN_DIR/pod-runner.ctl).
    #[arg(long)]
    control: Option<SocketAddr>,
    /// Run directory holding pod-runner.ctl.
    #[arg(long, env = "SWITCHBOARD_RUN_DIR", default_value = "e2e/.run")]
    run_dir: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(*args).await,
        Command::Ctl(args) => ctl(args).await,
    }
}

async fn kube_config(path: Option<&Path>) -> Result<kube::Config> {
    match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", p.display()))
        }
        None => kube::Config::infer()
            .await
            .context("loading kubeconfig (set --kubeconfig or KUBECONFIG)"),
    }
}

async fn run(args: RunArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let network: PodNetwork = args.pod_network.parse().context("--pod-network")?;
    let images = ImageMap::from_entries(&args.image_map).context("--image-map")?;
    if !args.control_listen.ip().is_loopback() {
        bail!(
            "--control-listen must be a loopback address, got {}",
            args.control_listen
        );
    }
    let config = RunnerConfig {
        nodes: args.nodes,
        node_prefix: args.node_prefix,
        network,
        images,
        // Pod processes run in their own directories: every path handed to them is absolute.
        run_dir: std::path::absolute(&args.run_dir).context("--run-dir")?,
        control_listen: args.control_listen,
        heartbeat: args.heartbeat,
        node_status_every: args.node_status_every,
        backoff: BackoffPolicy {
            initial: args.restart_backoff,
            max: args.max_restart_backoff,
            reset_after: Duration::from_secs(60),
        },
        max_probe_period: args.max_probe_period,
        cpu: args.cpu,
        memory: args.memory,
        max_pods: args.max_pods,
        shutdown_grace: args.shutdown_grace,
    };
    let kube_config = kube_config(args.kubeconfig.as_deref()).await?;
    runner::run(config, kube_config, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the runner with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn ctl(args: CtlArgs) -> Result<()> {
    let addr = match args.control {
        Some(a) => a,
        None => {
            let file = config::control_file(&args.run_dir);
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!(
                    "reading {} (is the pod-runner running? set --control or SWITCHBOARD_RUN_DIR)",
                    file.display()
                )
            })?;
            text.trim()
                .parse()
                .with_context(|| format!("{} does not hold an address", file.display()))?
        }
    };
    let action = match args.action {
        CtlAction::State => {
            let state = control::fetch_state(addr).await?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            return Ok(());
        }
        CtlAction::Dark => Action::Dark,
        CtlAction::Resume => Action::Resume,
        CtlAction::Freeze => Action::Freeze,
        CtlAction::Kill => Action::Kill,
    };
    let Some(target) = args.target else {
        bail!(
            "{} needs a target: a node name, namespace/pod or a pod name",
            action.as_str()
        );
    };
    let processes = args.processes.map(|p| match p {
        Processes::Freeze => DarkProcesses::Freeze,
        Processes::Kill => DarkProcesses::Kill,
        Processes::Keep => DarkProcesses::Keep,
    });
    if processes.is_some() && action != Action::Dark {
        bail!("--processes only applies to dark");
    }
    let message = control::request(addr, action, &target, processes).await?;
    println!("{message}");
    Ok(())
}

//! `kubectl-switchboard`: the kubectl plugin for Switchboard (`kubectl switchboard ...` once it
//! is on PATH). Status of a cluster, where a room lives, rollout requests and weight edits,
//! node drains and shard moves; drains, moves and rollout requests are annotations the
//! operator carries out and answers in status.
//!
//! Exit status: 0 success; 1 an error (or a rejected request); `status` exits 2 when the
//! cluster is Degraded or its rollout RolledBack / Aborted, so CI can gate on it.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use switchboard_operator::controller::labels::CLUSTER;
use switchboard_operator::crd::{MovePhase, RequestAction, RequestOutcome, RolloutRequest};
use switchboard_operator::plugin::api::{self, ConnectOptions, Session};
use switchboard_operator::plugin::{PluginError, report, weights};

/// Output format of `status` and `rooms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Tables for people.
    Text,
    /// The objects and the health verdict as JSON.
    Json,
    /// The same as YAML.
    Yaml,
}

/// Operate Switchboard signaling clusters.
#[derive(Debug, Parser)]
#[command(name = "kubectl switchboard", version)]
struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's namespace).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Output format of `status` and `rooms`.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "text")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Conditions, pools per version, the shard map, recent failovers and the rollout.
    Status {
        /// The SignalingCluster (default: the namespace's only one).
        cluster: Option<String>,
        /// Print again every --interval until interrupted (exit status of the last print).
        #[arg(short = 'w', long)]
        watch: bool,
        /// Seconds between prints with --watch.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// The plugin's version and the API server's.
    Version,
    /// Print a shell completion script: `source <(kubectl switchboard completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Which shard and node serve a room.
    Rooms {
        /// The room id.
        room: String,
        /// The SignalingCluster (default: the namespace's only one).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Edit the cluster's ProtocolRollout.
    Rollout {
        /// The SignalingCluster (default: the namespace's only one).
        #[arg(long, global = true)]
        cluster: Option<String>,
        #[command(subcommand)]
        action: RolloutAction,
    },
    /// Hand every shard of a signaling-node pod off and give it no new ones.
    Drain {
        /// The pod.
        node: String,
        /// The SignalingCluster (default: the pod's).
        #[arg(long)]
        cluster: Option<String>,
        /// Remove the drain instead: the node takes shards again.
        #[arg(long)]
        undo: bool,
        /// Wait until the node owns no shards (`--wait=false` to return at once).
        #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        wait: bool,
        /// Seconds to wait.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Move one shard to another node now (two-phase handoff, no session lost).
    Failover {
        /// The shard index.
        shard: i64,
        /// The node to move it to (default: the least loaded other node of its version).
        #[arg(long)]
        to: Option<String>,
        /// The SignalingCluster (default: the namespace's only one).
        #[arg(long)]
        cluster: Option<String>,
        /// Wait for the operator's answer (`--wait=false` to return at once).
        #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        wait: bool,
        /// Seconds to wait.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
enum RolloutAction {
    /// Set weights in the spec: VERSION=WEIGHT ... (sum 100; with two versions one is enough).
    /// With GitOps, change the weights in Git instead: the Git controller reverts spec edits.
    SetWeight {
        /// VERSION=WEIGHT pairs.
        #[arg(required = true)]
        weights: Vec<String>,
    },
    /// Request: stop moving shards between versions (until resume or a spec change).
    Pause {
        #[command(flatten)]
        wait: Wait,
    },
    /// Request: undo a pause request.
    Resume {
        #[command(flatten)]
        wait: Wait,
    },
    /// Request: all weight to VERSION (default: the newest) until the spec changes.
    Promote {
        /// The version to promote.
        version: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Request: weights back to the last stable weights until the spec changes.
    Abort {
        #[command(flatten)]
        wait: Wait,
    },
}

/// Waiting for the operator's answer to a request.
#[derive(Debug, Clone, Copy, clap::Args)]
struct Wait {
    /// Wait for the operator's answer (`--wait=false` to return at once).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    wait: bool,
    /// Seconds to wait.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

const POLL: Duration = Duration::from_millis(500);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; `Ok` carries the exit status (non-zero only for an unhealthy `status`).
async fn run(cli: Cli) -> Result<u8, PluginError> {
    if let Command::Completion { shell } = cli.command {
        let mut command = Cli::command();
        clap_complete::generate(
            shell,
            &mut command,
            "kubectl-switchboard",
            &mut std::io::stdout(),
        );
        return Ok(0);
    }
    let session = api::connect(&ConnectOptions {
        kubeconfig: cli.kubeconfig,
        context: cli.context,
        namespace: cli.namespace,
    })
    .await;
    if let Command::Version = cli.command {
        println!("kubectl-switchboard {}", env!("CARGO_PKG_VERSION"));
        match session {
            Ok(session) => match session.server_version().await {
                Ok(version) => println!("Kubernetes API server {version} ({})", session.url),
                Err(error) => println!("Kubernetes API server: {error}"),
            },
            Err(error) => println!("Kubernetes API server: {error}"),
        }
        return Ok(0);
    }
    let session = session?;
    let output = cli.output;
    match cli.command {
        Command::Status {
            cluster,
            watch,
            interval,
        } => status(&session, cluster.as_deref(), output, watch, interval).await,
        Command::Rooms { room, cluster } => rooms(&session, &room, cluster.as_deref(), output)
            .await
            .map(|()| 0),
        Command::Version | Command::Completion { .. } => Ok(0),
        Command::Rollout { cluster, action } => rollout(&session, cluster.as_deref(), action)
            .await
            .map(|()| 0),
        Command::Drain {
            node,
            cluster,
            undo,
            wait,
            timeout,
        } => drain(&session, &node, cluster.as_deref(), undo, wait, timeout)
            .await
            .map(|()| 0),
        Command::Failover {
            shard,
            to,
            cluster,
            wait,
            timeout,
        } => failover(
            &session,
            shard,
            to.as_deref(),
            cluster.as_deref(),
            wait,
            timeout,
        )
        .await
        .map(|()| 0),
    }
}

fn serialize<T: serde::Serialize>(value: &T, output: Output) -> Result<String, PluginError> {
    let encoded = match output {
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| e.to_string()),
        _ => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
    };
    encoded.map_err(|message| PluginError::Api {
        action: "encoding the output".into(),
        message,
    })
}

async fn status(
    session: &Session,
    cluster: Option<&str>,
    output: Output,
    watch: bool,
    interval: u64,
) -> Result<u8, PluginError> {
    loop {
        let found = session.cluster(cluster).await?;
        let name = found.name_any();
        let pods = session.pods(&name).await?;
        let shards = session.shards(&name).await?;
        let rollout = session.rollout(&name).await?;
        let health = report::health(&found, rollout.as_ref());
        let text = match output {
            Output::Text => {
                let mut text =
                    report::status(&found, &pods, &shards, rollout.as_ref(), Timestamp::now());
                for reason in &health.reasons {
                    text.push_str(&format!("UNHEALTHY: {reason}\n"));
                }
                text
            }
            Output::Json | Output::Yaml => serialize(
                &report::status_document(&found, &pods, &shards, rollout.as_ref()),
                output,
            )?,
        };
        if watch && output == Output::Text {
            // Clear the screen like `watch` does, then print the new report.
            print!("\x1b[2J\x1b[H");
        }
        print!("{text}");
        let _ = std::io::stdout().flush();
        if !watch {
            return Ok(health.exit_code());
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(interval.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(health.exit_code()),
        }
    }
}

async fn rooms(
    session: &Session,
    room: &str,
    cluster: Option<&str>,
    output: Output,
) -> Result<(), PluginError> {
    let cluster = session.cluster(cluster).await?;
    let name = cluster.name_any();
    let shards = session.shards(&name).await?;
    let pods = session.pods(&name).await?;
    let location = report::locate(room, &cluster, &shards, &pods);
    match output {
        Output::Text => print!("{}", report::room_report(&location)),
        _ => print!("{}", serialize(&location, output)?),
    }
    Ok(())
}

async fn rollout(
    session: &Session,
    cluster: Option<&str>,
    action: RolloutAction,
) -> Result<(), PluginError> {
    let cluster = session.cluster(cluster).await?;
    let rollout = session.require_rollout(&cluster.name_any()).await?;
    let (request, wait) = match action {
        RolloutAction::SetWeight { weights: args } => {
            let current: weights::Weights = rollout
                .spec
                .versions
                .iter()
                .map(|v| (v.name.clone(), v.weight))
                .collect();
            let next = weights::set(&current, &weights::parse(&args)?)?;
            let patched = session.patch_rollout(&rollout, Some(&next), None).await?;
            println!(
                "protocolrollout/{}: {} (generation {}); with GitOps, commit this to Git or it is reverted",
                patched.name_any(),
                weights::describe(&current, &next),
                patched.metadata.generation.unwrap_or_default()
            );
            return Ok(());
        }
        RolloutAction::Pause { wait } => ((RequestAction::Pause, None), wait),
        RolloutAction::Resume { wait } => ((RequestAction::Resume, None), wait),
        RolloutAction::Promote { version, wait } => {
            if let Some(version) = &version
                && !rollout.spec.versions.iter().any(|v| &v.name == version)
            {
                return Err(PluginError::UnknownVersion {
                    version: version.clone(),
                    known: rollout
                        .spec
                        .versions
                        .iter()
                        .map(|v| v.name.clone())
                        .collect(),
                });
            }
            ((RequestAction::Promote, version), wait)
        }
        RolloutAction::Abort { wait } => ((RequestAction::Abort, None), wait),
    };
    let (action, version) = request;
    let request = RolloutRequest {
        id: Timestamp::now().as_millisecond().to_string(),
        action,
        version,
    };
    session.request_rollout(&rollout, &request).await?;
    println!(
        "protocolrollout/{}: {} requested (id {})",
        rollout.name_any(),
        action.as_str(),
        request.id
    );
    if !wait.wait {
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let current = session.rollout_named(&rollout.name_any()).await?;
        let answer = current
            .status
            .as_ref()
            .and_then(|s| s.last_request.clone())
            .filter(|a| a.id == request.id);
        if let Some(answer) = answer {
            return match answer.outcome {
                RequestOutcome::Accepted => {
                    println!("{}", answer.message);
                    Ok(())
                }
                RequestOutcome::Rejected => Err(PluginError::RequestRejected {
                    action: answer.action,
                    message: answer.message,
                }),
            };
        }
        if started.elapsed() >= Duration::from_secs(wait.timeout) {
            return Err(PluginError::Timeout {
                seconds: wait.timeout,
                what: format!(
                    "the operator to answer the {} request (is it running?)",
                    action.as_str()
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The cluster a pod belongs to: `--cluster`, else the pod's cluster label.
async fn cluster_of_pod(
    session: &Session,
    node: &str,
    cluster: Option<&str>,
) -> Result<switchboard_operator::crd::SignalingCluster, PluginError> {
    if cluster.is_some() {
        return session.cluster(cluster).await;
    }
    let labelled = session
        .pod(node)
        .await?
        .and_then(|p| p.labels().get(CLUSTER).cloned());
    session.cluster(labelled.as_deref()).await
}

async fn drain(
    session: &Session,
    node: &str,
    cluster: Option<&str>,
    undo: bool,
    wait: bool,
    timeout: u64,
) -> Result<(), PluginError> {
    let cluster = cluster_of_pod(session, node, cluster).await?;
    let name = cluster.name_any();
    let pods = session.pods(&name).await?;
    if !pods.iter().any(|p| p.name_any() == node) {
        return Err(PluginError::UnknownNode {
            node: node.to_string(),
            cluster: name,
            pods: pods.iter().map(ResourceExt::name_any).collect(),
        });
    }
    session.set_drain(node, !undo).await?;
    if undo {
        println!("pod/{node} undrained: it takes shards again as the operator rebalances");
        return Ok(());
    }
    println!("pod/{node} drained: the operator hands its shards off and gives it no new ones");
    if !wait {
        return Ok(());
    }
    let started = Instant::now();
    let mut last: Option<(usize, usize)> = None;
    loop {
        let shards = session.shards(&name).await?;
        let (owned, moving) = report::owned_by(&shards, node);
        if owned.is_empty() {
            println!(
                "pod/{node} owns no shards ({:.1} s); undo with `kubectl switchboard drain --undo {node}`",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if last != Some((owned.len(), moving)) {
            let list: Vec<String> = owned.iter().map(i32::to_string).collect();
            println!(
                "  {} shards left ({moving} handing off): {}",
                owned.len(),
                list.join(",")
            );
            last = Some((owned.len(), moving));
        }
        if started.elapsed() >= Duration::from_secs(timeout) {
            return Err(PluginError::Timeout {
                seconds: timeout,
                what: format!("pod/{node} to own no shards (is the operator running?)"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn failover(
    session: &Session,
    shard: i64,
    to: Option<&str>,
    cluster: Option<&str>,
    wait: bool,
    timeout: u64,
) -> Result<(), PluginError> {
    let cluster = session.cluster(cluster).await?;
    let name = cluster.name_any();
    let index = u32::try_from(shard)
        .ok()
        .filter(|s| i64::from(*s) < i64::from(cluster.spec.shards))
        .ok_or_else(|| PluginError::UnknownShard {
            shard,
            cluster: name.clone(),
            count: cluster.spec.shards,
        })?;
    if let Some(to) = to {
        let pods = session.pods(&name).await?;
        if !pods.iter().any(|p| p.name_any() == to) {
            return Err(PluginError::UnknownNode {
                node: to.to_string(),
                cluster: name,
                pods: pods.iter().map(ResourceExt::name_any).collect(),
            });
        }
    }
    let before = session.shard(&name, index).await?;
    let owner = before
        .status
        .as_ref()
        .and_then(|s| s.node.clone())
        .unwrap_or_else(|| "-".into());
    let id = Timestamp::now().as_millisecond().to_string();
    session.request_move(&name, index, &id, to).await?;
    println!(
        "roomshard/{}: move requested (id {id}, owner {owner})",
        before.name_any()
    );
    if !wait {
        return Ok(());
    }
    let started = Instant::now();
    let mut announced = false;
    loop {
        let shard = session.shard(&name, index).await?;
        let status = shard.status.clone().unwrap_or_default();
        if let Some(answer) = status.last_move_request.filter(|a| a.id == id) {
            let from = answer.from.clone().unwrap_or_else(|| owner.clone());
            let target = answer.to.clone().unwrap_or_else(|| "-".into());
            match answer.phase {
                MovePhase::Moving if !announced => {
                    println!("  handing off from {from} to {target}");
                    announced = true;
                }
                MovePhase::Moving => {}
                MovePhase::Completed => {
                    println!(
                        "shard {index} moved from {from} to {target} (epoch {}, {:.1} s)",
                        status.epoch,
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                MovePhase::Rejected => {
                    return Err(PluginError::MoveNotDone {
                        shard: index,
                        outcome: "was rejected",
                        message: answer.message,
                    });
                }
                MovePhase::Failed => {
                    return Err(PluginError::MoveNotDone {
                        shard: index,
                        outcome: "failed",
                        message: answer.message,
                    });
                }
            }
        }
        if started.elapsed() >= Duration::from_secs(timeout) {
            return Err(PluginError::Timeout {
                seconds: timeout,
                what: format!("the operator to answer the move of shard {index} (is it running?)"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

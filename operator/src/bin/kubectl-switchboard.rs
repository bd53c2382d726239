//! `kubectl-switchboard`: the kubectl plugin for Switchboard (`kubectl switchboard ...` once it
//! is on PATH). Status of a cluster, where a room lives, rollout weight edits, node drains and
//! shard moves; drains and moves are carried out by the operator with two-phase handoffs.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser, Subcommand};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use switchboard_operator::controller::labels::CLUSTER;
use switchboard_operator::crd::MovePhase;
use switchboard_operator::plugin::api::{self, ConnectOptions, Session};
use switchboard_operator::plugin::{PluginError, report, weights};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Conditions, pools per version, the shard map, recent failovers and the rollout.
    Status {
        /// The SignalingCluster (default: the namespace's only one).
        cluster: Option<String>,
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
    /// Set weights: VERSION=WEIGHT ... (sum 100; with two versions one is enough).
    SetWeight {
        /// VERSION=WEIGHT pairs.
        #[arg(required = true)]
        weights: Vec<String>,
    },
    /// Stop moving shards between versions.
    Pause,
    /// Continue moving shards.
    Resume,
    /// All weight to VERSION (default: the newest version), and resume.
    Promote {
        /// The version to promote.
        version: Option<String>,
    },
    /// Weights back to the last stable weights in status, and pause.
    Abort,
}

const POLL: Duration = Duration::from_millis(500);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), PluginError> {
    let session = api::connect(&ConnectOptions {
        kubeconfig: cli.kubeconfig,
        context: cli.context,
        namespace: cli.namespace,
    })
    .await?;
    match cli.command {
        Command::Status { cluster } => status(&session, cluster.as_deref()).await,
        Command::Rooms { room, cluster } => rooms(&session, &room, cluster.as_deref()).await,
        Command::Rollout { cluster, action } => rollout(&session, cluster.as_deref(), action).await,
        Command::Drain {
            node,
            cluster,
            undo,
            wait,
            timeout,
        } => drain(&session, &node, cluster.as_deref(), undo, wait, timeout).await,
        Command::Failover {
            shard,
            to,
            cluster,
            wait,
            timeout,
        } => {
            failover(
                &session,
                shard,
                to.as_deref(),
                cluster.as_deref(),
                wait,
                timeout,
            )
            .await
        }
    }
}

async fn status(session: &Session, cluster: Option<&str>) -> Result<(), PluginError> {
    let cluster = session.cluster(cluster).await?;
    let name = cluster.name_any();
    let pods = session.pods(&name).await?;
    let shards = session.shards(&name).await?;
    let rollout = session.rollout(&name).await?;
    print!(
        "{}",
        report::status(&cluster, &pods, &shards, rollout.as_ref(), Timestamp::now())
    );
    Ok(())
}

async fn rooms(session: &Session, room: &str, cluster: Option<&str>) -> Result<(), PluginError> {
    let cluster = session.cluster(cluster).await?;
    let name = cluster.name_any();
    let shards = session.shards(&name).await?;
    let pods = session.pods(&name).await?;
    let location = report::locate(room, &cluster, &shards, &pods);
    print!("{}", report::room_report(&location));
    Ok(())
}

async fn rollout(
    session: &Session,
    cluster: Option<&str>,
    action: RolloutAction,
) -> Result<(), PluginError> {
    let cluster = session.cluster(cluster).await?;
    let rollout = session.require_rollout(&cluster.name_any()).await?;
    let current: weights::Weights = rollout
        .spec
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.weight))
        .collect();
    let (next, paused) = match action {
        RolloutAction::SetWeight { weights: args } => {
            (Some(weights::set(&current, &weights::parse(&args)?)?), None)
        }
        RolloutAction::Pause => (None, Some(true)),
        RolloutAction::Resume => (None, Some(false)),
        RolloutAction::Promote { version } => (
            Some(weights::promote(&current, version.as_deref())?),
            Some(false),
        ),
        RolloutAction::Abort => {
            let stable = rollout
                .status
                .as_ref()
                .map(|s| s.last_stable_weights.clone())
                .unwrap_or_default();
            (Some(weights::abort(&current, &stable)?), Some(true))
        }
    };
    let patched = session
        .patch_rollout(&rollout, next.as_ref(), paused)
        .await?;
    let mut changes = Vec::new();
    if let Some(next) = &next {
        changes.push(weights::describe(&current, next));
    }
    if let Some(paused) = paused {
        changes.push(match (rollout.spec.paused, paused) {
            (false, true) => "paused".to_string(),
            (true, false) => "resumed".to_string(),
            (_, true) => "paused (already)".to_string(),
            (_, false) => "not paused (already)".to_string(),
        });
    }
    println!(
        "protocolrollout/{}: {} (generation {})",
        patched.name_any(),
        changes.join("; "),
        patched.metadata.generation.unwrap_or_default()
    );
    Ok(())
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

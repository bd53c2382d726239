//! The failover driver: the operator's own shard-manager decision core
//! (`switchboard_operator::controller::shards::core::Core`) and its etcd I/O
//! (`etcd_io::watch_loop`, `revoke`, `commit`), run in this process without Kubernetes. Pod
//! signals come from the benchmark itself (it is the node processes' parent, as the pod runner
//! is): a child that exited is reported as a Pod whose container terminated, the operator's
//! `ProcessExited` path. Every notice is forwarded with the instant it was produced.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::Client;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use switchboard_contract::keys::Keyspace;
use switchboard_operator::controller::shards::core::{Core, Notice, Settings};
use switchboard_operator::controller::shards::etcd_io::{self, Outcome};
use switchboard_operator::controller::shards::health::PodObs;
use switchboard_operator::controller::shards::plan::ANY_POOL;
use switchboard_operator::controller::shards::state::Input;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Most decide → execute rounds per wake-up (as the operator's shell).
const MAX_ROUNDS: usize = 16;

/// A notice and when the core produced it.
#[derive(Debug, Clone)]
pub struct Timed {
    /// When.
    pub at: Instant,
    /// What.
    pub notice: Notice,
}

/// The running driver; dropping it stops it.
pub struct Driver {
    /// Pod signals into the core.
    pub pods: Pods,
    /// Notices, in order.
    pub notices: mpsc::UnboundedReceiver<Timed>,
    tasks: Vec<JoinHandle<()>>,
}

/// Feeds Pod observations to the driver's core (cheap to clone).
#[derive(Debug, Clone)]
pub struct Pods {
    inputs: mpsc::Sender<Input>,
}

impl Driver {
    /// Starts the core for `shards` shards and `replicas` expected nodes (any version).
    pub fn start(etcd: Client, keys: Keyspace, shards: u32, replicas: u32) -> Self {
        let (inputs, rx) = mpsc::channel(256);
        let (notices_tx, notices) = mpsc::unbounded_channel();
        let settings = Settings {
            shard_count: shards,
            expected_pools: BTreeMap::from([(ANY_POOL.to_string(), replicas)]),
            placement_grace: Duration::from_millis(300),
            ..Settings::default()
        };
        let watch = tokio::spawn(etcd_io::watch_loop(
            etcd.clone(),
            keys.clone(),
            inputs.clone(),
        ));
        let shell = tokio::spawn(run(Core::new(settings), etcd, keys, rx, notices_tx));
        Self {
            pods: Pods { inputs },
            notices,
            tasks: vec![watch, shell],
        }
    }
}

impl Pods {
    /// Reports a node's Pod Ready (its process is up and registered).
    pub async fn pod_ready(&self, name: &str) {
        let obs = PodObs {
            uid: name.to_string(),
            ready: true,
            ..PodObs::default()
        };
        let _ = self.inputs.send(Input::Pod(name.to_string(), obs)).await;
    }

    /// Reports that a node's process exited (container terminated).
    pub async fn process_exited(&self, name: &str) {
        let obs = PodObs {
            uid: name.to_string(),
            ready: false,
            exited: true,
            ..PodObs::default()
        };
        let _ = self.inputs.send(Input::Pod(name.to_string(), obs)).await;
    }

    /// Reports a node's Pod deleted (cleanup after a round).
    pub async fn pod_gone(&self, name: &str) {
        let _ = self.inputs.send(Input::PodGone(name.to_string())).await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn run(
    mut core: Core,
    etcd: Client,
    keys: Keyspace,
    mut inputs: mpsc::Receiver<Input>,
    notices: mpsc::UnboundedSender<Timed>,
) {
    let send = |list: Vec<Notice>| {
        let at = Instant::now();
        for notice in list {
            let _ = notices.send(Timed { at, notice });
        }
    };
    let mut retry_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wake = [core.wake_at(now), retry_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { return };
                let mut burst = vec![input];
                while let Ok(more) = inputs.try_recv() {
                    burst.push(more);
                }
                send(core.apply_all(burst, Instant::now()));
            }
            () = tokio::time::sleep_until(wake) => {
                if retry_at.is_some_and(|t| t <= Instant::now()) {
                    retry_at = None;
                }
            }
        }
        if retry_at.is_some() {
            continue;
        }
        for _ in 0..MAX_ROUNDS {
            let decision = core.decide(Instant::now());
            if decision.is_empty() {
                break;
            }
            let mut failed = false;
            for (node, lease) in &decision.revoke {
                match etcd_io::revoke(&etcd, *lease).await {
                    Ok(()) => core.revoked(*lease, Instant::now()),
                    Err(error) => {
                        tracing::warn!(%node, %error, "revoking a lease failed");
                        failed = true;
                    }
                }
            }
            if !failed && !decision.writes.is_empty() {
                for outcome in etcd_io::commit(&etcd, &keys, decision.writes, 128, 4).await {
                    match outcome {
                        Outcome::Written(writes, revision) => {
                            let wall = Time(Timestamp::now());
                            send(core.written(writes, revision, Instant::now(), &wall));
                        }
                        Outcome::Conflict(_, current) => core.conflicted(current, Instant::now()),
                        Outcome::Failed(_, error) => {
                            tracing::warn!(%error, "assignment write failed");
                            failed = true;
                        }
                    }
                }
            }
            for (pod, revision) in &decision.delete_acks {
                match etcd_io::delete_ack(&etcd, &keys, pod, *revision).await {
                    Ok(()) => core.ack_deleted(pod, Instant::now()),
                    Err(_) => failed = true,
                }
            }
            if failed {
                retry_at = Some(Instant::now() + Duration::from_millis(100));
                break;
            }
        }
    }
}

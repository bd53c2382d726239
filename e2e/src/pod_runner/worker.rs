//! One task per pod bound to a runner node: it prepares the pod (address, volumes, env),
//! supervises its process (start, exit, restart with back-off, readiness probe), reports the
//! status after every change, and carries out deletion like a kubelet (SIGTERM, grace period,
//! SIGKILL, then delete the pod object with grace 0).
//!
//! The task is a loop of "act on the current facts, then wait for the next event". Events: the
//! process exited (reported at once), a new version of the Pod arrived (or it vanished), a probe
//! result, a control command (freeze / thaw / kill), the node's dark switch, and timers (restart
//! back-off, grace period end, retries). While the node is dark the worker acts on nothing but
//! control commands and process exits, and reports nothing: the control plane hears nothing
//! from a dark node, and a dark node restarts nothing; it catches up when the node resumes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::addr::AddressPool;
use super::config::{PodPaths, RunnerConfig};
use super::launch::{self, PodPlacement};
use super::lifecycle::{Decision, Lifecycle, RestartPolicy};
use super::node::NodeSpec;
use super::prepare;
use super::probe::{self, ProbeSpec, Readiness};
use super::process::{self, ProcessTable, Sig};
use super::registry::{PodCommand, PodInfo, Registry};
use super::status::{self, ConditionClock, StatusInput};

/// What all workers share.
pub struct WorkerContext {
    /// API client.
    pub client: kube::Client,
    /// Runner settings.
    pub config: RunnerConfig,
    /// Live process groups (killed when the runner exits).
    pub processes: Arc<ProcessTable>,
    /// Nodes and pods table.
    pub registry: Arc<Registry>,
    /// Apiserver URL for in-pod kubeconfigs.
    pub apiserver_url: String,
    /// Environment every process starts with.
    pub base_env: Vec<(String, String)>,
}

/// What the workers of one node share.
pub struct NodeContext {
    /// The node.
    pub spec: NodeSpec,
    /// Its pod addresses.
    pub pool: Mutex<AddressPool>,
}

/// Channels the watch dispatcher keeps for a worker.
pub struct WorkerHandle {
    /// Latest Pod object (`None`: gone from the API).
    pub pod: watch::Sender<Option<Pod>>,
    /// The task.
    pub task: JoinHandle<()>,
}

const RETRY: Duration = Duration::from_secs(2);
const IMAGE_RETRY: Duration = Duration::from_secs(5);
const PROBE_QUEUE: usize = 8;
const COMMAND_QUEUE: usize = 8;

/// Starts the worker of `pod` on `node`.
pub fn spawn(ctx: Arc<WorkerContext>, node: Arc<NodeContext>, pod: Pod) -> WorkerHandle {
    let (pod_tx, pod_rx) = watch::channel(Some(pod.clone()));
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (probe_tx, probe_rx) = mpsc::channel(PROBE_QUEUE);
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let paths = PodPaths::new(&ctx.config.pods_dir(), &namespace, &name, &uid);
    let policy =
        RestartPolicy::from_spec(pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()));
    let info = PodInfo {
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
        node: node.spec.name.clone(),
        phase: "Pending".into(),
        ..Default::default()
    };
    ctx.registry.add_pod(info.clone(), cmd_tx);
    let dark_rx = ctx
        .registry
        .dark_receiver(&node.spec.name)
        .unwrap_or_else(|| watch::channel(false).1);
    let worker = Worker {
        lifecycle: Lifecycle::new(policy, ctx.config.backoff),
        ctx,
        node,
        pod,
        pod_rx,
        pod_open: true,
        cmd_rx,
        dark_rx,
        probe_tx,
        probe_rx,
        namespace,
        name,
        uid,
        paths,
        ip: None,
        program: None,
        child: None,
        pid: None,
        run: 0,
        probe_task: None,
        readiness: None,
        start_time: Timestamp::now(),
        clock: ConditionClock::default(),
        last_reported: None,
        last_fingerprint: None,
        report_retry_at: None,
        next_start_at: Some(Instant::now()),
        kill_at: None,
        delete_retry_at: None,
        gone: false,
        frozen: false,
        info,
    };
    let task = tokio::spawn(worker.run());
    WorkerHandle { pod: pod_tx, task }
}

struct Worker {
    ctx: Arc<WorkerContext>,
    node: Arc<NodeContext>,
    lifecycle: Lifecycle,
    pod: Pod,
    pod_rx: watch::Receiver<Option<Pod>>,
    pod_open: bool,
    cmd_rx: mpsc::Receiver<PodCommand>,
    dark_rx: watch::Receiver<bool>,
    probe_tx: mpsc::Sender<(u64, bool)>,
    probe_rx: mpsc::Receiver<(u64, bool)>,
    namespace: String,
    name: String,
    uid: String,
    paths: PodPaths,
    ip: Option<Ipv4Addr>,
    program: Option<PathBuf>,
    child: Option<Child>,
    pid: Option<u32>,
    /// Incremented per process start; probe results of older runs are dropped.
    run: u64,
    probe_task: Option<JoinHandle<()>>,
    /// `None`: no readiness probe (ready while running).
    readiness: Option<Readiness>,
    start_time: Timestamp,
    clock: ConditionClock,
    last_reported: Option<serde_json::Value>,
    /// What the runner's own fields looked like in the last write.
    last_fingerprint: Option<status::Fingerprint>,
    report_retry_at: Option<Instant>,
    next_start_at: Option<Instant>,
    kill_at: Option<Instant>,
    delete_retry_at: Option<Instant>,
    /// The Pod vanished from the API.
    gone: bool,
    frozen: bool,
    info: PodInfo,
}

enum Flow {
    Continue,
    Exit,
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

fn earliest(times: &[Option<Instant>]) -> Option<Instant> {
    times.iter().flatten().min().copied()
}

impl Worker {
    async fn run(mut self) {
        tracing::info!(pod = %self.key(), node = %self.node.spec.name, "pod accepted");
        loop {
            if let Flow::Exit = self.act().await {
                break;
            }
            self.publish();
            let dark = *self.dark_rx.borrow();
            let deadline = if dark {
                earliest(&[self.kill_at])
            } else {
                earliest(&[
                    self.next_start_at.filter(|_| self.child.is_none()),
                    self.kill_at,
                    self.report_retry_at,
                    self.delete_retry_at,
                ])
            };
            let sleep = tokio::time::sleep_until(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                status = wait_child(&mut self.child) => self.on_exit(status),
                changed = self.pod_rx.changed(), if self.pod_open => match changed {
                    Ok(()) => {
                        let latest = self.pod_rx.borrow_and_update().clone();
                        match latest {
                            Some(pod) => self.on_pod(pod),
                            None => self.gone = true,
                        }
                    }
                    Err(_) => {
                        self.pod_open = false;
                        self.gone = true;
                    }
                },
                Some(cmd) = self.cmd_rx.recv() => self.on_command(cmd),
                Some((run, ok)) = self.probe_rx.recv() => {
                    let key = self.key();
                    if run == self.run && let Some(r) = self.readiness.as_mut() && r.record(ok) {
                        tracing::info!(pod = %key, ready = r.is_ready(), "readiness changed");
                    }
                }
                changed = self.dark_rx.changed() => if changed.is_err() { self.gone = true },
                _ = sleep => {}
            }
        }
        self.cleanup();
        tracing::info!(pod = %self.key(), "pod finished on this node");
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn deleting_in_api(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    /// Acts on the current facts.
    async fn act(&mut self) -> Flow {
        let now = Instant::now();
        if let Some(at) = self.kill_at
            && now >= at
        {
            self.kill_at = None;
            tracing::info!(pod = %self.key(), "grace period over: SIGKILL");
            self.signal(Sig::Kill);
        }
        if *self.dark_rx.borrow() {
            return Flow::Continue;
        }
        if self.gone {
            // Removed from the API without us (force delete): stop at once.
            if self.child.is_some() {
                if self.kill_at.is_none() {
                    self.signal(Sig::Cont);
                    self.signal(Sig::Kill);
                    self.kill_at = Some(now + Duration::from_secs(5));
                }
                return Flow::Continue;
            }
            return Flow::Exit;
        }
        if self.deleting_in_api() && !self.lifecycle.is_deleting() {
            self.next_start_at = None;
            if self.lifecycle.delete_requested() {
                let grace = self.grace();
                tracing::info!(pod = %self.key(), grace_s = grace.as_secs(), "pod deleted: SIGTERM");
                self.signal(Sig::Term);
                self.kill_at = Some(now + grace);
            }
        }
        if !self.lifecycle.is_deleting()
            && self.child.is_none()
            && self.next_start_at.is_some_and(|at| now >= at)
        {
            self.start().await;
        }
        self.report().await;
        if self.lifecycle.is_deleting()
            && self.child.is_none()
            && self.delete_retry_at.is_none_or(|at| now >= at)
        {
            return self.delete_from_api().await;
        }
        Flow::Continue
    }

    /// A new version of the Pod: if someone else changed the status the runner owns, write
    /// it again at the next report.
    fn on_pod(&mut self, pod: Pod) {
        if let (Some(ours), Some(theirs)) = (&self.last_fingerprint, pod.status.as_ref())
            && *ours != status::fingerprint(theirs)
        {
            self.last_reported = None;
        }
        self.pod = pod;
    }

    fn signal(&mut self, sig: Sig) {
        if let Some(pid) = self.pid.filter(|_| self.child.is_some()) {
            if let Err(e) = process::signal_group(pid, sig) {
                tracing::warn!(pod = %self.key(), error = %e, "signal");
            }
            match sig {
                Sig::Stop => self.frozen = true,
                Sig::Cont => self.frozen = false,
                _ => {}
            }
        }
    }

    fn on_command(&mut self, cmd: PodCommand) {
        tracing::info!(pod = %self.key(), ?cmd, "control command");
        match cmd {
            PodCommand::Freeze => self.signal(Sig::Stop),
            PodCommand::Thaw => self.signal(Sig::Cont),
            PodCommand::Kill => self.signal(Sig::Kill),
        }
    }

    fn on_exit(&mut self, status: std::io::Result<ExitStatus>) {
        let (code, signal) = match status {
            Ok(s) => process::exit_info(s),
            Err(e) => {
                tracing::warn!(pod = %self.key(), error = %e, "waiting for the process failed");
                (-1, None)
            }
        };
        self.child = None;
        self.frozen = false;
        self.kill_at = None;
        if let Some(pid) = self.pid {
            self.ctx.processes.remove(pid);
            // Stragglers the process left in its group go with it.
            let _ = process::signal_group(pid, Sig::Kill);
            remove_pid_file(&self.paths.pid, pid);
        }
        self.stop_probe();
        let decision = self.lifecycle.exited(code, signal, Timestamp::now());
        tracing::info!(pod = %self.key(), code, ?signal, ?decision, "process exited");
        self.next_start_at = match decision {
            Decision::Restart { after } => Some(Instant::now() + after),
            Decision::Done => None,
        };
    }

    fn stop_probe(&mut self) {
        if let Some(task) = self.probe_task.take() {
            task.abort();
        }
        if let Some(r) = self.readiness.as_mut() {
            *r = Readiness::new(1, 1);
        }
    }

    fn cannot_start(&mut self, reason: &str, message: String, retry: Duration) {
        tracing::warn!(pod = %self.key(), reason, %message, "cannot start container");
        self.lifecycle.cannot_start(reason, message);
        self.next_start_at = Some(Instant::now() + retry);
    }

    /// Prepares and starts the process.
    async fn start(&mut self) {
        let ip = match self.ip {
            Some(ip) => ip,
            None => {
                let allocated = self
                    .node
                    .pool
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .allocate();
                match allocated {
                    Ok(ip) => {
                        self.ip = Some(ip);
                        ip
                    }
                    Err(e) => return self.cannot_start("PodIPUnavailable", e.to_string(), RETRY),
                }
            }
        };
        let inputs = prepare::Inputs {
            client: &self.ctx.client,
            config: &self.ctx.config,
            pod: &self.pod,
            paths: &self.paths,
            placement: PodPlacement {
                pod_ip: ip,
                host_ip: self.node.spec.host_ip,
                node_name: &self.node.spec.name,
            },
            apiserver_url: &self.ctx.apiserver_url,
            base_env: &self.ctx.base_env,
        };
        let prepared = prepare::prepare(&inputs).await;
        if let Some(program) = prepared.program {
            self.program = Some(program);
        }
        let (plan, probe_spec) = match prepared.result {
            Ok(ok) => ok,
            Err(e) => {
                let retry = if e.is_image_error() {
                    IMAGE_RETRY
                } else {
                    RETRY
                };
                return self.cannot_start(e.reason(), e.to_string(), retry);
            }
        };
        let banner = format!(
            "start #{} of {} on {} ({ip}): {} {}",
            self.lifecycle.restart_count() + i32::from(self.lifecycle.restart_pending()),
            self.key(),
            self.node.spec.name,
            plan.program.display(),
            plan.args.join(" ")
        );
        let child = match process::spawn(&plan, &self.paths.log, &banner) {
            Ok(c) => c,
            Err(e) => return self.cannot_start("RunContainerError", e.to_string(), RETRY),
        };
        let Some(pid) = child.id() else {
            return self.cannot_start(
                "RunContainerError",
                "process exited before it was recorded".into(),
                RETRY,
            );
        };
        self.ctx.processes.insert(pid);
        if let Err(e) = std::fs::write(&self.paths.pid, format!("{pid}\n")) {
            tracing::warn!(pod = %self.key(), error = %e, "writing pid file");
        }
        self.child = Some(child);
        self.pid = Some(pid);
        self.next_start_at = None;
        self.run += 1;
        self.lifecycle.started(Timestamp::now());
        tracing::info!(pod = %self.key(), pid, %ip, "process started");
        self.start_probe(probe_spec, ip);
    }

    fn start_probe(&mut self, spec: Option<ProbeSpec>, ip: Ipv4Addr) {
        let Some(spec) = spec else {
            self.readiness = None;
            return;
        };
        self.readiness = Some(Readiness::new(
            spec.success_threshold,
            spec.failure_threshold,
        ));
        let tx = self.probe_tx.clone();
        let run = self.run;
        let key = self.key();
        self.probe_task = Some(tokio::spawn(async move {
            tokio::time::sleep(spec.initial_delay).await;
            loop {
                let result = probe::check(&spec.action, ip, spec.timeout).await;
                if let Err(reason) = &result {
                    tracing::debug!(pod = %key, %reason, "readiness probe failed");
                }
                if tx.send((run, result.is_ok())).await.is_err() {
                    return;
                }
                tokio::time::sleep(spec.period).await;
            }
        }));
    }

    fn ready(&self) -> bool {
        self.lifecycle.is_running() && self.readiness.as_ref().is_none_or(Readiness::is_ready)
    }

    /// Writes the status if it changed since the last write.
    async fn report(&mut self) {
        if self.report_retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let container = launch::first_container(&self.pod).ok();
        let program = self
            .program
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        let input = StatusInput {
            lifecycle: &self.lifecycle,
            ready: self.ready(),
            container_name: container.map_or("", |c| c.name.as_str()),
            image: container
                .and_then(|c| c.image.as_deref())
                .unwrap_or_default(),
            program: program.as_deref(),
            pid: self.pid,
            pod_ip: self.ip,
            host_ip: self.node.spec.host_ip,
            start_time: self.start_time,
        };
        let built = status::build(&input, &mut self.clock, Timestamp::now());
        let value = serde_json::to_value(&built).unwrap_or_default();
        if self.last_reported.as_ref() == Some(&value) {
            return;
        }
        match status::patch(&self.ctx.client, &self.namespace, &self.name, &built).await {
            Ok(()) => {
                self.last_reported = Some(value);
                self.last_fingerprint = Some(status::fingerprint(&built));
                self.report_retry_at = None;
                self.info.phase = self.lifecycle.phase().as_str().into();
                self.info.ready = built
                    .container_statuses
                    .as_ref()
                    .and_then(|c| c.first())
                    .is_some_and(|c| c.ready);
            }
            Err(status::StatusError::Patch {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {
                self.gone = true;
            }
            Err(e) => {
                tracing::warn!(pod = %self.key(), error = %e, "status report failed; retrying");
                self.report_retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// Removes the finished pod from the API (grace 0, only this incarnation).
    async fn delete_from_api(&mut self) -> Flow {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.name, &params).await {
            Ok(_) => Flow::Exit,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Flow::Exit,
            Err(e) => {
                tracing::warn!(pod = %self.key(), error = %e, "deleting pod failed; retrying");
                self.delete_retry_at = Some(Instant::now() + Duration::from_secs(1));
                Flow::Continue
            }
        }
    }

    fn publish(&mut self) {
        self.info.ip = self.ip;
        self.info.pid = self.pid.filter(|_| self.child.is_some());
        self.info.restarts = self.lifecycle.restart_count();
        self.info.frozen = self.frozen;
        self.ctx.registry.update_pod(&self.info);
    }

    fn cleanup(&mut self) {
        if let Some(pid) = self.pid.take() {
            self.ctx.processes.remove(pid);
            let _ = process::signal_group(pid, Sig::Kill);
            remove_pid_file(&self.paths.pid, pid);
        }
        self.stop_probe();
        if let Some(ip) = self.ip.take() {
            self.node
                .pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .release(ip);
        }
        if self.paths.dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.paths.dir)
        {
            tracing::warn!(pod = %self.key(), error = %e, "removing pod directory");
        }
        self.ctx.registry.remove_pod(&self.uid);
    }
}

/// Removes the pid file if it still names `pid` (a newer pod of the same name may own it).
fn remove_pid_file(path: &std::path::Path, pid: u32) {
    if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == pid.to_string()) {
        let _ = std::fs::remove_file(path);
    }
}

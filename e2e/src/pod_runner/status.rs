//! Pod status reporting: the pure builder that turns the lifecycle, readiness and addresses
//! into a `PodStatus` (phase, conditions with stable transition times, podIP/hostIP, the
//! container status with state/lastState/restartCount/ready), and the patch that writes it.
//!
//! The runner owns the whole status of pods on its nodes, so it writes it as a JSON merge patch
//! of `status` on the `status` subresource: fields it sets are replaced, others (the apiserver's
//! `qosClass`) are left alone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};

use super::lifecycle::{ContainerState, Lifecycle, Phase, Termination};

/// Errors writing a status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The API call failed.
    #[error("patching status of pod {namespace}/{name}: {source}")]
    Patch {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
}

/// Remembers when each condition last changed, so unchanged conditions keep their time.
#[derive(Debug, Clone, Default)]
pub struct ConditionClock {
    seen: BTreeMap<&'static str, (bool, Timestamp)>,
}

impl ConditionClock {
    /// Records `value` for `kind` at `now`; returns the condition's last transition time.
    pub fn observe(&mut self, kind: &'static str, value: bool, now: Timestamp) -> Timestamp {
        match self.seen.get(kind) {
            Some((v, at)) if *v == value => *at,
            _ => {
                self.seen.insert(kind, (value, now));
                now
            }
        }
    }
}

/// Everything the status shows besides the lifecycle.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// The container's lifecycle.
    pub lifecycle: &'a Lifecycle,
    /// Readiness from the probe (or running, without a probe).
    pub ready: bool,
    /// Container name.
    pub container_name: &'a str,
    /// Image as written in the spec.
    pub image: &'a str,
    /// The program the image maps to (shown as the image ID).
    pub program: Option<&'a str>,
    /// Pid of the current or last process (shown as the container ID).
    pub pid: Option<u32>,
    /// The pod's address, once allocated.
    pub pod_ip: Option<Ipv4Addr>,
    /// The node's address.
    pub host_ip: Ipv4Addr,
    /// When the node accepted the pod.
    pub start_time: Timestamp,
}

fn terminated(t: &Termination, container_id: Option<&String>) -> ApiState {
    ApiState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: Some(t.reason().into()),
            started_at: Some(Time(t.started_at)),
            finished_at: Some(Time(t.finished_at)),
            container_id: container_id.cloned(),
            message: None,
        }),
        ..Default::default()
    }
}

fn condition(
    kind: &'static str,
    value: bool,
    reason: Option<&str>,
    clock: &mut ConditionClock,
    now: Timestamp,
) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if value { "True" } else { "False" }.into(),
        last_transition_time: Some(Time(clock.observe(kind, value, now))),
        reason: if value { None } else { reason.map(Into::into) },
        ..Default::default()
    }
}

/// Builds the pod status at `now`.
pub fn build(input: &StatusInput<'_>, clock: &mut ConditionClock, now: Timestamp) -> PodStatus {
    let l = input.lifecycle;
    let container_id = input.pid.map(|p| format!("pod-runner://{p}"));
    let running = l.is_running();
    let ready = running && input.ready;
    let state = match l.state() {
        ContainerState::Waiting { reason, message } => ApiState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        ContainerState::Running { started_at } => ApiState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        ContainerState::Terminated(t) => terminated(t, container_id.as_ref()),
    };
    let container = ContainerStatus {
        name: input.container_name.into(),
        image: input.image.into(),
        image_id: input
            .program
            .map(|p| format!("pod-runner://{p}"))
            .unwrap_or_default(),
        container_id: container_id.clone(),
        ready,
        started: Some(running),
        restart_count: l.restart_count(),
        state: Some(state),
        last_state: Some(
            l.last_state()
                .map(|t| terminated(t, None))
                .unwrap_or_default(),
        ),
        ..Default::default()
    };
    let not_ready_reason = if l.phase().is_terminal() {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            input.pod_ip.is_some(),
            None,
            clock,
            now,
        ),
        condition("Initialized", true, None, clock, now),
        condition("Ready", ready, Some(not_ready_reason), clock, now),
        condition("ContainersReady", ready, Some(not_ready_reason), clock, now),
        condition("PodScheduled", true, None, clock, now),
    ];
    let ip = input.pod_ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(l.phase().as_str().into()),
        conditions: Some(conditions),
        host_ip: Some(input.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: input.host_ip.to_string(),
        }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(Time(input.start_time)),
        container_statuses: Some(vec![container]),
        ..Default::default()
    }
}

/// The parts of a pod status the runner owns and others may overwrite (the node lifecycle
/// controller sets Ready to False on a silent node): phase, condition values, pod IP and the
/// first container's readiness and restart count. When the API's copy differs from what the
/// runner last wrote, the runner writes again, as a kubelet's status manager does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    phase: Option<String>,
    conditions: Vec<(String, String)>,
    pod_ip: Option<String>,
    container: Option<(bool, i32)>,
}

/// The [`Fingerprint`] of a status.
pub fn fingerprint(status: &PodStatus) -> Fingerprint {
    let mut conditions: Vec<(String, String)> = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect();
    conditions.sort();
    Fingerprint {
        phase: status.phase.clone(),
        conditions,
        pod_ip: status.pod_ip.clone(),
        container: status
            .container_statuses
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| (c.ready, c.restart_count)),
    }
}

/// Whether `phase` is terminal in the API's spelling.
pub fn is_terminal(status: &PodStatus) -> bool {
    matches!(status.phase.as_deref(), Some(p) if p == Phase::Succeeded.as_str() || p == Phase::Failed.as_str())
}

/// Writes `status` to the pod's status subresource.
pub async fn patch(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &PodStatus,
) -> Result<(), StatusError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(drop)
        .map_err(|source| StatusError::Patch {
            namespace: namespace.into(),
            name: name.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_runner::lifecycle::{BackoffPolicy, RestartPolicy};

    fn t(sec: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + sec).unwrap()
    }

    fn input(l: &Lifecycle, ready: bool) -> StatusInput<'_> {
        StatusInput {
            lifecycle: l,
            ready,
            container_name: "node",
            image: "ghcr.io/switchboard/signaling-node:v1",
            program: Some("/bin/signaling-node"),
            pid: Some(42),
            pod_ip: Some(Ipv4Addr::new(127, 0, 1, 2)),
            host_ip: Ipv4Addr::new(127, 0, 1, 1),
            start_time: t(0),
        }
    }

    fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
    }

    #[test]
    fn running_and_ready_pod() {
        let mut l = Lifecycle::new(RestartPolicy::Always, BackoffPolicy::default());
        l.started(t(1));
        let mut clock = ConditionClock::default();
        let s = build(&input(&l, false), &mut clock, t(1));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ContainersNotReady")
        );
        assert_eq!(s.pod_ip.as_deref(), Some("127.0.1.2"));
        assert_eq!(s.host_ip.as_deref(), Some("127.0.1.1"));
        let s = build(&input(&l, true), &mut clock, t(2));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert!(c.ready);
        assert_eq!(c.container_id.as_deref(), Some("pod-runner://42"));
        assert_eq!(c.image_id, "pod-runner:///bin/signaling-node");
        assert!(c.state.as_ref().unwrap().running.is_some());
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(t(2))));
        assert_eq!(
            cond(&s, "Initialized").last_transition_time,
            Some(Time(t(1))),
            "unchanged keeps its time"
        );
    }

    #[test]
    fn crash_shows_termination_then_restart_count() {
        let mut l = Lifecycle::new(RestartPolicy::Always, BackoffPolicy::default());
        l.started(t(1));
        l.exited(0, Some(9), t(5));
        let mut clock = ConditionClock::default();
        let s = build(&input(&l, true), &mut clock, t(5));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert!(!c.ready, "a dead container is never ready");
        let term = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((term.exit_code, term.signal), (137, Some(9)));
        l.started(t(5));
        let s = build(&input(&l, false), &mut clock, t(5));
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.restart_count, 1);
        assert_eq!(
            c.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            137
        );
    }

    #[test]
    fn fingerprint_sees_a_foreign_ready_false() {
        let mut l = Lifecycle::new(RestartPolicy::Always, BackoffPolicy::default());
        l.started(t(1));
        let ours = build(&input(&l, true), &mut ConditionClock::default(), t(1));
        let mut theirs = ours.clone();
        assert_eq!(fingerprint(&ours), fingerprint(&theirs));
        for c in theirs.conditions.as_mut().unwrap() {
            if c.type_ == "Ready" {
                c.status = "False".into();
                c.reason = Some("NodeNotReady".into());
            }
        }
        assert_ne!(fingerprint(&ours), fingerprint(&theirs));
        // Fields the runner does not own do not matter.
        let mut other = ours.clone();
        other.qos_class = Some("BestEffort".into());
        assert_eq!(fingerprint(&ours), fingerprint(&other));
    }

    #[test]
    fn terminal_pod_reports_completed() {
        let mut l = Lifecycle::new(RestartPolicy::Never, BackoffPolicy::default());
        l.started(t(1));
        l.exited(0, None, t(2));
        let s = build(&input(&l, true), &mut ConditionClock::default(), t(2));
        assert!(is_terminal(&s));
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
    }
}

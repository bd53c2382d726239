//! Node registration and heartbeats: the Node object a runner node presents (capacity, Ready
//! condition, InternalIP, labels), its registration, and the loop that renews the node's Lease
//! in `kube-node-lease` every `lease_every` and re-posts the node status every `status_every`
//! — both paused while the node is dark, so the node lifecycle controller sees it go silent.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;

/// Namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Label every runner node carries.
pub const RUNNER_LABEL: &str = "switchboard.dev/pod-runner";
/// Lease duration written into node leases (what a kubelet writes).
const LEASE_SECONDS: i32 = 40;

/// Errors talking to the API about nodes.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An API call failed.
    #[error("{action} node {node}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// Node name.
        node: String,
        /// The cause.
        source: kube::Error,
    },
}

/// What a runner node looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node name (`runner-0`, …).
    pub name: String,
    /// The node's loopback address.
    pub host_ip: Ipv4Addr,
    /// CPU capacity (a Kubernetes quantity).
    pub cpu: String,
    /// Memory capacity.
    pub memory: String,
    /// Pod capacity.
    pub pods: String,
}

fn api_err<'a>(action: &'static str, node: &'a str) -> impl FnOnce(kube::Error) -> NodeError + 'a {
    move |source| NodeError::Api {
        action,
        node: node.to_string(),
        source,
    }
}

/// The Node object to create.
pub fn node_object(spec: &NodeSpec) -> Node {
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), spec.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
        ),
        (RUNNER_LABEL.to_string(), "true".to_string()),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The node's status: capacity, addresses, and conditions saying Ready since `ready_since`.
pub fn node_status(spec: &NodeSpec, ready_since: Timestamp, now: Timestamp) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(spec.cpu.clone())),
        ("memory".to_string(), Quantity(spec.memory.clone())),
        ("pods".to_string(), Quantity(spec.pods.clone())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]);
    let cond = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(ready_since)),
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: spec.host_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: spec.name.clone(),
            },
        ]),
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "pod-runner has sufficient memory available",
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "pod-runner has no disk pressure",
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "pod-runner has sufficient PID available",
            ),
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "pod-runner is posting ready status",
            ),
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            boot_id: format!("pod-runner-{}", spec.name),
            container_runtime_version: "pod-runner://0.1".into(),
            kernel_version: "linux".into(),
            kube_proxy_version: String::new(),
            kubelet_version: "v1.36.0-pod-runner".into(),
            machine_id: format!("pod-runner-{}", spec.name),
            operating_system: "linux".into(),
            os_image: "Switchboard pod runner".into(),
            system_uuid: format!("pod-runner-{}", spec.name),
            swap: None,
        }),
        ..Default::default()
    }
}

/// Creates the Node (or takes over an existing one of that name) and posts a Ready status.
/// Returns the node's uid (owner of its lease).
pub async fn register(client: &kube::Client, spec: &NodeSpec) -> Result<String, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let node = match api
        .get_opt(&spec.name)
        .await
        .map_err(api_err("reading", &spec.name))?
    {
        Some(existing) => existing,
        None => match api.create(&PostParams::default(), &node_object(spec)).await {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.code == 409 => api
                .get(&spec.name)
                .await
                .map_err(api_err("reading", &spec.name))?,
            Err(e) => return Err(api_err("creating", &spec.name)(e)),
        },
    };
    post_status(client, spec, Timestamp::now()).await?;
    Ok(node.metadata.uid.unwrap_or_default())
}

/// Posts the node status (Ready since `ready_since`).
pub async fn post_status(
    client: &kube::Client,
    spec: &NodeSpec,
    ready_since: Timestamp,
) -> Result<(), NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let body = serde_json::json!({ "status": node_status(spec, ready_since, Timestamp::now()) });
    api.patch_status(&spec.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(drop)
        .map_err(api_err("posting status of", &spec.name))
}

/// Renews (or creates) the node's lease.
pub async fn renew_lease(
    client: &kube::Client,
    spec: &NodeSpec,
    node_uid: &str,
) -> Result<(), NodeError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let body = serde_json::json!({ "spec": { "renewTime": now, "holderIdentity": spec.name, "leaseDurationSeconds": LEASE_SECONDS } });
    match api
        .patch(&spec.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(spec.name.clone()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: spec.name.clone(),
                        uid: node_uid.into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(spec.name.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(api_err("creating lease of", &spec.name)(e)),
            }
        }
        Err(e) => Err(api_err("renewing lease of", &spec.name)(e)),
    }
}

/// Heartbeat intervals.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// Lease renewal period.
    pub lease_every: Duration,
    /// Node status period.
    pub status_every: Duration,
}

/// Renews the lease and posts status until the process ends; silent while `dark` is true, and
/// posts a fresh Ready status (new transition time) as soon as the node resumes.
pub async fn heartbeat_loop(
    client: kube::Client,
    spec: NodeSpec,
    node_uid: String,
    beat: Heartbeat,
    mut dark: watch::Receiver<bool>,
) {
    let mut ready_since = Timestamp::now();
    let mut last_status = tokio::time::Instant::now();
    let mut was_dark = false;
    loop {
        let is_dark = *dark.borrow_and_update();
        if is_dark {
            was_dark = true;
        } else {
            if let Err(e) = renew_lease(&client, &spec, &node_uid).await {
                tracing::warn!(error = %e, "node lease");
            }
            if was_dark || last_status.elapsed() >= beat.status_every {
                if was_dark {
                    ready_since = Timestamp::now();
                    tracing::info!(node = %spec.name, "node resumed: posting Ready");
                }
                match post_status(&client, &spec, ready_since).await {
                    Ok(()) => {
                        last_status = tokio::time::Instant::now();
                        was_dark = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "node status"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(beat.lease_every) => {}
            changed = dark.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            name: "runner-0".into(),
            host_ip: Ipv4Addr::new(127, 0, 1, 1),
            cpu: "8".into(),
            memory: "16Gi".into(),
            pods: "110".into(),
        }
    }

    #[test]
    fn node_object_and_status_look_like_a_kubelet_node() {
        let node = node_object(&spec());
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "runner-0");
        assert_eq!(labels[RUNNER_LABEL], "true");
        let since = Timestamp::from_second(1_700_000_000).unwrap();
        let now = Timestamp::from_second(1_700_000_010).unwrap();
        let status = node_status(&spec(), since, now);
        assert_eq!(
            status.capacity.as_ref().unwrap()["pods"],
            Quantity("110".into())
        );
        let ready = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_heartbeat_time, Some(Time(now)));
        assert_eq!(ready.last_transition_time, Some(Time(since)));
        let internal = &status.addresses.as_ref().unwrap()[0];
        assert_eq!(
            (internal.type_.as_str(), internal.address.as_str()),
            ("InternalIP", "127.0.1.1")
        );
    }
}

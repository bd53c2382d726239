//! The runner's shared table of nodes and pods: the dark switch of every node, the command
//! channel and latest facts of every pod worker. The control API reads and drives it; workers
//! keep their row current. Plain mutex, never held across an await.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// Commands the control surface sends to a pod worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodCommand {
    /// SIGSTOP the pod's processes.
    Freeze,
    /// SIGCONT them.
    Thaw,
    /// SIGKILL them (the restart policy then applies).
    Kill,
}

/// Facts about a pod, as `/state` shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Node.
    pub node: String,
    /// Pod address.
    pub ip: Option<Ipv4Addr>,
    /// Pid (= process group) of the running process.
    pub pid: Option<u32>,
    /// Phase as reported.
    pub phase: String,
    /// Readiness as reported.
    pub ready: bool,
    /// Restart count.
    pub restarts: i32,
    /// Whether the processes are frozen (SIGSTOP).
    pub frozen: bool,
}

/// Facts about a node, as `/state` shows them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Node address.
    pub host_ip: Ipv4Addr,
    /// Whether heartbeats and status updates are stopped.
    pub dark: bool,
}

/// Everything `/state` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Nodes in index order.
    pub nodes: Vec<NodeInfo>,
    /// Pods sorted by namespace and name.
    pub pods: Vec<PodInfo>,
}

struct NodeEntry {
    host_ip: Ipv4Addr,
    dark: watch::Sender<bool>,
}

struct PodEntry {
    commands: mpsc::Sender<PodCommand>,
    info: PodInfo,
}

/// The shared table.
#[derive(Default)]
pub struct Registry {
    nodes: Mutex<BTreeMap<String, NodeEntry>>,
    pods: Mutex<BTreeMap<String, PodEntry>>,
}

/// Errors resolving a control target.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// No node or pod has that name.
    #[error("no node or pod named {0:?} on this runner")]
    NotFound(String),
    /// A bare pod name matches pods in several namespaces.
    #[error("pod name {0:?} is ambiguous; write it as namespace/name")]
    Ambiguous(String),
}

/// What a control target names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A node by name.
    Node(String),
    /// A pod by uid.
    Pod(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// Adds a node; returns the receiver side of its dark switch.
    pub fn add_node(&self, name: &str, host_ip: Ipv4Addr) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        lock(&self.nodes).insert(name.to_string(), NodeEntry { host_ip, dark: tx });
        rx
    }

    /// A fresh receiver of the node's dark switch.
    pub fn dark_receiver(&self, node: &str) -> Option<watch::Receiver<bool>> {
        lock(&self.nodes).get(node).map(|n| n.dark.subscribe())
    }

    /// Turns a node dark or back on; returns false for an unknown node.
    pub fn set_dark(&self, node: &str, dark: bool) -> bool {
        match lock(&self.nodes).get(node) {
            Some(n) => {
                n.dark.send_replace(dark);
                true
            }
            None => false,
        }
    }

    /// Registers a pod worker.
    pub fn add_pod(&self, info: PodInfo, commands: mpsc::Sender<PodCommand>) {
        lock(&self.pods).insert(info.uid.clone(), PodEntry { commands, info });
    }

    /// Updates a pod's facts.
    pub fn update_pod(&self, info: &PodInfo) {
        if let Some(entry) = lock(&self.pods).get_mut(&info.uid) {
            entry.info.clone_from(info);
        }
    }

    /// Forgets a pod.
    pub fn remove_pod(&self, uid: &str) {
        lock(&self.pods).remove(uid);
    }

    /// Resolves `node`, `namespace/pod` or a unique bare pod name.
    pub fn resolve(&self, target: &str) -> Result<Target, TargetError> {
        if lock(&self.nodes).contains_key(target) {
            return Ok(Target::Node(target.to_string()));
        }
        let pods = lock(&self.pods);
        let matches: Vec<&PodInfo> = pods
            .values()
            .map(|p| &p.info)
            .filter(|p| match target.split_once('/') {
                Some((ns, name)) => p.namespace == ns && p.name == name,
                None => p.name == target,
            })
            .collect();
        match matches.as_slice() {
            [] => Err(TargetError::NotFound(target.to_string())),
            [one] => Ok(Target::Pod(one.uid.clone())),
            // Same namespace/name twice: an old incarnation still terminating; take the newest
            // (the one that is not terminal).
            many if many.iter().all(|p| p.namespace == many[0].namespace) => Ok(Target::Pod(
                many.iter()
                    .find(|p| p.phase == "Running" || p.phase == "Pending")
                    .unwrap_or(&many[0])
                    .uid
                    .clone(),
            )),
            _ => Err(TargetError::Ambiguous(target.to_string())),
        }
    }

    /// Command senders of a node's pods (or of one pod).
    pub fn senders(&self, target: &Target) -> Vec<mpsc::Sender<PodCommand>> {
        let pods = lock(&self.pods);
        match target {
            Target::Node(node) => pods
                .values()
                .filter(|p| &p.info.node == node)
                .map(|p| p.commands.clone())
                .collect(),
            Target::Pod(uid) => pods
                .get(uid)
                .map(|p| p.commands.clone())
                .into_iter()
                .collect(),
        }
    }

    /// A snapshot for `/state`.
    pub fn state(&self) -> State {
        let nodes = lock(&self.nodes)
            .iter()
            .map(|(name, n)| NodeInfo {
                name: name.clone(),
                host_ip: n.host_ip,
                dark: *n.dark.borrow(),
            })
            .collect();
        let mut pods: Vec<PodInfo> = lock(&self.pods).values().map(|p| p.info.clone()).collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        State { nodes, pods }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, uid: &str) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
            node: "runner-0".into(),
            phase: "Running".into(),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_nodes_and_pods() {
        let r = Registry::default();
        let mut dark = r.add_node("runner-0", Ipv4Addr::new(127, 0, 1, 1));
        let (tx, _rx) = mpsc::channel(1);
        r.add_pod(pod("a", "web", "u1"), tx.clone());
        r.add_pod(pod("b", "web", "u2"), tx.clone());
        r.add_pod(pod("a", "db", "u3"), tx);
        assert_eq!(r.resolve("runner-0"), Ok(Target::Node("runner-0".into())));
        assert_eq!(r.resolve("a/web"), Ok(Target::Pod("u1".into())));
        assert_eq!(r.resolve("db"), Ok(Target::Pod("u3".into())));
        assert_eq!(r.resolve("web"), Err(TargetError::Ambiguous("web".into())));
        assert_eq!(r.resolve("nope"), Err(TargetError::NotFound("nope".into())));
        assert_eq!(r.senders(&Target::Node("runner-0".into())).len(), 3);
        assert!(r.set_dark("runner-0", true));
        assert!(*dark.borrow_and_update());
        assert!(!r.set_dark("runner-9", true));
        let state = r.state();
        assert!(state.nodes[0].dark);
        assert_eq!(
            state
                .pods
                .iter()
                .map(|p| p.uid.as_str())
                .collect::<Vec<_>>(),
            vec!["u3", "u1", "u2"]
        );
        r.remove_pod("u3");
        assert_eq!(r.resolve("db"), Err(TargetError::NotFound("db".into())));
    }
}

//! The pod watch of one runner node: a watcher on pods with `spec.nodeName=<node>` that starts a
//! worker per pod (by uid), forwards every new version of the Pod to it, and tells it when the
//! Pod is gone (including pods deleted while the watch was re-listing). Terminal pods from
//! before the runner started are left alone, as a kubelet leaves them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};

use super::worker::{self, NodeContext, WorkerContext, WorkerHandle};

/// Most finished uids remembered (so late events do not start a finished pod again).
const FINISHED_MEMORY: usize = 4096;

struct Dispatcher {
    ctx: Arc<WorkerContext>,
    node: Arc<NodeContext>,
    workers: HashMap<String, WorkerHandle>,
    finished: HashSet<String>,
    seen_in_relist: HashSet<String>,
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Dispatcher {
    fn prune(&mut self) {
        let done: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.task.is_finished())
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in done {
            self.workers.remove(&uid);
            if self.finished.len() >= FINISHED_MEMORY {
                self.finished.clear();
            }
            self.finished.insert(uid);
        }
    }

    fn apply(&mut self, pod: Pod) {
        self.prune();
        let uid = uid(&pod);
        if uid.is_empty() || self.finished.contains(&uid) {
            return;
        }
        if let Some(w) = self.workers.get(&uid) {
            w.pod.send_replace(Some(pod));
            return;
        }
        if is_terminal(&pod) {
            if pod.metadata.deletion_timestamp.is_some() {
                // Finished before this runner started and now deleted: just let it go.
                tokio::spawn(delete_now(self.ctx.client.clone(), pod));
            }
            return;
        }
        let handle = worker::spawn(self.ctx.clone(), self.node.clone(), pod);
        self.workers.insert(uid, handle);
    }

    fn delete(&mut self, pod: &Pod) {
        let uid = uid(pod);
        if let Some(w) = self.workers.get(&uid) {
            w.pod.send_replace(None);
        }
        self.finished.remove(&uid);
    }

    fn relist_started(&mut self) {
        self.seen_in_relist.clear();
    }

    fn relist_done(&mut self) {
        for (uid, w) in &self.workers {
            if !self.seen_in_relist.contains(uid) {
                w.pod.send_replace(None);
            }
        }
    }
}

async fn delete_now(client: kube::Client, pod: Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    if let Err(e) = api.delete(&name, &params).await {
        tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "deleting finished pod");
    }
}

/// Watches the node's pods until the process ends.
pub async fn run(ctx: Arc<WorkerContext>, node: Arc<NodeContext>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", node.spec.name));
    let mut dispatcher = Dispatcher {
        ctx,
        node: node.clone(),
        workers: HashMap::new(),
        finished: HashSet::new(),
        seen_in_relist: HashSet::new(),
    };
    let mut events = watcher(api, config).default_backoff().boxed();
    loop {
        match events.try_next().await {
            Ok(Some(event)) => match event {
                watcher::Event::Init => dispatcher.relist_started(),
                watcher::Event::InitApply(pod) => {
                    dispatcher.seen_in_relist.insert(uid(&pod));
                    dispatcher.apply(pod);
                }
                watcher::Event::InitDone => dispatcher.relist_done(),
                watcher::Event::Apply(pod) => dispatcher.apply(pod),
                watcher::Event::Delete(pod) => dispatcher.delete(&pod),
            },
            Ok(None) => {
                tracing::warn!(node = %node.spec.name, "pod watch ended");
                return;
            }
            Err(e) => {
                tracing::warn!(node = %node.spec.name, error = %e, "pod watch error (retrying)")
            }
        }
    }
}

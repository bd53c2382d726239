//! The plugin's Kubernetes API calls: kubeconfig loading like kubectl (`KUBECONFIG`,
//! `--kubeconfig`, `--context`, `-n`), reads of the cluster's objects and the three kinds of
//! writes (rollout spec, drain annotation, move request annotation), all as JSON merge
//! patches with field manager [`super::FIELD_MANAGER`].

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};

use super::weights::Weights;
use super::{FIELD_MANAGER, PluginError};
use crate::controller::cluster::shards::shard_name;
use crate::controller::labels::{CLUSTER, DRAIN, MOVE_REQUESTED, MOVE_TO, ROLLOUT_REQUEST};
use crate::crd::{ProtocolRollout, RolloutRequest, RoomShard, SignalingCluster};

/// How to reach the API server.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A kubeconfig file (else `KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The context to use (else the current one).
    pub context: Option<String>,
    /// The namespace (else the context's, else `default`).
    pub namespace: Option<String>,
}

/// A connection to one API server and namespace.
#[derive(Clone)]
pub struct Session {
    client: Client,
    /// The namespace every command works in.
    pub namespace: String,
    /// The API server URL (for error messages).
    pub url: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("namespace", &self.namespace)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Loads the kubeconfig and builds a client (no request is made yet).
pub async fn connect(options: &ConnectOptions) -> Result<Session, PluginError> {
    let load = KubeConfigOptions {
        context: options.context.clone(),
        cluster: None,
        user: None,
    };
    let config = match &options.kubeconfig {
        Some(path) => {
            let file =
                Kubeconfig::read_from(path).map_err(|e| PluginError::Kubeconfig(e.to_string()))?;
            Config::from_custom_kubeconfig(file, &load).await
        }
        None => Config::from_kubeconfig(&load).await,
    };
    let mut config = config.map_err(|e| PluginError::Kubeconfig(e.to_string()))?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| PluginError::Kubeconfig(e.to_string()))?;
    Ok(Session {
        client,
        namespace,
        url,
    })
}

impl Session {
    fn error(&self, action: &str, error: kube::Error) -> PluginError {
        match error {
            kube::Error::Api(status) => PluginError::Api {
                action: action.to_string(),
                message: status.message.clone(),
            },
            kube::Error::HyperError(e) => PluginError::Unreachable {
                url: self.url.clone(),
                reason: e.to_string(),
            },
            kube::Error::Service(e) => PluginError::Unreachable {
                url: self.url.clone(),
                reason: e.to_string(),
            },
            other => PluginError::Api {
                action: action.to_string(),
                message: other.to_string(),
            },
        }
    }

    fn not_found(error: &kube::Error) -> bool {
        matches!(error, kube::Error::Api(status) if status.code == 404)
    }

    /// Every SignalingCluster of the namespace (a 404 here means the CRDs are missing).
    pub async fn clusters(&self) -> Result<Vec<SignalingCluster>, PluginError> {
        let api: Api<SignalingCluster> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.list(&ListParams::default()).await {
            Ok(list) => Ok(list.items),
            Err(e) if Self::not_found(&e) => Err(PluginError::CrdsMissing),
            Err(e) => Err(self.error("listing SignalingClusters", e)),
        }
    }

    /// The named cluster, or the namespace's only one.
    pub async fn cluster(&self, name: Option<&str>) -> Result<SignalingCluster, PluginError> {
        let mut all = self.clusters().await?;
        let existing: Vec<String> = all.iter().map(ResourceExt::name_any).collect();
        if all.is_empty() {
            return Err(PluginError::NoClusters(self.namespace.clone()));
        }
        let index = match name {
            Some(name) => all
                .iter()
                .position(|c| c.name_any() == name)
                .ok_or_else(|| PluginError::ClusterNotFound {
                    namespace: self.namespace.clone(),
                    name: name.to_string(),
                    existing: existing.clone(),
                })?,
            None if all.len() == 1 => 0,
            None => {
                return Err(PluginError::ClusterAmbiguous {
                    namespace: self.namespace.clone(),
                    existing,
                });
            }
        };
        Ok(all.swap_remove(index))
    }

    /// The cluster's signaling-node pods, by name.
    pub async fn pods(&self, cluster: &str) -> Result<Vec<Pod>, PluginError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().labels(&format!("{CLUSTER}={cluster}"));
        let mut pods = api
            .list(&params)
            .await
            .map_err(|e| self.error("listing pods", e))?
            .items;
        pods.sort_by_key(ResourceExt::name_any);
        Ok(pods)
    }

    /// The cluster's RoomShards, by index.
    pub async fn shards(&self, cluster: &str) -> Result<Vec<RoomShard>, PluginError> {
        let api: Api<RoomShard> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().labels(&format!("{CLUSTER}={cluster}"));
        let mut shards: Vec<RoomShard> = api
            .list(&params)
            .await
            .map_err(|e| self.error("listing RoomShards", e))?
            .items
            .into_iter()
            .filter(|s| s.spec.cluster == cluster)
            .collect();
        shards.sort_by_key(|s| s.spec.index);
        Ok(shards)
    }

    /// The ProtocolRollout of the cluster (the oldest when several refer to it).
    pub async fn rollout(&self, cluster: &str) -> Result<Option<ProtocolRollout>, PluginError> {
        let api: Api<ProtocolRollout> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| self.error("listing ProtocolRollouts", e))?;
        Ok(list
            .items
            .into_iter()
            .filter(|r| r.spec.cluster_ref == cluster)
            .min_by_key(|r| (r.metadata.creation_timestamp.clone(), r.name_any())))
    }

    /// Like [`Session::rollout`] but an error when there is none.
    pub async fn require_rollout(&self, cluster: &str) -> Result<ProtocolRollout, PluginError> {
        self.rollout(cluster)
            .await?
            .ok_or_else(|| PluginError::NoRollout {
                namespace: self.namespace.clone(),
                cluster: cluster.to_string(),
            })
    }

    /// Writes new weights and/or the pause flag, failing if the rollout changed since it was
    /// read (the resourceVersion is part of the patch).
    pub async fn patch_rollout(
        &self,
        rollout: &ProtocolRollout,
        weights: Option<&Weights>,
        paused: Option<bool>,
    ) -> Result<ProtocolRollout, PluginError> {
        let mut spec = serde_json::Map::new();
        if let Some(weights) = weights {
            let mut versions = rollout.spec.versions.clone();
            for version in &mut versions {
                if let Some((_, w)) = weights.iter().find(|(n, _)| *n == version.name) {
                    version.weight = *w;
                }
            }
            spec.insert("versions".into(), serde_json::json!(versions));
        }
        if let Some(paused) = paused {
            spec.insert("paused".into(), serde_json::json!(paused));
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": rollout.resource_version()},
            "spec": spec,
        });
        let api: Api<ProtocolRollout> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(
            &rollout.name_any(),
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| self.error("the ProtocolRollout change", e))
    }

    /// Puts `request` on the rollout (the annotation the operator answers in
    /// `status.lastRequest`); the spec is not touched, so GitOps does not revert it.
    pub async fn request_rollout(
        &self,
        rollout: &ProtocolRollout,
        request: &RolloutRequest,
    ) -> Result<(), PluginError> {
        let value = serde_json::to_string(request).map_err(|e| PluginError::Api {
            action: "the rollout request".into(),
            message: e.to_string(),
        })?;
        let patch = serde_json::json!({"metadata": {"annotations": {ROLLOUT_REQUEST: value}}});
        let api: Api<ProtocolRollout> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(&rollout.name_any(), &merge_params(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| self.error("the rollout request", e))
    }

    /// One rollout by name.
    pub async fn rollout_named(&self, name: &str) -> Result<ProtocolRollout, PluginError> {
        let api: Api<ProtocolRollout> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get(name)
            .await
            .map_err(|e| self.error("reading the ProtocolRollout", e))
    }

    /// The API server's version (`major.minor`, git version).
    pub async fn server_version(&self) -> Result<String, PluginError> {
        self.client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .map_err(|e| self.error("the version request", e))
    }

    /// Sets (`true`) or removes (`false`) the drain annotation of a pod.
    pub async fn set_drain(&self, pod: &str, drain: bool) -> Result<(), PluginError> {
        let value = if drain {
            serde_json::json!("true")
        } else {
            serde_json::Value::Null
        };
        let patch = serde_json::json!({"metadata": {"annotations": {DRAIN: value}}});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(pod, &merge_params(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| self.error("the drain annotation", e))
    }

    /// Requests a move of `shard` (request id `id`, optional target node).
    pub async fn request_move(
        &self,
        cluster: &str,
        shard: u32,
        id: &str,
        to: Option<&str>,
    ) -> Result<(), PluginError> {
        let to = to.map_or(serde_json::Value::Null, |t| serde_json::json!(t));
        let patch =
            serde_json::json!({"metadata": {"annotations": {MOVE_REQUESTED: id, MOVE_TO: to}}});
        let api: Api<RoomShard> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch(
            &shard_name(cluster, shard),
            &merge_params(),
            &Patch::Merge(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| self.error("the move request", e))
    }

    /// One pod of the namespace, if it exists.
    pub async fn pod(&self, name: &str) -> Result<Option<Pod>, PluginError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get_opt(name)
            .await
            .map_err(|e| self.error("reading the pod", e))
    }

    /// One RoomShard.
    pub async fn shard(&self, cluster: &str, shard: u32) -> Result<RoomShard, PluginError> {
        let api: Api<RoomShard> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get(&shard_name(cluster, shard))
            .await
            .map_err(|e| self.error("reading the RoomShard", e))
    }
}

fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

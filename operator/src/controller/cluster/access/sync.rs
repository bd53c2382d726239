//! I/O of client access: applies the per-node Services (and fills the node ports they got into
//! the URLs of pods about to be created), the Ingress objects and the checked certificate copy,
//! and removes the ones no pod or setting needs any more.
//!
//! Reconciles are frequent (every membership or ack change triggers one), so each object
//! carries the hash of what was applied ([`labels::APPLIED_HASH`]) and is applied again only
//! when the desired object's hash differs: one list per kind per pass, writes only for changes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::cert::{self, TlsProblem};
use super::objects::{
    self, CLIENT_TLS, ENTRY, NODE_ACCESS, NodePod, node_service, service_node_port, tls_copy,
};
use super::{AccessPlan, tls_copy_name};
use crate::controller::cluster::pods::{advertised_url, pod_index, set_node_port};
use crate::controller::cluster::{Identity, identity};
use crate::controller::labels::{self, FIELD_MANAGER, selector_labels, selector_string};
use crate::controller::{Error, Result};
use crate::crd::SignalingCluster;

/// What the certificate check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsState {
    /// The copy already holds the Secret's valid certificate.
    Current,
    /// The copy was (re)written with the Secret's valid certificate.
    Updated,
    /// The Secret's certificate is not used; the copy (last good) stays.
    Refused(TlsProblem),
}

/// What client access looks like after a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessReport {
    /// The entry URL.
    pub entry_url: String,
    /// Nodes with their own URL objects.
    pub nodes: u32,
    /// The certificate, when clientAccess has tls.
    pub tls: Option<TlsState>,
}

fn node_pod(cluster: &str, pod: &Pod) -> Option<NodePod> {
    let name = pod.name_any();
    let version = pod.labels().get(labels::VERSION)?.clone();
    let index = pod_index(cluster, &version, &name)?;
    Some(NodePod {
        name,
        version,
        index,
    })
}

async fn apply<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("name"))?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(object)).await?)
}

/// `object` with the hash of itself in [`labels::APPLIED_HASH`].
fn hashed<K: Resource + Serialize>(mut object: K) -> Result<K> {
    let hash = labels::fnv1a(&serde_json::to_vec(&object)?);
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::APPLIED_HASH.into(), hash);
    Ok(object)
}

/// Applies `desired` unless `existing` already carries its hash; returns the object as the
/// API has it.
async fn apply_changed<K>(api: &Api<K>, desired: K, existing: Option<&K>) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let desired = hashed(desired)?;
    let hash_of = |o: &K| o.annotations().get(labels::APPLIED_HASH).cloned();
    match existing {
        Some(current) if hash_of(current) == hash_of(&desired) => Ok(current.clone()),
        _ => apply(api, &desired).await,
    }
}

/// The objects of `api` labelled for `cluster` with `component`, by name.
async fn list<K>(api: &Api<K>, cluster: &str, component: &str) -> Result<BTreeMap<String, K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut selector = selector_labels(cluster);
    selector.insert("app.kubernetes.io/component".into(), component.into());
    let params = ListParams::default().labels(&selector_string(&selector));
    Ok(api
        .list(&params)
        .await?
        .items
        .into_iter()
        .map(|o| (o.name_any(), o))
        .collect())
}

/// Deletes the objects of `existing` whose names are not in `keep`.
async fn prune<K>(
    api: &Api<K>,
    existing: &BTreeMap<String, K>,
    keep: &BTreeSet<String>,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    for name in existing.keys() {
        if keep.contains(name) {
            continue;
        }
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(kind = %K::kind(&()), %name, "removed client-access object no longer needed")
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Applies everything `plan` needs for the pods that exist and those in `create` (whose URLs
/// get their node ports here), removes what is no longer needed and checks the certificate.
pub async fn sync(
    client: &Client,
    cluster: &SignalingCluster,
    plan: &AccessPlan,
    existing: &[Pod],
    create: &mut [Pod],
) -> Result<AccessReport> {
    let id = identity(cluster)?;
    let services: Api<Service> = Api::namespaced(client.clone(), &id.namespace);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &id.namespace);

    let mut nodes: Vec<(NodePod, Option<i32>)> = existing
        .iter()
        .filter_map(|pod| {
            let pinned = pod
                .annotations()
                .get(labels::NODE_PORT)
                .and_then(|p| p.parse().ok());
            Some((node_pod(&id.name, pod)?, pinned))
        })
        .collect();
    let first_new = nodes.len();
    nodes.extend(
        create
            .iter()
            .filter_map(|pod| Some((node_pod(&id.name, pod)?, None))),
    );

    let existing_services = list(&services, &id.name, NODE_ACCESS).await?;
    let mut node_ports: BTreeMap<String, i32> = BTreeMap::new();
    if plan.node_services.is_some() {
        for (pod, pinned) in &nodes {
            let desired = node_service(&id, plan, cluster.spec.port, pod, *pinned);
            let current = existing_services.get(&pod.name);
            let applied = apply_changed(&services, desired, current).await?;
            if let Some(port) = service_node_port(&applied) {
                node_ports.insert(pod.name.clone(), port);
            }
        }
    }
    for pod in create.iter_mut() {
        let name = pod.name_any();
        let needs_port = advertised_url(pod).is_some_and(|u| u.contains("{nodePort}"));
        match (needs_port, node_ports.get(&name)) {
            (false, _) => {}
            (true, Some(port)) => set_node_port(pod, *port),
            (true, None) => {
                return Err(Error::InvalidSpec(format!(
                    "the Service of pod {name} has no node port for its URL"
                )));
            }
        }
    }

    let mut existing_ingresses = list(&ingresses, &id.name, NODE_ACCESS).await?;
    existing_ingresses.extend(list(&ingresses, &id.name, ENTRY).await?);
    let mut ingress_names = BTreeSet::new();
    let mut wanted: Vec<Ingress> = objects::entry_ingress(&id, plan).into_iter().collect();
    for (pod, _) in &nodes {
        wanted.extend(objects::node_ingress(&id, plan, pod).map_err(Error::ClientAccess)?);
    }
    for ingress in wanted {
        let name = ingress.name_any();
        apply_changed(&ingresses, ingress, existing_ingresses.get(&name)).await?;
        ingress_names.insert(name);
    }

    let node_names: BTreeSet<String> = if plan.node_services.is_some() {
        nodes.iter().map(|(p, _)| p.name.clone()).collect()
    } else {
        BTreeSet::new()
    };
    prune(&services, &existing_services, &node_names).await?;
    prune(&ingresses, &existing_ingresses, &ingress_names).await?;

    let tls = match &plan.tls {
        Some(tls) => {
            let pods: Vec<NodePod> = nodes.iter().map(|(p, _)| p.clone()).collect();
            Some(sync_certificate(client, &id, plan, &tls.secret_name, &pods).await?)
        }
        None => {
            remove_certificate(client, &id).await?;
            None
        }
    };
    tracing::debug!(
        nodes = nodes.len(),
        new = nodes.len() - first_new,
        "client-access objects applied"
    );
    Ok(AccessReport {
        entry_url: plan.entry_url.clone(),
        nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
        tls,
    })
}

async fn sync_certificate(
    client: &Client,
    id: &Identity,
    plan: &AccessPlan,
    secret: &str,
    pods: &[NodePod],
) -> Result<TlsState> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &id.namespace);
    let source = secrets.get_opt(secret).await?;
    let hosts = objects::tls_hosts(id, plan, pods);
    let pair = match cert::check(
        secret,
        source.as_ref().and_then(|s| s.data.as_ref()),
        &hosts,
    ) {
        Ok(pair) => pair,
        Err(problem) => return Ok(TlsState::Refused(problem)),
    };
    let desired = tls_copy(id, &pair);
    let current = secrets.get_opt(&tls_copy_name(&id.name)).await?;
    if current.is_some_and(|c| c.data == desired.data) {
        return Ok(TlsState::Current);
    }
    apply(&secrets, &desired).await?;
    Ok(TlsState::Updated)
}

async fn remove_certificate(client: &Client, id: &Identity) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &id.namespace);
    let existing = list(&secrets, &id.name, CLIENT_TLS).await?;
    prune(&secrets, &existing, &BTreeSet::new()).await
}

/// Removes every client-access object of `cluster` (clientAccess was unset).
pub async fn remove(client: &Client, cluster: &SignalingCluster) -> Result<()> {
    let id = identity(cluster)?;
    let services: Api<Service> = Api::namespaced(client.clone(), &id.namespace);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &id.namespace);
    let none = BTreeSet::new();
    prune(
        &services,
        &list(&services, &id.name, NODE_ACCESS).await?,
        &none,
    )
    .await?;
    let mut existing = list(&ingresses, &id.name, NODE_ACCESS).await?;
    existing.extend(list(&ingresses, &id.name, ENTRY).await?);
    prune(&ingresses, &existing, &none).await?;
    remove_certificate(client, &id).await
}

/// Whether `cluster`'s status says it had client access (so unsetting it has objects to remove).
pub fn had_client_access(cluster: &SignalingCluster) -> bool {
    cluster.status.as_ref().is_some_and(|s| {
        s.entry_url.is_some()
            || s.conditions
                .iter()
                .any(|c| c.type_ == super::CLIENT_ACCESS_READY)
    })
}

//! Custom resource types of `switchboard.dev/v1alpha1` and their CRD manifests.
//!
//! The CRD YAML in `crds/` is generated from these types by the `crdgen` binary
//! ([`crd_yaml`]); CI compares the two, so edit the types and regenerate.

mod client_access;
// kube's `printcolumn(type_ = "string", ...)` lists repeat keys that clippy mistakes for
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
mod protocol_rollout;
#[allow(clippy::duplicated_attributes)]
mod room_shard;
#[allow(clippy::duplicated_attributes)]
mod signaling_cluster;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use client_access::{
    ClientAccess, ClientTls, EntryService, IngressSettings, NodeServices, ServiceType,
    TlsTermination,
};
pub use protocol_rollout::{
    AnalysisStatus, PrometheusQuery, ProtocolRollout, ProtocolRolloutSpec, ProtocolRolloutStatus,
    ProtocolVersion, RequestAction, RequestOutcome, RequestStatus, RollbackPolicy, RolloutControl,
    RolloutPhase, RolloutRequest, RolloutStrategy, RolloutVersion, VersionSamples, VersionStatus,
};
pub use room_shard::{
    Failover, MovePhase, MoveRequestStatus, RoomShard, RoomShardSpec, RoomShardStatus, ShardMove,
    ShardPhase,
};
pub use signaling_cluster::{
    ADMIN_PORT, DisruptionBudgetSpec, EtcdSpec, NodeConfig, PodOverrides, SignalingCluster,
    SignalingClusterSpec, SignalingClusterStatus,
};

/// API group of every Switchboard resource.
pub const GROUP: &str = "switchboard.dev";

/// API version of every Switchboard resource.
pub const VERSION: &str = "v1alpha1";

/// Every CRD with the file name it is stored under in `crds/`, in sorted file-name order.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("protocolrollout.yaml", tidy(ProtocolRollout::crd())),
        ("roomshard.yaml", tidy(RoomShard::crd())),
        ("signalingcluster.yaml", tidy(SignalingCluster::crd())),
    ]
}

/// Joins the hard-wrapped lines of `///` docs into paragraphs, so `kubectl explain` wraps
/// them itself instead of breaking lines in odd places.
fn tidy(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            tidy_props(schema);
        }
    }
    crd
}

fn tidy_props(props: &mut JSONSchemaProps) {
    if let Some(text) = props.description.as_mut() {
        *text = unwrap_paragraphs(text);
    }
    let children = props.properties.iter_mut().flat_map(|map| map.values_mut());
    let additional = props
        .additional_properties
        .iter_mut()
        .filter_map(|extra| match extra {
            JSONSchemaPropsOrBool::Schema(schema) => Some(schema.as_mut()),
            JSONSchemaPropsOrBool::Bool(_) => None,
        });
    let items = props.items.iter_mut().flat_map(|items| match items {
        JSONSchemaPropsOrArray::Schema(schema) => vec![schema.as_mut()],
        JSONSchemaPropsOrArray::Schemas(list) => list.iter_mut().collect(),
    });
    for child in children.chain(additional).chain(items) {
        tidy_props(child);
    }
}

/// Replaces single line breaks with spaces; blank lines (paragraph breaks) stay.
fn unwrap_paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// One CRD as a YAML document that starts with `---` (the content of its file in `crds/`).
pub fn crd_document(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    Ok(format!("---\n{}", serde_yaml::to_string(crd)?))
}

/// Every CRD as YAML documents in [`crds`] order: exactly the concatenation of `crds/*.yaml`
/// in sorted file-name order.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for (_, crd) in crds() {
        out.push_str(&crd_document(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

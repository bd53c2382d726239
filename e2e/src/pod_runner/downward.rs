//! The downward API: the values of `fieldRef` paths of a pod (`metadata.name`, `status.podIP`,
//! `metadata.labels['k']`, …) as env values and downward API volume files.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ObjectFieldSelector, Pod};

/// Where the pod lives: the values the downward API exposes that are not in the Pod object yet.
#[derive(Debug, Clone, Copy)]
pub struct PodPlacement<'a> {
    /// The pod's loopback address.
    pub pod_ip: Ipv4Addr,
    /// The node's address.
    pub host_ip: Ipv4Addr,
    /// The node's name.
    pub node_name: &'a str,
}

/// A downward API field path the runner does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported downward API field path {0:?}")]
pub struct UnsupportedFieldPath(pub String);

/// The downward API value of `field` for `pod`. `whole_maps` allows `metadata.labels` and
/// `metadata.annotations` themselves (volumes only), rendered as sorted `key="value"` lines.
pub fn field_value(
    pod: &Pod,
    field: &ObjectFieldSelector,
    placement: &PodPlacement<'_>,
    whole_maps: bool,
) -> Result<String, UnsupportedFieldPath> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = field.field_path.as_str();
    let map_entry = |map: Option<&BTreeMap<String, String>>, prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let render = |map: Option<&BTreeMap<String, String>>| -> String {
        map.map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => placement.node_name.to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => placement.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => placement.host_ip.to_string(),
        "metadata.labels" if whole_maps => render(meta.labels.as_ref()),
        "metadata.annotations" if whole_maps => render(meta.annotations.as_ref()),
        _ => {
            if let Some(v) = map_entry(meta.labels.as_ref(), "metadata.labels['") {
                v
            } else if let Some(v) = map_entry(meta.annotations.as_ref(), "metadata.annotations['") {
                v
            } else {
                return Err(UnsupportedFieldPath(path.to_string()));
            }
        }
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test pod parses")
    }

    #[test]
    fn downward_volume_renders_whole_maps() {
        let p =
            pod("metadata: {name: a, labels: {b: '2', a: '1'}}\nspec: {containers: [{name: c}]}");
        let placement = PodPlacement {
            pod_ip: Ipv4Addr::LOCALHOST,
            host_ip: Ipv4Addr::LOCALHOST,
            node_name: "n",
        };
        let field = ObjectFieldSelector {
            field_path: "metadata.labels".into(),
            ..Default::default()
        };
        assert_eq!(
            field_value(&p, &field, &placement, true).unwrap(),
            "a=\"1\"\nb=\"2\""
        );
        assert!(field_value(&p, &field, &placement, false).is_err());
    }

    #[test]
    fn resolves_identity_and_address_fields() {
        let p = pod(
            "metadata: {name: a, namespace: ns, uid: u, annotations: {k: v}}\nspec: {containers: [{name: c}]}",
        );
        let placement = PodPlacement {
            pod_ip: Ipv4Addr::new(127, 0, 1, 2),
            host_ip: Ipv4Addr::new(127, 0, 1, 1),
            node_name: "runner-0",
        };
        let get = |path: &str| {
            let field = ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            };
            field_value(&p, &field, &placement, false)
        };
        assert_eq!(get("metadata.namespace").unwrap(), "ns");
        assert_eq!(get("metadata.uid").unwrap(), "u");
        assert_eq!(get("metadata.annotations['k']").unwrap(), "v");
        assert_eq!(get("metadata.labels['missing']").unwrap(), "");
        assert_eq!(get("spec.serviceAccountName").unwrap(), "default");
        assert_eq!(get("status.hostIP").unwrap(), "127.0.1.1");
        assert_eq!(get("status.podIPs").unwrap(), "127.0.1.2");
        assert_eq!(get("spec.nodeName").unwrap(), "runner-0");
        assert_eq!(
            get("status.phase"),
            Err(UnsupportedFieldPath("status.phase".into()))
        );
    }
}

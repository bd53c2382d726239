//! The cluster's Services.
//!
//! - `<cluster>` (ClusterIP): where clients connect; any node answers and redirects to the
//!   room's owner, so it selects every pod of the cluster across versions.
//! - `<cluster>-nodes` (headless, publishes not-ready addresses): stable per-pod DNS names
//!   (`<pod>.<cluster>-nodes`) and the admin port for scraping.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pods::headless_service_name;
use super::{Identity, identity};
use crate::controller::Result;
use crate::controller::labels::{common_labels, selector_labels};
use crate::crd::{ADMIN_PORT, SignalingCluster};

fn meta(id: &Identity, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(id.namespace.clone()),
        labels: Some(common_labels(&id.name, component)),
        owner_references: Some(vec![id.owner.clone()]),
        ..Default::default()
    }
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The client Service `<cluster>`: the signaling port of every node.
pub fn client_service(cluster: &SignalingCluster) -> Result<Service> {
    let id = identity(cluster)?;
    Ok(Service {
        metadata: meta(&id, id.name.clone(), "client"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&id.name)),
            ports: Some(vec![port("ws", cluster.spec.port)]),
            ..Default::default()
        }),
        status: None,
    })
}

/// The headless Service `<cluster>-nodes`: per-pod DNS and the admin port.
pub fn headless_service(cluster: &SignalingCluster) -> Result<Service> {
    let id = identity(cluster)?;
    Ok(Service {
        metadata: meta(&id, headless_service_name(&id.name), "nodes"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(&id.name)),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![
                port("ws", cluster.spec.port),
                port("admin", ADMIN_PORT),
            ]),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cluster::pods::desired_pod;
    use crate::controller::cluster::pools::version_pools;
    use crate::controller::cluster::testing::cluster;

    #[test]
    fn services_select_the_pods_they_serve() {
        let c = cluster(3, 16);
        let pod = desired_pod(&c, &version_pools(&c, None).unwrap()[0], 0).unwrap();
        let pod_labels = pod.metadata.labels.unwrap();
        for service in [client_service(&c).unwrap(), headless_service(&c).unwrap()] {
            let selector = service.spec.as_ref().unwrap().selector.clone().unwrap();
            assert!(
                selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
                "{selector:?}"
            );
            assert_eq!(
                service.metadata.owner_references.as_ref().unwrap()[0].uid,
                "uid-1"
            );
        }
    }

    #[test]
    fn names_ports_and_headlessness() {
        let c = cluster(3, 16);
        let client = client_service(&c).unwrap();
        assert_eq!(client.metadata.name.as_deref(), Some("demo"));
        let spec = client.spec.unwrap();
        assert_eq!(spec.ports.as_ref().unwrap()[0].port, 7000);
        assert_eq!(spec.cluster_ip, None);

        let nodes = headless_service(&c).unwrap();
        assert_eq!(nodes.metadata.name.as_deref(), Some("demo-nodes"));
        let spec = nodes.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [7000, 9100]);
    }
}

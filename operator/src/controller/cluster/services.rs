//! The cluster's Services.
//!
//! - `<cluster>` (ClusterIP unless `clientAccess.entryService` says otherwise): where clients
//!   connect; any node answers and redirects to the room's owner, so it selects every pod of
//!   the cluster across versions.
//! - `<cluster>-nodes` (headless, publishes not-ready addresses): stable per-pod DNS names
//!   (`<pod>.<cluster>-nodes`) and the admin port for scraping.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::access::AccessPlan;
use super::pods::headless_service_name;
use super::{Identity, identity};
use crate::controller::Result;
use crate::controller::labels::{common_labels, selector_labels};
use crate::crd::{ADMIN_PORT, SignalingCluster};

/// Metadata of a child named `name` with role `component`.
pub(crate) fn meta(id: &Identity, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(id.namespace.clone()),
        labels: Some(common_labels(&id.name, component)),
        owner_references: Some(vec![id.owner.clone()]),
        ..Default::default()
    }
}

/// A TCP Service port named like the container port it targets.
pub(crate) fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The signaling ports of a Service: `ws` (TCP) and, when the nodes serve WebTransport, `wt`
/// (UDP) with the same number and node port, because clients derive a node's WebTransport
/// port from the port number of its `wss://` URL (docs/protocol.md, "WebTransport").
pub(crate) fn signaling_ports(
    number: i32,
    node_port: Option<i32>,
    webtransport: bool,
) -> Vec<ServicePort> {
    let mut ws = port("ws", number);
    ws.node_port = node_port;
    if !webtransport {
        return vec![ws];
    }
    let wt = ServicePort {
        protocol: Some("UDP".into()),
        ..port("wt", number)
    };
    let wt = ServicePort { node_port, ..wt };
    vec![ws, wt]
}

/// The client Service `<cluster>`: the signaling port of every node; the entry URL's Service
/// (type, annotations and node port from `clientAccess.entryService`).
pub fn client_service(cluster: &SignalingCluster, access: Option<&AccessPlan>) -> Result<Service> {
    let id = identity(cluster)?;
    let entry = access
        .map(|a| a.spec.entry_service.clone())
        .unwrap_or_default();
    let mut metadata = meta(&id, id.name.clone(), "client");
    if !entry.annotations.is_empty() {
        metadata.annotations = Some(entry.annotations.clone());
    }
    let node_port = entry.node_port.filter(|_| entry.type_.has_node_port());
    let webtransport = access.is_some_and(AccessPlan::serves_webtransport);
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(entry.type_.as_str().into()),
            selector: Some(selector_labels(&id.name)),
            ports: Some(signaling_ports(cluster.spec.port, node_port, webtransport)),
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
        for service in [
            client_service(&c, None).unwrap(),
            headless_service(&c).unwrap(),
        ] {
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
        let client = client_service(&c, None).unwrap();
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

    /// Client access through NodePort Services: the entry on 30443, one Service per node.
    fn node_port_access() -> crate::crd::ClientAccess {
        crate::crd::ClientAccess {
            entry_url: "wss://signal.test:30443/ws".into(),
            node_url_template: "wss://signal.test:{nodePort}/ws".into(),
            entry_service: crate::crd::EntryService {
                type_: crate::crd::ServiceType::NodePort,
                annotations: Default::default(),
                node_port: Some(30443),
            },
            node_services: Some(crate::crd::NodeServices {
                type_: crate::crd::ServiceType::NodePort,
                ..Default::default()
            }),
            ingress: None,
            tls: None,
            web_transport: false,
        }
    }

    #[test]
    fn the_entry_service_takes_type_annotations_and_node_port() {
        let mut c = cluster(3, 16);
        let mut access = node_port_access();
        access.entry_service.annotations =
            [("lb.example/idle-timeout".to_string(), "3600".to_string())].into();
        c.spec.client_access = Some(access);
        let plan = AccessPlan::of(&c).unwrap().unwrap();
        let service = client_service(&c, Some(&plan)).unwrap();
        assert_eq!(
            service.metadata.annotations.as_ref().unwrap()["lb.example/idle-timeout"],
            "3600"
        );
        let spec = service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        let ports = spec.ports.unwrap();
        assert_eq!(ports.len(), 1, "no WebTransport port unless asked");
        assert_eq!(ports[0].node_port, Some(30443));
    }

    #[test]
    fn webtransport_adds_a_udp_port_of_the_same_number_and_node_port() {
        let mut c = cluster(3, 16);
        c.spec.client_access = Some(crate::crd::ClientAccess {
            tls: Some(crate::crd::ClientTls {
                secret_name: "signal-tls".into(),
                termination: crate::crd::TlsTermination::Node,
            }),
            web_transport: true,
            ..node_port_access()
        });
        let plan = AccessPlan::of(&c).unwrap().unwrap();
        let ports = client_service(&c, Some(&plan))
            .unwrap()
            .spec
            .unwrap()
            .ports
            .unwrap();
        let got: Vec<_> = ports
            .iter()
            .map(|p| {
                (
                    p.name.as_deref(),
                    p.protocol.as_deref(),
                    p.port,
                    p.node_port,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Some("ws"), Some("TCP"), 7000, Some(30443)),
                (Some("wt"), Some("UDP"), 7000, Some(30443)),
            ]
        );
    }
}

//! The objects client access needs (pure): a Service per node, the Ingress objects for the
//! entry URL and each node's URL, and the checked copy of the client certificate. Every one
//! carries the cluster's labels and a controller owner reference; per-node objects are named
//! like their pod and carry its name in [`POD`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::cert::{CertPair, TLS_CRT, TLS_KEY};
use super::{AccessError, AccessPlan, UrlParts, Values, tls_copy_name};
use crate::controller::cluster::Identity;
use crate::controller::cluster::services::{meta, signaling_ports};
use crate::controller::labels::{POD, selector_labels};
use crate::crd::TlsTermination;

/// `app.kubernetes.io/component` of per-node Services and Ingress objects.
pub const NODE_ACCESS: &str = "node-access";
/// `app.kubernetes.io/component` of the entry Ingress.
pub const ENTRY: &str = "client";
/// `app.kubernetes.io/component` of the certificate copy.
pub const CLIENT_TLS: &str = "client-tls";

/// A node pod as client access sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePod {
    /// Pod name (also the name of its Service and Ingress).
    pub name: String,
    /// Version pool.
    pub version: String,
    /// Index in the pool.
    pub index: u32,
}

impl NodePod {
    fn values<'a>(&'a self, id: &'a Identity, port: Option<i32>) -> Values<'a> {
        Values {
            pod: Some(&self.name),
            index: Some(self.index),
            version: Some(&self.version),
            cluster: Some(&id.name),
            namespace: Some(&id.namespace),
            port,
            node_port: None,
        }
    }
}

/// The Service of one node: its signaling port only, selecting only that pod; `node_port`
/// pins the port its URL already names (a re-created Service keeps the pod reachable).
pub(crate) fn node_service(
    id: &Identity,
    plan: &AccessPlan,
    signaling_port: i32,
    pod: &NodePod,
    node_port: Option<i32>,
) -> Service {
    let settings = plan.node_services.clone().unwrap_or_default();
    let mut metadata = meta(id, pod.name.clone(), NODE_ACCESS);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD.into(), pod.name.clone());
    let values = pod.values(id, None);
    let annotations: BTreeMap<String, String> = plan
        .node_annotations
        .iter()
        .map(|(key, value)| (key.clone(), value.expand(&values)))
        .collect();
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    let mut selector = selector_labels(&id.name);
    selector.insert(POD.into(), pod.name.clone());
    let node_port = node_port.filter(|_| settings.type_.has_node_port());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(settings.type_.as_str().into()),
            selector: Some(selector),
            ports: Some(signaling_ports(
                signaling_port,
                node_port,
                plan.serves_webtransport(),
            )),
            // Only a serving node: a dead one refuses at once, and clients go back to the
            // entry URL.
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: None,
    }
}

/// The node port a per-node Service got (its `ws` port's), if any.
pub fn service_node_port(service: &Service) -> Option<i32> {
    service
        .spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some("ws"))
        .and_then(|p: &ServicePort| p.node_port)
}

fn ingress(
    id: &Identity,
    plan: &AccessPlan,
    name: String,
    component: &str,
    url: &UrlParts,
    service: &str,
) -> Option<Ingress> {
    let settings = plan.ingress.as_ref()?;
    let mut metadata = meta(id, name, component);
    if !settings.annotations.is_empty() {
        metadata.annotations = Some(settings.annotations.clone());
    }
    let terminates = plan
        .tls
        .as_ref()
        .is_some_and(|t| t.termination == TlsTermination::Ingress);
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: settings.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(url.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(url.path.clone()),
                        path_type: "Exact".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: service.to_string(),
                                port: Some(ServiceBackendPort {
                                    name: Some("ws".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            tls: terminates.then(|| {
                vec![IngressTLS {
                    hosts: Some(vec![url.host.clone()]),
                    secret_name: Some(tls_copy_name(&id.name)),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    })
}

/// The Ingress `<cluster>` for the entry URL (to the entry Service), with ingress set.
pub(crate) fn entry_ingress(id: &Identity, plan: &AccessPlan) -> Option<Ingress> {
    ingress(id, plan, id.name.clone(), ENTRY, &plan.entry, &id.name)
}

/// The Ingress of one node for its URL (to its Service), with ingress set.
pub(crate) fn node_ingress(
    id: &Identity,
    plan: &AccessPlan,
    pod: &NodePod,
) -> Result<Option<Ingress>, AccessError> {
    if plan.ingress.is_none() {
        return Ok(None);
    }
    let url = plan.template.expand(&pod.values(id, Some(plan.port)));
    let parts = UrlParts::parse(&url, "nodeUrlTemplate")?;
    let mut ingress = ingress(id, plan, pod.name.clone(), NODE_ACCESS, &parts, &pod.name);
    if let Some(ingress) = ingress.as_mut() {
        ingress
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD.into(), pod.name.clone());
    }
    Ok(ingress)
}

/// The hosts a certificate must cover: the entry URL's and every node's (nodes whose host
/// the kubelet fills in are not known here and not checked).
pub(crate) fn tls_hosts(id: &Identity, plan: &AccessPlan, pods: &[NodePod]) -> Vec<String> {
    let mut hosts = vec![plan.entry.host.clone()];
    for pod in pods {
        let url = plan.template.expand(&Values {
            node_port: Some(1),
            ..pod.values(id, Some(plan.port))
        });
        if let Ok(parts) = UrlParts::parse(&url, "nodeUrlTemplate") {
            hosts.push(parts.host);
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The checked copy `<cluster>-client-tls` the pods mount and the Ingress objects name.
pub(crate) fn tls_copy(id: &Identity, pair: &CertPair) -> Secret {
    Secret {
        metadata: meta(id, tls_copy_name(&id.name), CLIENT_TLS),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (TLS_CRT.to_string(), ByteString(pair.cert.clone())),
            (TLS_KEY.to_string(), ByteString(pair.key.clone())),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cluster::identity;
    use crate::controller::cluster::testing::cluster;
    use crate::crd::{ClientAccess, ClientTls, IngressSettings, NodeServices, ServiceType};

    fn plan(access: ClientAccess) -> (Identity, AccessPlan) {
        let mut c = cluster(3, 16);
        c.spec.client_access = Some(access);
        (identity(&c).unwrap(), AccessPlan::of(&c).unwrap().unwrap())
    }

    fn pod() -> NodePod {
        NodePod {
            name: "demo-v1-2".into(),
            version: "v1".into(),
            index: 2,
        }
    }

    fn access(template: &str) -> ClientAccess {
        ClientAccess {
            entry_url: "wss://signal.test/ws".into(),
            node_url_template: template.into(),
            entry_service: Default::default(),
            node_services: None,
            ingress: None,
            tls: None,
            web_transport: false,
        }
    }

    #[test]
    fn a_node_service_carries_webtransport_on_its_node_port() {
        let (id, plan) = plan(ClientAccess {
            node_services: Some(NodeServices {
                type_: ServiceType::NodePort,
                annotations: BTreeMap::new(),
            }),
            tls: Some(ClientTls {
                secret_name: "signal-tls".into(),
                termination: TlsTermination::Node,
            }),
            web_transport: true,
            ..access("wss://signal.test:{nodePort}/ws")
        });
        let pinned = node_service(&id, &plan, 7000, &pod(), Some(31005));
        let ports = pinned.spec.as_ref().unwrap().ports.clone().unwrap();
        let udp: Vec<_> = ports
            .iter()
            .filter(|p| p.protocol.as_deref() == Some("UDP"))
            .map(|p| (p.name.as_deref(), p.port, p.node_port))
            .collect();
        assert_eq!(udp, [(Some("wt"), 7000, Some(31005))]);

        let without = node_service(&id, &plan_without_webtransport(), 7000, &pod(), Some(31005));
        assert_eq!(without.spec.unwrap().ports.unwrap().len(), 1);
    }

    fn plan_without_webtransport() -> AccessPlan {
        plan(ClientAccess {
            node_services: Some(NodeServices {
                type_: ServiceType::NodePort,
                annotations: BTreeMap::new(),
            }),
            ..access("wss://signal.test:{nodePort}/ws")
        })
        .1
    }

    #[test]
    fn node_services_select_one_pod_and_expand_annotations() {
        let (id, plan) = plan(ClientAccess {
            node_services: Some(NodeServices {
                type_: ServiceType::NodePort,
                annotations: BTreeMap::from([(
                    "external-dns.alpha.kubernetes.io/hostname".into(),
                    "{pod}.{namespace}.signal.test".into(),
                )]),
            }),
            ..access("wss://signal.test:{nodePort}/ws")
        });
        let service = node_service(&id, &plan, 7000, &pod(), Some(31005));
        assert_eq!(service.metadata.name.as_deref(), Some("demo-v1-2"));
        assert_eq!(
            service.metadata.annotations.as_ref().unwrap()["external-dns.alpha.kubernetes.io/hostname"],
            "demo-v1-2.live.signal.test"
        );
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.selector.as_ref().unwrap()[POD], "demo-v1-2");
        assert_eq!(spec.publish_not_ready_addresses, Some(false));
        assert_eq!(service_node_port(&service), Some(31005));
        assert_eq!(
            service.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        let unpinned = node_service(&id, &plan, 7000, &pod(), None);
        assert_eq!(service_node_port(&unpinned), None);
    }

    #[test]
    fn ingresses_route_each_url_to_its_service_and_end_tls_when_asked() {
        let (id, plan) = plan(ClientAccess {
            ingress: Some(IngressSettings {
                class_name: Some("traefik".into()),
                annotations: BTreeMap::new(),
            }),
            tls: Some(ClientTls {
                secret_name: "signal-cert".into(),
                termination: TlsTermination::Ingress,
            }),
            ..access("wss://signal.test/nodes/{pod}/ws")
        });
        let entry = entry_ingress(&id, &plan).unwrap();
        let node = node_ingress(&id, &plan, &pod()).unwrap().unwrap();
        for (ingress, name, path, service) in [
            (&entry, "demo", "/ws", "demo"),
            (&node, "demo-v1-2", "/nodes/demo-v1-2/ws", "demo-v1-2"),
        ] {
            assert_eq!(ingress.metadata.name.as_deref(), Some(name));
            let spec = ingress.spec.as_ref().unwrap();
            assert_eq!(spec.ingress_class_name.as_deref(), Some("traefik"));
            let rule = &spec.rules.as_ref().unwrap()[0];
            assert_eq!(rule.host.as_deref(), Some("signal.test"));
            let http_path = &rule.http.as_ref().unwrap().paths[0];
            assert_eq!(http_path.path.as_deref(), Some(path));
            assert_eq!(http_path.path_type, "Exact");
            assert_eq!(http_path.backend.service.as_ref().unwrap().name, service);
            let tls = &spec.tls.as_ref().unwrap()[0];
            assert_eq!(tls.secret_name.as_deref(), Some("demo-client-tls"));
        }
        // Per-node Services exist (as ClusterIP) because the Ingress routes to them.
        let service = node_service(&id, &plan, 7000, &pod(), None);
        assert_eq!(service.spec.unwrap().type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            tls_hosts(&id, &plan, &[pod()]),
            vec!["signal.test".to_string()]
        );
    }

    #[test]
    fn without_ingress_there_are_no_ingress_objects_and_every_host_is_checked() {
        let (id, plan) = plan(access("wss://{pod}.signal.test/ws"));
        assert!(entry_ingress(&id, &plan).is_none());
        assert!(node_ingress(&id, &plan, &pod()).unwrap().is_none());
        assert_eq!(
            tls_hosts(&id, &plan, &[pod()]),
            vec![
                "demo-v1-2.signal.test".to_string(),
                "signal.test".to_string()
            ]
        );
        let copy = tls_copy(
            &id,
            &CertPair {
                cert: b"c".to_vec(),
                key: b"k".to_vec(),
            },
        );
        assert_eq!(copy.metadata.name.as_deref(), Some("demo-client-tls"));
        assert_eq!(copy.type_.as_deref(), Some("kubernetes.io/tls"));
    }
}

//! Tests of the client-access plan: what is accepted, what is refused with which reason, and
//! what a pod's URL becomes.

use std::collections::BTreeMap;

use super::*;
use crate::controller::cluster::pods::{
    ADVERTISE_URL_ENV, advertised_url, desired_pod, set_node_port,
};
use crate::controller::cluster::pools::version_pools;
use crate::controller::cluster::testing::cluster;
use crate::controller::labels;
use crate::crd::{IngressSettings, ServiceType};

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

fn node_ports() -> Option<NodeServices> {
    Some(NodeServices {
        type_: ServiceType::NodePort,
        annotations: BTreeMap::new(),
    })
}

fn ingress() -> Option<IngressSettings> {
    Some(IngressSettings::default())
}

fn plan_of(access: ClientAccess) -> Result<Option<AccessPlan>, AccessError> {
    let mut c = cluster(3, 16);
    c.spec.client_access = Some(access);
    AccessPlan::of(&c)
}

fn reason(access: ClientAccess) -> &'static str {
    plan_of(access).expect_err("refused").reason()
}

#[test]
fn no_client_access_is_no_plan() {
    assert_eq!(AccessPlan::of(&cluster(3, 16)), Ok(None));
}

#[test]
fn the_modes_of_the_docs_are_accepted() {
    for access in [
        access("wss://{pod}.signal.test/ws"),
        ClientAccess {
            ingress: ingress(),
            ..access("wss://signal.test/nodes/{pod}/ws")
        },
        ClientAccess {
            node_services: node_ports(),
            ..access("wss://signal.test:{nodePort}/ws")
        },
        access("ws://{podIP}:{port}/ws"),
        access("wss://{hostIP}/{version}/{index}/ws"),
    ] {
        let template = access.node_url_template.clone();
        assert!(plan_of(access).is_ok_and(|p| p.is_some()), "{template}");
    }
}

#[test]
fn bad_templates_and_urls_are_refused_with_a_reason() {
    assert_eq!(
        reason(access("wss://{podName}.signal.test/ws")),
        "UnknownPlaceholder"
    );
    assert_eq!(
        reason(access("wss://{pod.signal.test/ws")),
        "InvalidTemplate"
    );
    // Every node would get the same URL.
    assert_eq!(reason(access("wss://signal.test/ws")), "InvalidTemplate");
    assert_eq!(reason(access("wss://{hostIP}/ws")), "InvalidTemplate");
    // {nodePort} needs a Service that has one.
    assert_eq!(
        reason(access("wss://signal.test:{nodePort}/ws")),
        "InvalidTemplate"
    );
    assert_eq!(
        reason(ClientAccess {
            node_services: Some(NodeServices::default()),
            ..access("wss://signal.test:{nodePort}/ws")
        }),
        "InvalidTemplate"
    );
    // Behind an Ingress, hosts are DNS names and runtime values cannot be routed.
    assert_eq!(
        reason(ClientAccess {
            ingress: ingress(),
            ..access("wss://{podIP}/ws")
        }),
        "InvalidTemplate"
    );
    assert_eq!(
        reason(ClientAccess {
            ingress: ingress(),
            ..access("wss://192.0.2.7/nodes/{pod}/ws")
        }),
        "InvalidUrl"
    );
    assert_eq!(
        reason(ClientAccess {
            entry_url: "wss://{cluster}.signal.test/ws".into(),
            ..access("wss://{pod}.signal.test/ws")
        }),
        "InvalidUrl"
    );
    assert_eq!(
        reason(ClientAccess {
            entry_url: "https://signal.test/ws".into(),
            ..access("wss://{pod}.signal.test/ws")
        }),
        "InvalidUrl"
    );
    assert_eq!(reason(access("wss:///{pod}/ws")), "InvalidUrl");
    assert_eq!(
        reason(ClientAccess {
            node_services: Some(NodeServices {
                type_: ServiceType::LoadBalancer,
                annotations: BTreeMap::from([("dns".into(), "{podIP}.signal.test".into())]),
            }),
            ..access("wss://{pod}.signal.test/ws")
        }),
        "InvalidTemplate"
    );
    assert_eq!(
        reason(ClientAccess {
            tls: Some(ClientTls {
                secret_name: "demo-client-tls".into(),
                termination: TlsTermination::Node,
            }),
            ..access("wss://{pod}.signal.test/ws")
        }),
        "InvalidTLSSecretName"
    );
}

#[test]
fn the_error_names_the_unknown_placeholder() {
    let error = plan_of(access("wss://{podName}.signal.test/ws")).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("{podName}"), "{text}");
    assert!(text.contains("{pod}"), "{text}");
}

#[test]
fn pods_advertise_their_own_url_and_share_the_template_hash() {
    let mut c = cluster(3, 16);
    c.spec.client_access = Some(ClientAccess {
        node_services: node_ports(),
        ..access("wss://{pod}.{namespace}.signal.test:{nodePort}/{index}/ws")
    });
    let pool = version_pools(&c, None).unwrap().remove(0);
    let mut a = desired_pod(&c, &pool, 0).unwrap();
    let b = desired_pod(&c, &pool, 1).unwrap();
    assert_eq!(
        a.metadata.annotations.as_ref().unwrap()[labels::TEMPLATE_HASH],
        b.metadata.annotations.as_ref().unwrap()[labels::TEMPLATE_HASH]
    );
    assert_eq!(
        a.metadata.labels.as_ref().unwrap()[labels::POD],
        "demo-default-0"
    );
    assert_eq!(
        advertised_url(&a).as_deref(),
        Some("wss://demo-default-0.live.signal.test:{nodePort}/0/ws")
    );
    set_node_port(&mut a, 31001);
    assert_eq!(
        advertised_url(&a).as_deref(),
        Some("wss://demo-default-0.live.signal.test:31001/0/ws")
    );
    assert_eq!(
        a.metadata.annotations.as_ref().unwrap()[labels::NODE_PORT],
        "31001"
    );
    let args = a.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap()
        .join(" ");
    assert!(
        args.contains(&format!("--advertise-url $({ADVERTISE_URL_ENV})")),
        "{args}"
    );

    // A different template is a different pod template: the pods roll.
    let mut other = c.clone();
    other.spec.client_access.as_mut().unwrap().node_url_template =
        "wss://{pod}.signal.test:{nodePort}/ws".into();
    let moved = desired_pod(&other, &pool, 0).unwrap();
    assert_ne!(
        a.metadata.annotations.as_ref().unwrap()[labels::TEMPLATE_HASH],
        moved.metadata.annotations.as_ref().unwrap()[labels::TEMPLATE_HASH]
    );
}

#[test]
fn runtime_values_come_from_the_downward_api_and_tls_from_the_copy() {
    let mut c = cluster(3, 16);
    c.spec.client_access = Some(ClientAccess {
        entry_url: "wss://signal.test/signal/ws".into(),
        tls: Some(ClientTls {
            secret_name: "signal-cert".into(),
            termination: TlsTermination::Node,
        }),
        ..access("wss://{hostIP}:{port}/{pod}/ws")
    });
    let pool = version_pools(&c, None).unwrap().remove(0);
    let pod = desired_pod(&c, &pool, 2).unwrap();
    let spec = pod.spec.as_ref().unwrap();
    let env = spec.containers[0].env.clone().unwrap();
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(at("HOST_IP") < at(ADVERTISE_URL_ENV));
    assert_eq!(
        advertised_url(&pod).as_deref(),
        Some("wss://$(HOST_IP):7000/demo-default-2/ws")
    );
    let value = |n: &str| env[at(n)].value.clone().unwrap();
    assert_eq!(value("SWITCHBOARD_WS_PATHS"), "/signal/ws");
    assert_eq!(
        value("SWITCHBOARD_TLS_CERT"),
        format!("{CLIENT_TLS_DIR}/tls.crt")
    );
    let volume = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "client-tls")
        .unwrap();
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("demo-client-tls")
    );
}

#[test]
fn webtransport_listens_on_the_udp_port_of_the_signaling_port_number() {
    let mut c = cluster(3, 16);
    let tls = ClientTls {
        secret_name: "signal-cert".into(),
        termination: TlsTermination::Node,
    };
    c.spec.client_access = Some(ClientAccess {
        tls: Some(tls.clone()),
        web_transport: true,
        ..access("wss://{pod}.signal.test:{port}/ws")
    });
    let pool = version_pools(&c, None).unwrap().remove(0);
    let container = desired_pod(&c, &pool, 0).unwrap().spec.unwrap().containers[0].clone();
    let listen = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SWITCHBOARD_WEBTRANSPORT_LISTEN")
        .and_then(|e| e.value.clone());
    assert_eq!(listen.as_deref(), Some("0.0.0.0:7000"));
    let udp: Vec<_> = container
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref() == Some("UDP"))
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    assert_eq!(udp, [(Some("wt"), 7000)]);

    // Off by default, and nothing without TLS at the node.
    for access_spec in [
        ClientAccess {
            tls: Some(tls),
            ..access("wss://{pod}.signal.test/ws")
        },
        ClientAccess {
            web_transport: true,
            ..access("ws://{pod}.signal.test/ws")
        },
    ] {
        c.spec.client_access = Some(access_spec);
        let container = desired_pod(&c, &pool, 0).unwrap().spec.unwrap().containers[0].clone();
        assert!(
            !container
                .env
                .iter()
                .flatten()
                .any(|e| e.name == "SWITCHBOARD_WEBTRANSPORT_LISTEN")
        );
        assert_eq!(container.ports.unwrap().len(), 2);
    }
}

#[test]
fn without_client_access_pods_keep_the_pod_ip_url() {
    let c = cluster(3, 16);
    let pool = version_pools(&c, None).unwrap().remove(0);
    let pod = desired_pod(&c, &pool, 0).unwrap();
    assert_eq!(advertised_url(&pod), None);
    let args = pod.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap()
        .join(" ");
    assert!(
        args.contains("--advertise-url ws://$(POD_IP):7000/ws"),
        "{args}"
    );
}

//! Node Services carrying WebTransport against a real kube-apiserver: a Service's TCP `ws` and
//! UDP `wt` ports of one number share one node port, whether Kubernetes allocates it or the
//! operator pins it, because clients look for a node's WebTransport on the UDP port with the
//! number of its `wss://` URL's port (docs/operations.md, "WebTransport (UDP)").

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, PostParams};
use serde_json::json;
use switchboard_testkit::ControlPlane;

const NS: &str = "sb-wt";

fn service(name: &str, node_port: Option<i32>) -> Service {
    let port = |port_name: &str, protocol: &str| {
        let mut port = json!({
            "name": port_name,
            "port": 7000,
            "targetPort": port_name,
            "protocol": protocol,
        });
        if let Some(node_port) = node_port {
            port["nodePort"] = json!(node_port);
        }
        port
    };
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "type": "NodePort",
            "selector": {"switchboard.dev/pod": name},
            "ports": [port("ws", "TCP"), port("wt", "UDP")]
        }
    }))
    .unwrap()
}

fn node_ports(service: &Service) -> Vec<(Option<String>, Option<i32>)> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.protocol, p.node_port))
        .collect()
}

#[tokio::test]
async fn tcp_and_udp_ports_of_one_number_share_their_node_port() {
    let control_plane = ControlPlane::start().await;
    let client = control_plane.client().clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(client, NS);

    // Allocated by Kubernetes: one node port for both.
    let allocated = services
        .create(&PostParams::default(), &service("demo-default-0", None))
        .await
        .unwrap();
    let ports = node_ports(&allocated);
    let tcp = ports[0].1.expect("a node port");
    assert_eq!(
        ports,
        [
            (Some("TCP".into()), Some(tcp)),
            (Some("UDP".into()), Some(tcp))
        ]
    );

    // Pinned by the operator (a re-created Service keeps its pod's URL): accepted on both.
    let pinned = services
        .create(
            &PostParams::default(),
            &service("demo-default-1", Some(31005)),
        )
        .await
        .unwrap();
    assert_eq!(
        node_ports(&pinned),
        [
            (Some("TCP".into()), Some(31005)),
            (Some("UDP".into()), Some(31005))
        ]
    );
}

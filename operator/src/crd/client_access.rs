//! `spec.clientAccess` of a SignalingCluster: how clients outside the cluster reach the fleet —
//! one entry URL, a URL per node from a template, the Services and Ingress objects behind them
//! and where TLS ends (docs/operations.md, "Clients outside the cluster").

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How clients outside the cluster reach the fleet. Clients connect to `entryUrl` first; the
/// node that answers redirects them to the room's owner under that node's URL from
/// `nodeUrlTemplate`, and `Migrate` carries those URLs too. Without clientAccess nodes
/// advertise their pod IP (`ws://<pod IP>:<port>/ws`), reachable only inside the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.tls) || (self.entryUrl.startsWith('wss://') && self.nodeUrlTemplate.startsWith('wss://'))")
        .message("with tls, entryUrl and nodeUrlTemplate must be wss:// URLs"),
    validation = Rule::new("!has(self.tls) || self.tls.termination != 'Ingress' || has(self.ingress)")
        .message("tls.termination Ingress needs ingress")
        .field_path(".tls.termination"),
    validation = Rule::new("!has(self.webTransport) || !self.webTransport || (has(self.tls) && self.tls.termination == 'Node' && !has(self.ingress))")
        .message("webTransport needs tls with termination Node and no ingress: QUIC ends TLS at the node, and Ingress controllers do not carry WebTransport")
        .field_path(".webTransport")
)]
#[serde(rename_all = "camelCase")]
pub struct ClientAccess {
    /// The URL clients start from, e.g. `wss://signal.example.com/ws`: any node behind it
    /// redirects to the room's owner. Backed by the Service `<cluster>` (see entryService) and,
    /// with ingress, by the Ingress `<cluster>`. Published in `status.entryUrl`. No
    /// placeholders.
    #[schemars(length(max = 512))]
    #[x_kube(
        validation = Rule::new("self.startsWith('ws://') || self.startsWith('wss://')")
            .message("entryUrl must start with ws:// or wss://")
    )]
    pub entry_url: String,

    /// Template of each node's URL, advertised in `Redirect` and `Migrate`. Placeholders:
    /// `{pod}` (pod name), `{index}` (pod index in its version pool), `{version}`,
    /// `{cluster}`, `{namespace}`, `{port}` (spec.port), `{nodePort}` (the node's own
    /// Service's node port; needs nodeServices of type NodePort or LoadBalancer), `{podIP}`
    /// and `{hostIP}` (filled in by the kubelet; not with ingress). Every node's URL must
    /// differ: use `{pod}`, `{nodePort}`, `{podIP}` or `{version}` with `{index}`. Examples:
    /// `wss://{pod}.signal.example.com/ws` (a host per node), `wss://signal.example.com/nodes/{pod}/ws`
    /// (a path per node behind one Ingress host), `wss://203.0.113.7:{nodePort}/ws` (node
    /// ports). An unknown placeholder is reported in the ClientAccessReady condition and a
    /// Warning Event; the pods keep their previous URLs.
    #[schemars(length(max = 512))]
    #[x_kube(
        validation = Rule::new("self.startsWith('ws://') || self.startsWith('wss://')")
            .message("nodeUrlTemplate must start with ws:// or wss://")
    )]
    pub node_url_template: String,

    /// The entry Service `<cluster>` (it selects every node of the cluster).
    #[serde(default)]
    pub entry_service: EntryService,

    /// A Service per node, named like its pod and selecting only it: what `{nodePort}`,
    /// per-node load balancers (one DNS name each, e.g. with external-dns annotations) and
    /// ingress route to. Created whenever ingress is set (as ClusterIP unless given here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_services: Option<NodeServices>,

    /// Ingress objects routing the entry URL and each node's URL (host and path) to their
    /// Services through an Ingress controller (an L7 proxy): `<cluster>` for the entry URL and
    /// one per node, named like its pod. Hosts must be DNS names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSettings>,

    /// TLS for `wss://` URLs: the certificate clients see, and where TLS ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,

    /// Serve WebTransport (HTTP/3 over QUIC, on UDP) beside `wss://` (default false). Each
    /// node also listens on UDP `spec.port`, and every Service with the signaling port gets a
    /// UDP port `wt` of the same number (and the same node port), so clients find a node's
    /// WebTransport at its wss URL's host and port number (docs/protocol.md, "WebTransport").
    /// Needs tls with termination Node, no ingress, a node image built with the `webtransport`
    /// cargo feature and UDP-capable load balancers (docs/operations.md, "WebTransport (UDP)").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub web_transport: bool,
}

/// Kind of a Kubernetes Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only (behind an Ingress, for example).
    #[default]
    ClusterIP,
    /// Also on a port of every Kubernetes node's addresses.
    NodePort,
    /// Also through a cloud load balancer (which gets a node port too).
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }

    /// Whether the Service gets a node port.
    pub fn has_node_port(self) -> bool {
        !matches!(self, Self::ClusterIP)
    }
}

/// The entry Service `<cluster>`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!has(self.nodePort) || self.type != 'ClusterIP'")
        .message("entryService.nodePort needs type NodePort or LoadBalancer")
        .field_path(".nodePort")
)]
#[serde(rename_all = "camelCase")]
pub struct EntryService {
    /// ClusterIP (default), NodePort or LoadBalancer.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Annotations of the Service (for example a cloud load balancer's settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// The node port of the signaling port (NodePort and LoadBalancer); allocated by
    /// Kubernetes when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self >= 1 && self <= 65535").message("nodePort must be between 1 and 65535")
    )]
    pub node_port: Option<i32>,
}

/// The per-node Services.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeServices {
    /// ClusterIP (default), NodePort or LoadBalancer. `{nodePort}` needs NodePort or
    /// LoadBalancer; the port is allocated by Kubernetes and kept while the pod exists.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Annotations of each per-node Service; values may use `{pod}`, `{index}`, `{version}`,
    /// `{cluster}` and `{namespace}` (e.g.
    /// `external-dns.alpha.kubernetes.io/hostname: "{pod}.signal.example.com"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The Ingress objects.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngressSettings {
    /// `spec.ingressClassName` of every Ingress (the cluster's default class when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub class_name: Option<String>,

    /// Annotations of every Ingress (controller settings such as timeouts).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Where TLS ends.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TlsTermination {
    /// The nodes serve `wss://` themselves with the certificate; a rotated certificate is
    /// reloaded without dropping connections.
    #[default]
    Node,
    /// The Ingress controller ends TLS (the Ingress objects name the certificate); nodes
    /// serve plain WebSocket behind it.
    Ingress,
}

/// The certificate clients see.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// A Secret (same namespace, `kubernetes.io/tls`: `tls.crt`, `tls.key`) whose certificate
    /// covers the entry URL's host and every node URL's host. The operator checks it and
    /// copies it into `<cluster>-client-tls`, which the nodes (or the Ingress objects) use:
    /// a missing Secret, an invalid pair or a certificate for the wrong host is reported in
    /// the ClientAccessReady condition and a Warning Event, and the last good certificate
    /// stays in use. Rotate by updating this Secret (cert-manager does).
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self != ''").message("tls.secretName must name a Secret"))]
    pub secret_name: String,

    /// Node (default): nodes serve wss:// themselves. Ingress: the Ingress controller ends TLS.
    #[serde(default)]
    pub termination: TlsTermination,
}

//! Clients outside the cluster (`spec.clientAccess`, docs/operations.md "Clients outside the
//! cluster"). Pure: the validated [`AccessPlan`] (entry URL, node URL template, per-node
//! Services, Ingress, TLS) and what it makes of each pod's URL; the objects it needs
//! (`objects`), the certificate checks (`cert`). The I/O that applies them is `sync`.
//!
//! A node's URL is fixed when its pod is created: the operator fills in `{pod}`, `{index}`,
//! `{version}`, `{cluster}`, `{namespace}`, `{port}` and (once the pod's Service got one)
//! `{nodePort}`; the kubelet fills in `{podIP}` and `{hostIP}` from the downward API.

pub mod cert;
pub mod objects;
pub mod sync;
pub mod template;

use http::Uri;

use crate::crd::{
    ClientAccess, ClientTls, IngressSettings, NodeServices, SignalingCluster, TlsTermination,
};
pub use template::{Placeholder, Template, Values};

/// Condition type: the client-access objects exist and the certificate is valid.
pub const CLIENT_ACCESS_READY: &str = "ClientAccessReady";

/// Where the checked copy of the client certificate is mounted in node pods.
pub const CLIENT_TLS_DIR: &str = "/etc/switchboard/client-tls";

/// Why a `spec.clientAccess` cannot be acted on (reported in the ClientAccessReady condition
/// and a Warning Event; pods keep the URLs they have).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// A `{name}` the template language does not know.
    #[error(
        "unknown placeholder {{{name}}} in {template:?}; known: {{pod}}, {{index}}, {{version}}, {{cluster}}, {{namespace}}, {{port}}, {{nodePort}}, {{podIP}}, {{hostIP}}"
    )]
    UnknownPlaceholder {
        /// The name between the braces.
        name: String,
        /// The template it appeared in.
        template: String,
    },
    /// A `{` without its `}` or the other way round.
    #[error("unbalanced brace in {0:?}")]
    UnbalancedBrace(String),
    /// A known placeholder where it cannot be filled in.
    #[error("{placeholder} cannot be used in {field}: {why}")]
    PlaceholderNotAllowed {
        /// The placeholder.
        placeholder: Placeholder,
        /// Where it was used.
        field: &'static str,
        /// Why not.
        why: &'static str,
    },
    /// A URL that does not parse or lacks a part.
    #[error("{field} {url:?} is not a usable WebSocket URL: {why}")]
    InvalidUrl {
        /// Which field.
        field: &'static str,
        /// The URL (for the template: with sample values).
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Two pods could get the same URL.
    #[error(
        "nodeUrlTemplate {0:?} gives several nodes the same URL; use {{pod}}, {{nodePort}}, {{podIP}}, or {{version}} with {{index}}"
    )]
    NotDistinct(String),
    /// The Secret name the operator writes its checked copy to.
    #[error(
        "tls.secretName {0:?} is the name of the operator's own copy; name your Secret differently"
    )]
    ReservedSecretName(String),
}

impl AccessError {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownPlaceholder { .. } => "UnknownPlaceholder",
            Self::UnbalancedBrace(_)
            | Self::PlaceholderNotAllowed { .. }
            | Self::NotDistinct(_) => "InvalidTemplate",
            Self::InvalidUrl { .. } => "InvalidUrl",
            Self::ReservedSecretName(_) => "InvalidTLSSecretName",
        }
    }
}

/// The parts of a WebSocket URL the objects are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    /// `wss://`.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// The path (`/` when empty).
    pub path: String,
}

impl UrlParts {
    /// Parses a `ws://` / `wss://` URL; `field` names it in errors.
    pub fn parse(url: &str, field: &'static str) -> Result<Self, AccessError> {
        let invalid = |why: &str| AccessError::InvalidUrl {
            field,
            url: url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("it does not parse"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(invalid("the scheme must be ws:// or wss://")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?;
        if uri.query().is_some() {
            return Err(invalid("a query string is not allowed"));
        }
        Ok(Self {
            tls,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            path: if uri.path().is_empty() {
                "/".to_string()
            } else {
                uri.path().to_string()
            },
        })
    }

    /// Whether the host is an IP address (not a DNS name).
    pub fn host_is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// A validated `spec.clientAccess`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPlan {
    /// The entry URL as written.
    pub entry_url: String,
    /// Its parts.
    pub entry: UrlParts,
    /// The node URL template.
    pub template: Template,
    /// Per-node Services (also when only ingress asked for them).
    pub node_services: Option<NodeServices>,
    /// Per-node Service annotations, parsed.
    pub node_annotations: Vec<(String, Template)>,
    /// Ingress objects.
    pub ingress: Option<IngressSettings>,
    /// TLS.
    pub tls: Option<ClientTls>,
    /// `spec.port` (`{port}`).
    pub port: i32,
    /// The entry Service settings.
    pub spec: ClientAccess,
}

/// Placeholders the operator knows when it creates a pod's Service or Ingress.
const OBJECT_PLACEHOLDERS: [Placeholder; 5] = [
    Placeholder::Pod,
    Placeholder::Index,
    Placeholder::Version,
    Placeholder::Cluster,
    Placeholder::Namespace,
];

/// Name of the operator's checked copy of the client certificate: `<cluster>-client-tls`.
pub fn tls_copy_name(cluster: &str) -> String {
    format!("{cluster}-client-tls")
}

impl AccessPlan {
    /// Validates `spec.clientAccess` of `cluster` (`None` when unset).
    pub fn of(cluster: &SignalingCluster) -> Result<Option<Self>, AccessError> {
        let Some(spec) = cluster.spec.client_access.clone() else {
            return Ok(None);
        };
        let name = cluster.metadata.name.as_deref().unwrap_or_default();
        if spec.entry_url.contains(['{', '}']) {
            return Err(AccessError::InvalidUrl {
                field: "entryUrl",
                url: spec.entry_url.clone(),
                why: "the entry URL takes no placeholders".into(),
            });
        }
        let entry = UrlParts::parse(&spec.entry_url, "entryUrl")?;
        let template = Template::parse(&spec.node_url_template)?;
        if !template.distinguishes_pods() {
            return Err(AccessError::NotDistinct(spec.node_url_template.clone()));
        }
        let node_services = match (&spec.node_services, &spec.ingress) {
            (Some(services), _) => Some(services.clone()),
            (None, Some(_)) => Some(NodeServices::default()),
            (None, None) => None,
        };
        if template.uses(Placeholder::NodePort)
            && !node_services
                .as_ref()
                .is_some_and(|s| s.type_.has_node_port())
        {
            return Err(AccessError::PlaceholderNotAllowed {
                placeholder: Placeholder::NodePort,
                field: "nodeUrlTemplate",
                why: "it needs nodeServices of type NodePort or LoadBalancer",
            });
        }
        let sample = template.expand(&Values {
            pod: Some("pod"),
            index: Some(0),
            version: Some("version"),
            cluster: Some(name),
            namespace: Some("namespace"),
            port: Some(cluster.spec.port),
            node_port: Some(30000),
        });
        let sample = sample
            .replace("$(POD_IP)", "192.0.2.1")
            .replace("$(HOST_IP)", "192.0.2.2");
        let node = UrlParts::parse(&sample, "nodeUrlTemplate")?;
        if spec.ingress.is_some() {
            for placeholder in [
                Placeholder::PodIp,
                Placeholder::HostIp,
                Placeholder::NodePort,
            ] {
                if template.uses(placeholder) {
                    return Err(AccessError::PlaceholderNotAllowed {
                        placeholder,
                        field: "nodeUrlTemplate",
                        why: "with ingress, node URLs are the proxy's host and path",
                    });
                }
            }
            for (field, url, parts) in [
                ("entryUrl", spec.entry_url.as_str(), &entry),
                ("nodeUrlTemplate", spec.node_url_template.as_str(), &node),
            ] {
                if parts.host_is_ip() {
                    return Err(AccessError::InvalidUrl {
                        field,
                        url: url.to_string(),
                        why: "an Ingress host must be a DNS name, not an IP address".into(),
                    });
                }
            }
        }
        let mut node_annotations = Vec::new();
        for (key, value) in node_services.iter().flat_map(|s| s.annotations.iter()) {
            let parsed = Template::parse(value)?;
            if let Some(placeholder) = parsed
                .placeholders()
                .find(|p| !OBJECT_PLACEHOLDERS.contains(p))
            {
                return Err(AccessError::PlaceholderNotAllowed {
                    placeholder,
                    field: "nodeServices.annotations",
                    why: "only {pod}, {index}, {version}, {cluster} and {namespace} are known there",
                });
            }
            node_annotations.push((key.clone(), parsed));
        }
        if let Some(tls) = &spec.tls
            && tls.secret_name == tls_copy_name(name)
        {
            return Err(AccessError::ReservedSecretName(tls.secret_name.clone()));
        }
        Ok(Some(Self {
            entry_url: spec.entry_url.clone(),
            entry,
            template,
            node_services,
            node_annotations,
            ingress: spec.ingress.clone(),
            tls: spec.tls.clone(),
            port: cluster.spec.port,
            spec,
        }))
    }

    /// Whether the nodes serve `wss://` themselves.
    pub fn nodes_serve_tls(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.termination == TlsTermination::Node)
    }

    /// Whether the nodes serve WebTransport on UDP beside `wss://` (which it needs).
    pub fn serves_webtransport(&self) -> bool {
        self.spec.web_transport && self.nodes_serve_tls()
    }

    /// The extra WebSocket path the nodes must accept: the entry URL's, when it is not `/ws`
    /// (a proxy forwards it unchanged).
    pub fn extra_ws_path(&self) -> Option<&str> {
        (self.entry.path != "/ws").then_some(self.entry.path.as_str())
    }

    /// The node URL as far as the pool knows it (pod, index and node port still open); what
    /// goes into the pool's template hash.
    pub fn pool_url(&self, cluster: &str, namespace: &str, version: &str) -> String {
        self.template.expand(&Values {
            version: Some(version),
            cluster: Some(cluster),
            namespace: Some(namespace),
            port: Some(self.port),
            ..Values::default()
        })
    }

    /// A pod's URL with its name and index filled in (`{nodePort}` still open, runtime
    /// placeholders as `$(VAR)`).
    pub fn pod_url(
        &self,
        cluster: &str,
        namespace: &str,
        version: &str,
        pod: &str,
        index: u32,
    ) -> String {
        self.template.expand(&Values {
            pod: Some(pod),
            index: Some(index),
            version: Some(version),
            cluster: Some(cluster),
            namespace: Some(namespace),
            port: Some(self.port),
            node_port: None,
        })
    }
}

/// `url` with `{nodePort}` filled in.
pub fn with_node_port(url: &str, node_port: i32) -> String {
    url.replace("{nodePort}", &node_port.to_string())
}

#[cfg(test)]
mod tests;

//! The node URL template of `spec.clientAccess` (pure): parsing into literal text and
//! placeholders, the checks that make every node's URL valid and distinct, and expansion for
//! one pod.

use std::fmt;

use super::AccessError;

/// A placeholder of the node URL template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The pod's name.
    Pod,
    /// The pod's index in its version pool.
    Index,
    /// The pod's version pool.
    Version,
    /// The SignalingCluster's name.
    Cluster,
    /// The namespace.
    Namespace,
    /// `spec.port`.
    Port,
    /// The node port of the pod's own Service.
    NodePort,
    /// The pod's IP (the kubelet fills it in).
    PodIp,
    /// The IP of the Kubernetes node the pod runs on (the kubelet fills it in).
    HostIp,
}

impl Placeholder {
    /// Every placeholder, in documentation order.
    pub const ALL: [Placeholder; 9] = [
        Self::Pod,
        Self::Index,
        Self::Version,
        Self::Cluster,
        Self::Namespace,
        Self::Port,
        Self::NodePort,
        Self::PodIp,
        Self::HostIp,
    ];

    /// The name between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pod => "pod",
            Self::Index => "index",
            Self::Version => "version",
            Self::Cluster => "cluster",
            Self::Namespace => "namespace",
            Self::Port => "port",
            Self::NodePort => "nodePort",
            Self::PodIp => "podIP",
            Self::HostIp => "hostIP",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether only the kubelet knows the value (the operator cannot route or check it).
    pub fn is_runtime(self) -> bool {
        matches!(self, Self::PodIp | Self::HostIp)
    }

    /// The environment variable (downward API) that carries a runtime value.
    pub fn env_var(self) -> Option<&'static str> {
        match self {
            Self::PodIp => Some("POD_IP"),
            Self::HostIp => Some("HOST_IP"),
            _ => None,
        }
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Slot(Placeholder),
}

/// A parsed template: text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// What a template is expanded with for one pod; `None` leaves the placeholder in place
/// (filled in later, or by the kubelet for the runtime ones).
#[derive(Debug, Clone, Default)]
pub struct Values<'a> {
    /// The pod's name.
    pub pod: Option<&'a str>,
    /// The pod's index.
    pub index: Option<u32>,
    /// The version pool.
    pub version: Option<&'a str>,
    /// The cluster's name.
    pub cluster: Option<&'a str>,
    /// The namespace.
    pub namespace: Option<&'a str>,
    /// `spec.port`.
    pub port: Option<i32>,
    /// The node port.
    pub node_port: Option<i32>,
}

impl Values<'_> {
    fn get(&self, p: Placeholder) -> Option<String> {
        match p {
            Placeholder::Pod => self.pod.map(str::to_string),
            Placeholder::Index => self.index.map(|i| i.to_string()),
            Placeholder::Version => self.version.map(str::to_string),
            Placeholder::Cluster => self.cluster.map(str::to_string),
            Placeholder::Namespace => self.namespace.map(str::to_string),
            Placeholder::Port => self.port.map(|p| p.to_string()),
            Placeholder::NodePort => self.node_port.map(|p| p.to_string()),
            Placeholder::PodIp | Placeholder::HostIp => None,
        }
    }
}

impl Template {
    /// Parses `source`: `{name}` is a placeholder, everything else text. An unknown name or an
    /// unbalanced brace is an error naming it and the known placeholders.
    pub fn parse(source: &str) -> Result<Self, AccessError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(AccessError::UnbalancedBrace(source.to_string()));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find(['{', '}'])
                .filter(|&i| after[i..].starts_with('}'))
                .ok_or_else(|| AccessError::UnbalancedBrace(source.to_string()))?;
            let name = &after[..close];
            let slot = Placeholder::parse(name).ok_or_else(|| AccessError::UnknownPlaceholder {
                name: name.to_string(),
                template: source.to_string(),
            })?;
            parts.push(Part::Slot(slot));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The placeholders used, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Slot(s) => Some(*s),
            Part::Text(_) => None,
        })
    }

    /// Whether `p` appears.
    pub fn uses(&self, p: Placeholder) -> bool {
        self.placeholders().any(|q| q == p)
    }

    /// Whether two pods of the cluster always get different text.
    pub fn distinguishes_pods(&self) -> bool {
        self.uses(Placeholder::Pod)
            || self.uses(Placeholder::NodePort)
            || self.uses(Placeholder::PodIp)
            || (self.uses(Placeholder::Index) && self.uses(Placeholder::Version))
    }

    /// The text with the given values filled in; runtime placeholders become `$(VAR)`
    /// references the kubelet expands, other missing values stay as `{name}`.
    pub fn expand(&self, values: &Values<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Slot(slot) => match (values.get(*slot), slot.env_var()) {
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(var)) => {
                        out.push_str("$(");
                        out.push_str(var);
                        out.push(')');
                    }
                    (None, None) => out.push_str(&slot.to_string()),
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            pod: Some("demo-v1-2"),
            index: Some(2),
            version: Some("v1"),
            cluster: Some("demo"),
            namespace: Some("live"),
            port: Some(7000),
            node_port: None,
        }
    }

    #[test]
    fn templates_parse_and_expand() {
        let t = Template::parse("wss://{pod}.{namespace}.signal.example/ws").unwrap();
        assert_eq!(
            t.expand(&values()),
            "wss://demo-v1-2.live.signal.example/ws"
        );
        assert!(t.distinguishes_pods());
        let t = Template::parse("wss://edge.example:{nodePort}/ws").unwrap();
        assert_eq!(t.expand(&values()), "wss://edge.example:{nodePort}/ws");
        let with_port = Values {
            node_port: Some(31001),
            ..values()
        };
        assert_eq!(t.expand(&with_port), "wss://edge.example:31001/ws");
        let t = Template::parse("ws://{podIP}:{port}/ws").unwrap();
        assert_eq!(t.expand(&values()), "ws://$(POD_IP):7000/ws");
        assert!(t.uses(Placeholder::PodIp));
        let t = Template::parse("ws://{hostIP}:{port}/{cluster}-{index}").unwrap();
        assert_eq!(t.expand(&values()), "ws://$(HOST_IP):7000/demo-2");
        assert!(!t.distinguishes_pods());
        assert!(
            Template::parse("wss://x/{version}/{index}/ws")
                .unwrap()
                .distinguishes_pods()
        );
        let plain = Template::parse("wss://signal.example/ws").unwrap();
        assert_eq!(plain.placeholders().count(), 0);
        assert_eq!(plain.expand(&values()), "wss://signal.example/ws");
    }

    #[test]
    fn unknown_placeholders_and_bad_braces_are_refused() {
        match Template::parse("wss://{podName}.example/ws") {
            Err(AccessError::UnknownPlaceholder { name, template }) => {
                assert_eq!(name, "podName");
                assert_eq!(template, "wss://{podName}.example/ws");
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "wss://{pod.example/ws",
            "wss://pod}.example/ws",
            "wss://{{pod}}/ws",
        ] {
            assert!(
                matches!(
                    Template::parse(bad),
                    Err(AccessError::UnbalancedBrace(_) | AccessError::UnknownPlaceholder { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Template::parse("wss://{}/ws"),
            Err(AccessError::UnknownPlaceholder { .. })
        ));
    }
}

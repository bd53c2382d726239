//! Which namespaces the controllers watch: every namespace (a cluster-wide install), or one
//! (`--watch-namespace`, the chart's `clusterWide: false` with Roles instead of ClusterRoles).

use kube::api::Api;
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource};

/// The namespaces the controllers watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace.
    #[default]
    All,
    /// One namespace.
    Namespace(String),
}

impl WatchScope {
    /// `Some(ns)` scopes to one namespace; `None` or an empty name means every namespace.
    pub fn from_flag(namespace: Option<&str>) -> Self {
        match namespace.map(str::trim) {
            Some(ns) if !ns.is_empty() => Self::Namespace(ns.to_string()),
            _ => Self::All,
        }
    }

    /// An API handle for kind `K` over the watched namespaces.
    pub fn api<K>(&self, client: Client) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Self::All => Api::all(client),
            Self::Namespace(ns) => Api::namespaced(client, ns),
        }
    }

    /// Whether objects of `namespace` are watched.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Namespace(ns) => ns == namespace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_everywhere() {
        assert_eq!(WatchScope::from_flag(None), WatchScope::All);
        assert_eq!(WatchScope::from_flag(Some(" ")), WatchScope::All);
        let one = WatchScope::from_flag(Some("live"));
        assert!(one.contains("live") && !one.contains("other"));
        assert!(WatchScope::All.contains("anything"));
    }
}

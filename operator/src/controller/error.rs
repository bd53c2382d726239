//! The reconcilers' one error type (both controllers), with low-cardinality labels for
//! metrics and Event reasons.

use crate::placement::PlacementError;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),

    /// The object's spec cannot be acted on (the CRD's validation should have refused it).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// The object lacks a field every stored object has (name, namespace, uid).
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    /// `spec.clientAccess` cannot be acted on.
    #[error("clientAccess: {0}")]
    ClientAccess(#[source] crate::controller::cluster::access::AccessError),

    /// No placement satisfies the inputs.
    #[error("placement failed: {0}")]
    Placement(#[from] PlacementError),

    /// A value could not be (de)serialized.
    #[error("serialization failed: {0}")]
    Serialization(#[from] serde_json::Error),

    /// The cluster's etcd could not be reached or refused a request.
    #[error("etcd: {0}")]
    Etcd(#[from] crate::etcd::EtcdError),

    /// Adding, running or removing the cleanup finalizer failed (boxed: it wraps this type).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error)
    }
}

impl Error {
    /// A short, fixed label for metrics and Event reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube_api",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::ClientAccess(_) => "client_access",
            Self::MissingObjectKey(_) => "missing_object_key",
            Self::Placement(_) => "placement",
            Self::Serialization(_) => "serialization",
            Self::Etcd(_) => "etcd",
            Self::Finalizer(_) => "finalizer",
        }
    }

    /// The label of what broke: the reconcile's own error inside a finalizer error (not
    /// "finalizer"), else [`Error::metric_label`].
    pub fn root_label(&self) -> &'static str {
        match self {
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => self.metric_label(),
            },
            other => other.metric_label(),
        }
    }

    /// Whether retrying without a spec change can help (invalid specs wait for an edit).
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            Self::InvalidSpec(_)
                | Self::ClientAccess(_)
                | Self::MissingObjectKey(_)
                | Self::Placement(_)
        )
    }
}

/// Result of reconciler steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_and_distinct() {
        let errors = [
            Error::InvalidSpec("x".into()),
            Error::MissingObjectKey("uid"),
            Error::Placement(PlacementError::NoWeight),
            Error::Serialization(serde_json::from_str::<u8>("x").unwrap_err()),
            Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject)),
            Error::Etcd(crate::etcd::EtcdError::NoEndpoints),
            Error::ClientAccess(
                crate::controller::cluster::access::AccessError::NotDistinct("x".into()),
            ),
        ];
        let labels: std::collections::BTreeSet<_> =
            errors.iter().map(Error::metric_label).collect();
        assert_eq!(labels.len(), errors.len());
        assert!(
            labels
                .iter()
                .all(|l| l.len() <= 20 && l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
        assert!(!errors[0].is_transient());
        assert!(errors[3].is_transient());
        assert_eq!(errors[1].to_string(), "object has no uid");
        assert!(errors[5].is_transient());
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::CleanupFailed(
            Error::InvalidSpec("x".into()),
        )));
        assert_eq!(wrapped.root_label(), "invalid_spec");
        assert_eq!(wrapped.metric_label(), "finalizer");
    }
}

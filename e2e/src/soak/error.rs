//! The soak's error type.

use std::time::Duration;

use thiserror::Error;

use crate::cluster::ClusterError;

/// Why the soak could not set up, drive or read the fleet (not a checked violation).
#[derive(Debug, Error)]
pub enum SoakError {
    /// The local cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// An etcd request failed.
    #[error("fleet etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A process or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Something that should happen promptly did not.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
    },
    /// The pod a fault was aimed at was deleted before the fault reached it (a scale-down or
    /// a replacement between choosing the target and injecting).
    #[error("pod {0} was deleted before the fault reached it")]
    PodGone(String),
    /// A setup step failed for another reason.
    #[error("{0}")]
    Setup(String),
}

impl SoakError {
    /// An [`SoakError::Io`] with context.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| SoakError::Io { what, source }
    }
}

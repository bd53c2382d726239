//! etcd client cache: one connected [`etcd_client::Client`] per endpoint list, shared by every
//! component that talks to the same etcd cluster.
//!
//! This is the minimal version the shard manager and rollout reconciler compile against; the
//! operator runtime owns the full one (TLS secrets, health) and keeps this method signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use etcd_client::Client;

/// Connecting to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint list is empty.
    #[error("no etcd endpoints given")]
    NoEndpoints,
    /// The client could not connect.
    #[error("connecting to etcd {endpoints:?} failed: {source}")]
    Connect {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// The client error.
        #[source]
        source: etcd_client::Error,
    },
}

/// A cache of etcd clients keyed by endpoint list (cheap to clone).
#[derive(Clone, Default)]
pub struct EtcdClients {
    clients: Arc<Mutex<HashMap<Vec<String>, Client>>>,
}

impl std::fmt::Debug for EtcdClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClients").finish_non_exhaustive()
    }
}

impl EtcdClients {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client for `endpoints`, connecting on first use (plain connections).
    pub async fn client(&self, endpoints: &[String]) -> Result<Client, Error> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let key = endpoints.to_vec();
        if let Some(client) = self.lock().get(&key) {
            return Ok(client.clone());
        }
        let client = Client::connect(&key, None)
            .await
            .map_err(|source| Error::Connect {
                endpoints: key.clone(),
                source,
            })?;
        Ok(self.lock().entry(key).or_insert(client).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<String>, Client>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

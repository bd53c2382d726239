//! etcd clients of the signaling clusters: one `etcd_client::Client` per etcd (endpoint list
//! and TLS identity), shared by every cluster, controller and task that talks to it.
//!
//! A client is made on first use and checked with one `status` call under the connect
//! timeout, so a wrong endpoint fails the reconcile with a clear error instead of hanging; a
//! client that failed its check is not cached. With `spec.etcd.tlsSecret` the Secret (same
//! namespace as the cluster) provides `ca.crt` and, for mutual TLS, `tls.crt` + `tls.key`;
//! a fingerprint of the Secret's TLS material (SHA-256 of `ca.crt`, `tls.crt`, `tls.key`) is
//! part of the cache key, so a rotated certificate gets a new connection on the next
//! reconcile, while a Secret rewritten with the same content (a new resourceVersion from a
//! label change or a cert-manager re-sync) keeps the connection and every loop using it.
//! etcd-client (tonic) reconnects a cached client by itself after network errors; the
//! endpoint guard beside each cached client keeps it off members refusing connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use switchboard_contract::endpoints;
use tokio_util::sync::DropGuard;

use crate::crd::{EtcdSpec, SignalingCluster};

/// Most distinct etcd targets kept connected at once (a bound, not a tuning knob: each
/// SignalingCluster names one).
const MAX_CLIENTS: usize = 1024;

/// Failures reaching a cluster's etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The cluster names no endpoint.
    #[error("spec.etcd.endpoints is empty")]
    NoEndpoints,
    /// The TLS Secret does not exist.
    #[error("etcd TLS Secret {0} not found")]
    TlsSecretMissing(String),
    /// The TLS Secret lacks a key or has an invalid combination of keys.
    #[error("etcd TLS Secret {secret}: {problem}")]
    TlsSecretInvalid {
        /// `namespace/name`.
        secret: String,
        /// What is wrong.
        problem: String,
    },
    /// Reading the TLS Secret failed.
    #[error("reading the etcd TLS Secret {secret}: {source}")]
    Kube {
        /// `namespace/name`.
        secret: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Connecting or an etcd request failed.
    #[error("etcd at {endpoints}: {source}")]
    Request {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The etcd error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer in time.
    #[error("etcd at {endpoints} did not answer within {after:?} ({what})")]
    Timeout {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// What was attempted.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A compare-and-set lost against a concurrent writer (retried on the next reconcile).
    #[error("a concurrent writer changed the {0} key")]
    Conflict(&'static str),
    /// A cluster name does not fit the etcd keyspace.
    #[error("etcd key: {0}")]
    Key(#[from] switchboard_contract::keys::KeyError),
}

/// The module's error under its short name.
pub type Error = EtcdError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    endpoints: Vec<String>,
    // (namespace/name, content fingerprint) of the TLS Secret.
    tls: Option<(String, String)>,
}

impl Target {
    fn id(&self) -> String {
        match &self.tls {
            Some((secret, version)) => {
                format!("{} tls={secret}@{version}", self.endpoints.join(","))
            }
            None => self.endpoints.join(","),
        }
    }
}

/// The cache of etcd clients. Cheap to clone (shared state).
#[derive(Clone)]
pub struct EtcdClients {
    kube: Client,
    connect_timeout: Duration,
    clients: Arc<Mutex<HashMap<Target, Guarded>>>,
}

/// A cached client and its endpoint guard (docs/reliability.md, finding 15), stopped when
/// the entry goes.
struct Guarded {
    client: etcd_client::Client,
    _guard: DropGuard,
}

impl std::fmt::Debug for EtcdClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClients")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdClients {
    /// An empty cache; TLS Secrets are read with `kube`.
    pub fn new(kube: Client, connect_timeout: Duration) -> Self {
        Self {
            kube,
            connect_timeout,
            clients: Arc::default(),
        }
    }

    /// How long connecting (and each request of the operator's own etcd calls) may take.
    pub fn timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Target, Guarded>> {
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The client of `cluster`'s etcd, connecting (and checking the connection) if needed.
    pub async fn for_cluster(
        &self,
        cluster: &SignalingCluster,
    ) -> Result<etcd_client::Client, EtcdError> {
        Ok(self.connection(cluster).await?.0)
    }

    /// Like [`Self::for_cluster`], with a string that changes whenever the client does
    /// (other endpoints, a rotated TLS Secret): long-running users restart on a change.
    pub async fn connection(
        &self,
        cluster: &SignalingCluster,
    ) -> Result<(etcd_client::Client, String), EtcdError> {
        let namespace = cluster.namespace().unwrap_or_default();
        self.get_with_id(&namespace, &cluster.spec.etcd).await
    }

    /// The client for `spec` (TLS Secret looked up in `namespace`).
    pub async fn get(
        &self,
        namespace: &str,
        spec: &EtcdSpec,
    ) -> Result<etcd_client::Client, EtcdError> {
        Ok(self.get_with_id(namespace, spec).await?.0)
    }

    async fn get_with_id(
        &self,
        namespace: &str,
        spec: &EtcdSpec,
    ) -> Result<(etcd_client::Client, String), EtcdError> {
        let endpoints = endpoints(spec, namespace)?;
        let (tls_key, tls) = match &spec.tls_secret {
            Some(name) => {
                let (version, tls) = self.read_tls(namespace, name).await?;
                (Some((format!("{namespace}/{name}"), version)), Some(tls))
            }
            None => (None, None),
        };
        let target = Target {
            endpoints: endpoints.clone(),
            tls: tls_key,
        };
        let id = target.id();
        if let Some(cached) = self.lock().get(&target) {
            return Ok((cached.client.clone(), id));
        }
        let guarded = self.connect(&endpoints, tls).await?;
        let client = guarded.client.clone();
        let mut clients = self.lock();
        // A rotated Secret replaces the old connection to the same etcd.
        clients.retain(|t, _| {
            !(t.endpoints == target.endpoints
                && t.tls.as_ref().map(|x| &x.0) == target.tls.as_ref().map(|x| &x.0))
        });
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(target, guarded);
        Ok((client, id))
    }

    /// A plain (non-TLS) client for `endpoints`; prefer [`Self::for_cluster`], which honours
    /// the cluster's TLS Secret.
    pub async fn client(&self, endpoints: &[String]) -> Result<etcd_client::Client, EtcdError> {
        let spec = EtcdSpec {
            endpoints: endpoints.to_vec(),
            tls_secret: None,
        };
        self.get("", &spec).await
    }

    /// An already connected client for `spec` of a cluster in `namespace`, without reading its
    /// TLS Secret (for cleanup when the Secret may be gone already).
    pub fn cached(&self, namespace: &str, spec: &EtcdSpec) -> Option<etcd_client::Client> {
        let endpoints = endpoints(spec, namespace).ok()?;
        self.lock()
            .iter()
            .find(|(t, _)| t.endpoints == endpoints)
            .map(|(_, c)| c.client.clone())
    }

    async fn read_tls(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(String, TlsOptions), EtcdError> {
        let secret_name = format!("{namespace}/{name}");
        let api: Api<Secret> = Api::namespaced(self.kube.clone(), namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|source| EtcdError::Kube {
                secret: secret_name.clone(),
                source,
            })?
            .ok_or_else(|| EtcdError::TlsSecretMissing(secret_name.clone()))?;
        let data = secret.data.clone().unwrap_or_default();
        let field = |key: &str| data.get(key).map(|b| b.0.clone());
        let invalid = |problem: &str| EtcdError::TlsSecretInvalid {
            secret: secret_name.clone(),
            problem: problem.to_string(),
        };
        let ca = field("ca.crt").ok_or_else(|| invalid("has no ca.crt"))?;
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
        match (field("tls.crt"), field("tls.key")) {
            (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(cert, key)),
            (None, None) => {}
            _ => return Err(invalid("has only one of tls.crt and tls.key")),
        }
        Ok((tls_fingerprint(&secret), tls))
    }

    async fn connect(
        &self,
        endpoints: &[String],
        tls: Option<TlsOptions>,
    ) -> Result<Guarded, EtcdError> {
        let joined = endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_require_leader(true);
        if let Some(tls) = tls {
            options = options.with_tls(tls);
        }
        let request = |source| EtcdError::Request {
            endpoints: joined.clone(),
            source,
        };
        let timeout = |what| EtcdError::Timeout {
            endpoints: joined.clone(),
            what,
            after: self.connect_timeout,
        };
        let mut client = tokio::time::timeout(
            self.connect_timeout,
            etcd_client::Client::connect(endpoints, Some(options)),
        )
        .await
        .map_err(|_| timeout("connect"))?
        .map_err(request)?;
        let guard = endpoints::guard(client.clone(), endpoints.to_vec()).await;
        tokio::time::timeout(self.connect_timeout, client.status())
            .await
            .map_err(|_| timeout("status"))?
            .map_err(request)?;
        tracing::info!(endpoints = %joined, "connected to etcd");
        Ok(Guarded {
            client,
            _guard: guard,
        })
    }
}

/// SHA-256 (hex) over the TLS keys of an etcd TLS Secret, each length-prefixed: equal for
/// equal content whatever the Secret's resourceVersion, metadata or other keys.
fn tls_fingerprint(secret: &Secret) -> String {
    use sha2::Digest;
    let data = secret.data.clone().unwrap_or_default();
    let mut hash = sha2::Sha256::new();
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        match data.get(key) {
            Some(bytes) => {
                hash.update([1u8]);
                hash.update((bytes.0.len() as u64).to_be_bytes());
                hash.update(&bytes.0);
            }
            None => hash.update([0u8]),
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The trimmed, non-empty endpoints of `spec` for a cluster in `namespace`, sorted (the order
/// does not matter to the client, so it must not split the cache).
fn endpoints(spec: &EtcdSpec, namespace: &str) -> Result<Vec<String>, EtcdError> {
    let mut endpoints: Vec<String> = spec
        .endpoints
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(|e| in_namespace(e, namespace))
        .collect();
    endpoints.sort();
    endpoints.dedup();
    if endpoints.is_empty() {
        Err(EtcdError::NoEndpoints)
    } else {
        Ok(endpoints)
    }
}

/// `endpoint` as the cluster's node pods resolve it: a single-label host such as `etcd` in
/// `http://etcd:2379` is a Service of the cluster's namespace for them (their DNS search path
/// starts there), while the operator runs in another namespace, so it names the Service in
/// full (`etcd.NAMESPACE.svc`). Addresses, dotted names and `localhost` stay as they are.
fn in_namespace(endpoint: &str, namespace: &str) -> String {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, endpoint),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    let single_label = !host.is_empty()
        && !host.contains(['.', ':', '[', '@'])
        && !host.eq_ignore_ascii_case("localhost")
        && !host.chars().all(|c| c.is_ascii_digit());
    if namespace.is_empty() || !single_label {
        return endpoint.to_string();
    }
    let qualified = format!("{host}.{namespace}.svc{}{path}", &authority[host.len()..]);
    match scheme {
        Some(scheme) => format!("{scheme}://{qualified}"),
        None => qualified,
    }
}

/// Runs one etcd request under `after`, naming `what` in the timeout error.
pub async fn bounded<T>(
    endpoints: &EtcdSpec,
    after: Duration,
    what: &'static str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, EtcdError> {
    let joined = || endpoints.endpoints.join(",");
    match tokio::time::timeout(after, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(EtcdError::Request {
            endpoints: joined(),
            source,
        }),
        Err(_) => Err(EtcdError::Timeout {
            endpoints: joined(),
            what,
            after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_label_hosts_are_services_of_the_clusters_namespace() {
        let cases = [
            ("http://etcd:2379", "http://etcd.live.svc:2379"),
            (
                "https://etcd-client:2379/",
                "https://etcd-client.live.svc:2379/",
            ),
            ("etcd:2379", "etcd.live.svc:2379"),
            ("http://etcd.other:2379", "http://etcd.other:2379"),
            (
                "http://etcd.other.svc.cluster.local:2379",
                "http://etcd.other.svc.cluster.local:2379",
            ),
            ("http://10.0.0.7:2379", "http://10.0.0.7:2379"),
            ("http://[fd00::7]:2379", "http://[fd00::7]:2379"),
            ("http://localhost:2379", "http://localhost:2379"),
        ];
        for (given, want) in cases {
            assert_eq!(in_namespace(given, "live"), want, "{given}");
        }
        assert_eq!(in_namespace("http://etcd:2379", ""), "http://etcd:2379");
        let spec = EtcdSpec {
            endpoints: vec![
                " http://etcd:2379 ".into(),
                "http://etcd.live.svc:2379".into(),
            ],
            tls_secret: None,
        };
        assert_eq!(
            endpoints(&spec, "live").unwrap(),
            vec!["http://etcd.live.svc:2379".to_string()]
        );
    }

    fn secret(version: &str, ca: &str, label: Option<&str>) -> Secret {
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "etcd-tls", "namespace": "ns", "resourceVersion": version},
            "data": {"ca.crt": k8s_openapi::ByteString(ca.as_bytes().to_vec())}
        }))
        .unwrap();
        if let Some(label) = label {
            secret.metadata.labels = Some([("rotated".to_string(), label.to_string())].into());
        }
        secret
    }

    #[test]
    fn a_secret_rewritten_with_the_same_content_keeps_the_connection_key() {
        let first = secret("10", "CA-1", None);
        let resynced = secret("11", "CA-1", Some("yes"));
        let rotated = secret("12", "CA-2", None);
        let target = |s: &Secret| Target {
            endpoints: vec!["https://etcd:2379".into()],
            tls: Some(("ns/etcd-tls".into(), tls_fingerprint(s))),
        };
        assert_eq!(target(&first), target(&resynced));
        assert_eq!(target(&first).id(), target(&resynced).id());
        assert_ne!(target(&first), target(&rotated));
        assert_ne!(target(&first).id(), target(&rotated).id());
        // Moving bytes between keys changes the fingerprint.
        let mut moved = secret("13", "", None);
        if let Some(data) = moved.data.as_mut() {
            data.insert("tls.crt".into(), k8s_openapi::ByteString(b"CA-1".to_vec()));
        }
        assert_ne!(tls_fingerprint(&first), tls_fingerprint(&moved));
    }

    #[test]
    fn endpoints_are_normalized() {
        let spec = EtcdSpec {
            endpoints: vec![
                " http://b:2379".into(),
                "http://a:2379".into(),
                "".into(),
                "http://a:2379".into(),
            ],
            tls_secret: None,
        };
        assert_eq!(
            endpoints(&spec, "").unwrap(),
            vec!["http://a:2379".to_string(), "http://b:2379".to_string()]
        );
        let empty = EtcdSpec {
            endpoints: vec![" ".into()],
            tls_secret: None,
        };
        assert!(matches!(endpoints(&empty, ""), Err(EtcdError::NoEndpoints)));
    }
}

//! TLS for `wss://`: a rustls server config (ring provider, TLS 1.2 and 1.3) whose certificate
//! comes from the PEM files given with `--tls-cert` / `--tls-key` and is reloaded when they
//! change (a rotated Kubernetes Secret), without touching connections already established.
//!
//! The config is built once around a [`CertStore`] (rustls asks it for the certificate on each
//! handshake); [`TlsReloader::reload_if_changed`] swaps the store's certificate when the files'
//! modification time or size changed and they hold a valid pair. A pair that cannot be read,
//! parsed or whose key does not match its certificate is refused and the last good certificate
//! stays: a half-written rotation never takes the listener down.

use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed as PEM.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// No certificate in the chain file.
    #[error("no certificate found in {0}")]
    NoCertificate(String),
    /// No private key in the key file.
    #[error("no private key found in {0}")]
    NoKey(String),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn open(path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads `files` into a certificate chain with its signing key; the key must match the
/// chain's first certificate.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_name = files.cert.display().to_string();
    let key_name = files.key.display().to_string();
    let certs = rustls_pemfile::certs(&mut open(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: cert_name.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_name));
    }
    let key = rustls_pemfile::private_key(&mut open(&files.key)?)
        .map_err(|source| TlsError::Read {
            path: key_name.clone(),
            source,
        })?
        .ok_or(TlsError::NoKey(key_name))?;
    Ok(CertifiedKey::from_der(certs, key, &provider())?)
}

/// The certificate every new handshake gets; replaced whole on reload.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, key: CertifiedKey) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
    }

    /// The DER of the certificate new handshakes get (its chain's first certificate).
    pub fn certificate(&self) -> Vec<u8> {
        self.get()
            .end_entity_cert()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Fingerprint of a file for change detection (follows symlinks, as a Secret volume's are).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// What a reload attempt did.
#[derive(Debug)]
pub enum Reload {
    /// The files did not change.
    Unchanged,
    /// A new certificate serves new handshakes.
    Reloaded,
    /// The files changed but hold no valid pair; the last good certificate stays.
    Refused(TlsError),
}

/// The node's TLS: the acceptor for the listener and the reloader of its certificate.
#[derive(Clone)]
pub struct TlsReloader {
    files: TlsFiles,
    store: Arc<CertStore>,
    stamps: Arc<RwLock<(Stamp, Stamp)>>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Loads `files` (a node with TLS does not start without a valid pair).
    pub fn new(files: &TlsFiles) -> Result<Self, TlsError> {
        let stamps = (stamp(&files.cert), stamp(&files.key));
        let key = load(files)?;
        Ok(Self {
            files: files.clone(),
            store: Arc::new(CertStore {
                current: RwLock::new(Arc::new(key)),
            }),
            stamps: Arc::new(RwLock::new(stamps)),
        })
    }

    /// A TLS acceptor whose handshakes get the store's current certificate.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let resolver: Arc<dyn ResolvesServerCert> = self.store.clone();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// A TLS 1.3 config for QUIC (WebTransport over HTTP/3, ALPN `h3`) with the same
    /// certificate store, so a reload reaches both listeners. No early data: 0-RTT is off.
    pub fn quic_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let resolver: Arc<dyn ResolvesServerCert> = self.store.clone();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h3".to_vec()];
        Ok(config)
    }

    /// The certificate store (what new handshakes get).
    pub fn store(&self) -> &CertStore {
        &self.store
    }

    /// Loads the files again if they changed since the last attempt.
    pub fn reload_if_changed(&self) -> Reload {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        {
            let mut stamps = self
                .stamps
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *stamps == now {
                return Reload::Unchanged;
            }
            // A failed attempt is not retried until the files change again (a rotation that
            // writes the certificate and the key one after the other changes them twice).
            *stamps = now;
        }
        match load(&self.files) {
            Ok(key) => {
                self.store.set(key);
                Reload::Reloaded
            }
            Err(e) => Reload::Refused(e),
        }
    }
}

/// How often the certificate files are checked for a change.
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Checks the files every [`RELOAD_EVERY`] until `shutdown` resolves, counting outcomes in
/// `switchboard_tls_reloads_total`.
pub async fn watch(
    reloader: TlsReloader,
    metrics: crate::metrics::Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        // File I/O and key parsing are small; keep them off the async workers anyway.
        let attempt = reloader.clone();
        match tokio::task::spawn_blocking(move || attempt.reload_if_changed()).await {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Reloaded) => {
                metrics.tls_reloads.with_label_values(&["reloaded"]).inc();
                tracing::info!(cert = %reloader.files.cert.display(), "TLS certificate reloaded; new connections get it");
            }
            Ok(Reload::Refused(error)) => {
                metrics.tls_reloads.with_label_values(&["refused"]).inc();
                tracing::warn!(%error, "TLS certificate files changed but are not a valid pair; keeping the last good certificate");
            }
            Err(error) => tracing::warn!(%error, "TLS reload task failed"),
        }
    }
}

//! Command-line flags of cluster mode (`serve` flattens [`ClusterArgs`]) and the etcd client
//! they configure. Without `--etcd-endpoints` the node runs standalone.
//!
//! The node's name and advertised URL are server settings (`--node-name`, `--advertise-url`
//! of `serve`), so they are not repeated here; [`ClusterArgs::identity`] takes them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use switchboard_contract::keys::{KeyError, Keyspace};

/// Cluster-mode flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// etcd endpoints (comma-separated, e.g. `http://10.0.0.5:2379`); empty: standalone mode.
    #[arg(long, env = "SWITCHBOARD_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,

    /// Kubernetes namespace of the SignalingCluster (second segment of the etcd prefix).
    #[arg(long, env = "SWITCHBOARD_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Name of the SignalingCluster (third segment of the etcd prefix); required with etcd.
    #[arg(long, env = "SWITCHBOARD_CLUSTER")]
    pub cluster: Option<String>,

    /// PEM CA bundle that signs the etcd server certificates (enables TLS).
    #[arg(long, env = "SWITCHBOARD_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,

    /// PEM client certificate for etcd mutual TLS (with `--etcd-key-file`).
    #[arg(long, env = "SWITCHBOARD_ETCD_CERT_FILE", requires = "etcd_key_file")]
    pub etcd_cert_file: Option<PathBuf>,

    /// PEM private key of `--etcd-cert-file`.
    #[arg(long, env = "SWITCHBOARD_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    pub etcd_key_file: Option<PathBuf>,

    /// Server name to verify in etcd's certificate, when it differs from the endpoint host.
    #[arg(long, env = "SWITCHBOARD_ETCD_SERVER_NAME")]
    pub etcd_server_name: Option<String>,

    /// etcd user (with `--etcd-password-file`), when etcd authentication is enabled.
    #[arg(
        long,
        env = "SWITCHBOARD_ETCD_USERNAME",
        requires = "etcd_password_file"
    )]
    pub etcd_username: Option<String>,

    /// File holding the etcd user's password.
    #[arg(
        long,
        env = "SWITCHBOARD_ETCD_PASSWORD_FILE",
        requires = "etcd_username"
    )]
    pub etcd_password_file: Option<PathBuf>,
}

/// Bad or incomplete cluster flags, or an etcd client that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// A flag required in cluster mode is missing.
    #[error("--{0} is required with --etcd-endpoints")]
    Missing(&'static str),
    /// A name does not fit the etcd keyspace.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A TLS or password file could not be read.
    #[error("reading {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The advertised URL is not a ws:// or wss:// URL.
    #[error("--advertise-url {0:?} must start with ws:// or wss://")]
    AdvertiseUrl(String),
    /// The etcd client refused the options.
    #[error("etcd client: {0}")]
    Client(#[from] etcd_client::Error),
}

/// The identity of this node in a cluster, resolved from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// The cluster's keyspace.
    pub keys: Keyspace,
    /// This node's pod name.
    pub node_name: String,
    /// The URL clients are redirected to.
    pub advertise_url: String,
}

impl ClusterArgs {
    /// True when `--etcd-endpoints` was given (cluster mode).
    pub fn enabled(&self) -> bool {
        self.etcd_endpoints.iter().any(|e| !e.trim().is_empty())
    }

    /// Resolves the keyspace and checks the node name and advertised URL against it.
    pub fn identity(
        &self,
        node_name: &str,
        advertise_url: &str,
    ) -> Result<ClusterIdentity, ArgsError> {
        let cluster = self
            .cluster
            .as_deref()
            .ok_or(ArgsError::Missing("cluster"))?;
        let keys = Keyspace::new(&self.namespace, cluster)?;
        // Validates the name as a key segment.
        keys.node(node_name)?;
        if !(advertise_url.starts_with("ws://") || advertise_url.starts_with("wss://")) {
            return Err(ArgsError::AdvertiseUrl(advertise_url.to_owned()));
        }
        Ok(ClusterIdentity {
            keys,
            node_name: node_name.to_owned(),
            advertise_url: advertise_url.to_owned(),
        })
    }

    /// The etcd connection options: connect timeout, HTTP/2 keepalive (a silently dead
    /// connection is noticed within seconds), require-leader, TLS and user when given.
    pub fn connect_options(&self) -> Result<ConnectOptions, ArgsError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_require_leader(true);
        if self.etcd_ca_file.is_some() || self.etcd_cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.etcd_ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.etcd_cert_file, &self.etcd_key_file) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            if let Some(name) = &self.etcd_server_name {
                tls = tls.domain_name(name.clone());
            }
            options = options.with_tls(tls);
        }
        if let (Some(user), Some(file)) = (&self.etcd_username, &self.etcd_password_file) {
            let password = String::from_utf8_lossy(&read(file)?).trim_end().to_owned();
            options = options.with_user(user.clone(), password);
        }
        Ok(options)
    }

    /// The etcd endpoints given, trimmed, without empty ones.
    pub fn endpoints(&self) -> Vec<String> {
        self.etcd_endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect()
    }

    /// Builds the etcd client. Without authentication this does not contact etcd (the
    /// connection is made lazily and re-made after failures); with a user it authenticates.
    pub async fn connect(&self) -> Result<Client, ArgsError> {
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return Err(ArgsError::Missing("etcd-endpoints"));
        }
        Ok(Client::connect(endpoints, Some(self.connect_options()?)).await?)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ArgsError> {
    std::fs::read(path).map_err(|source| ArgsError::File {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    #[test]
    fn parses_the_flags() {
        let cli = Cli::try_parse_from([
            "node",
            "--etcd-endpoints",
            "http://127.0.0.1:2379,http://127.0.0.2:2379",
            "--namespace",
            "prod",
            "--cluster",
            "main",
        ])
        .unwrap();
        assert!(cli.cluster.enabled());
        assert_eq!(cli.cluster.etcd_endpoints.len(), 2);
        let identity = cli
            .cluster
            .identity("main-0", "ws://127.0.1.1:7000/ws")
            .unwrap();
        assert_eq!(identity.keys.prefix(), "/switchboard/prod/main/");
        assert_eq!(identity.node_name, "main-0");
    }

    #[test]
    fn standalone_without_endpoints_and_clear_errors_when_incomplete() {
        let cli = Cli::try_parse_from(["node"]).unwrap();
        assert!(!cli.cluster.enabled());
        let args = ClusterArgs {
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            namespace: "default".into(),
            ..ClusterArgs::default()
        };
        assert!(matches!(
            args.identity("n", "ws://x/ws"),
            Err(ArgsError::Missing("cluster"))
        ));
        let args = ClusterArgs {
            cluster: Some("c".into()),
            ..args
        };
        assert!(matches!(
            args.identity("n", "http://x"),
            Err(ArgsError::AdvertiseUrl(_))
        ));
        assert!(matches!(
            args.identity("a/b", "ws://x/ws"),
            Err(ArgsError::Key(_))
        ));
        assert!(Cli::try_parse_from(["node", "--etcd-cert-file", "c.pem"]).is_err());
        let args = ClusterArgs {
            etcd_ca_file: Some("/nonexistent/ca.pem".into()),
            ..ClusterArgs::default()
        };
        assert!(matches!(
            args.connect_options(),
            Err(ArgsError::File { .. })
        ));
    }
}

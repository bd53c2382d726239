//! API reads a pod needs before it starts: the Secrets and ConfigMaps it references and its
//! service-account tokens (TokenRequest bound to the pod), plus the in-pod API access a real
//! cluster gives through `/var/run/secrets/kubernetes.io/serviceaccount`: since a process here
//! cannot see that path, the runner writes a kubeconfig next to the materialised token and CA
//! and points `KUBECONFIG` at it (kube-rs and client-go read `KUBECONFIG` first).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, PostParams};

use super::launch::{MountRewrite, ObjectSources};
use super::refs::References;
use super::volumes::Tokens;

/// Where Kubernetes mounts the service-account token, CA and namespace.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Errors reading what a pod needs.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// An API call failed.
    #[error("reading {what}: {source}")]
    Api {
        /// What was read.
        what: String,
        /// The cause.
        source: kube::Error,
    },
    /// Writing the in-pod kubeconfig failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Reads every referenced Secret and ConfigMap (absent ones are left out) and requests the
/// service-account tokens.
pub async fn fetch(
    client: &kube::Client,
    pod: &Pod,
    refs: &References,
) -> Result<(ObjectSources, Tokens), FetchError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut sources = ObjectSources::default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in &refs.secrets {
        let found = secrets
            .get_opt(name)
            .await
            .map_err(|source| FetchError::Api {
                what: format!("secret {ns}/{name}"),
                source,
            })?;
        if let Some(secret) = found {
            let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            for (k, v) in secret.data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            sources.secrets.insert(name.clone(), data);
        }
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in &refs.config_maps {
        let found = config_maps
            .get_opt(name)
            .await
            .map_err(|source| FetchError::Api {
                what: format!("configmap {ns}/{name}"),
                source,
            })?;
        if let Some(cm) = found {
            let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (k, v) in cm.data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            for (k, v) in cm.binary_data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            sources.config_maps.insert(name.clone(), data);
        }
    }
    let mut tokens = Tokens::new();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    for (audience, expiration) in &refs.token_audiences {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: (!audience.is_empty()).then(|| vec![audience.clone()]),
                expiration_seconds: Some(*expiration),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            }),
            ..Default::default()
        };
        let issued: TokenRequest = accounts
            .create_subresource("token", &sa, &PostParams::default(), &request)
            .await
            .map_err(|source| FetchError::Api {
                what: format!("token for serviceaccount {ns}/{sa}"),
                source,
            })?;
        let token = issued.status.and_then(|s| s.token).unwrap_or_default();
        tokens.insert(audience.clone(), token);
    }
    Ok((sources, tokens))
}

/// If the container mounts the service-account volume, writes `<pod dir>/kubeconfig` using its
/// token and CA files and returns the path (to export as `KUBECONFIG`).
pub fn write_in_pod_kubeconfig(
    pod_dir: &Path,
    mounts: &[MountRewrite],
    apiserver_url: &str,
    namespace: &str,
) -> Result<Option<PathBuf>, FetchError> {
    let Some(mount) = mounts
        .iter()
        .find(|m| m.mount_path == SERVICE_ACCOUNT_MOUNT)
    else {
        return Ok(None);
    };
    let dir = mount.local.to_string_lossy();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: in-cluster\n  cluster:\n    server: {apiserver_url}\n    certificate-authority: {dir}/ca.crt\nusers:\n- name: service-account\n  user:\n    tokenFile: {dir}/token\ncontexts:\n- name: in-cluster\n  context:\n    cluster: in-cluster\n    user: service-account\n    namespace: {namespace}\ncurrent-context: in-cluster\n"
    );
    let path = pod_dir.join("kubeconfig");
    std::fs::create_dir_all(pod_dir).map_err(|source| FetchError::Io {
        path: pod_dir.to_path_buf(),
        source,
    })?;
    std::fs::write(&path, text).map_err(|source| FetchError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_points_at_the_materialised_token() {
        let dir =
            std::env::temp_dir().join(format!("pod-runner-kubeconfig-{}", std::process::id()));
        let mounts = vec![MountRewrite {
            mount_path: SERVICE_ACCOUNT_MOUNT.into(),
            local: dir.join("volumes/kube-api-access-x"),
        }];
        let path = write_in_pod_kubeconfig(&dir, &mounts, "https://127.0.0.1:16443", "live")
            .unwrap()
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("server: https://127.0.0.1:16443"));
        assert!(text.contains("volumes/kube-api-access-x/token"));
        assert!(text.contains("namespace: live"));
        assert_eq!(write_in_pod_kubeconfig(&dir, &[], "u", "n").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

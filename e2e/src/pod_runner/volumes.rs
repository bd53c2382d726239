//! Volume materialisation: Secret, ConfigMap, downward API, projected (including the
//! service-account token Kubernetes injects), emptyDir and hostPath volumes become plain files
//! under the pod's directory, `<pod dir>/volumes/<volume name>/`.
//!
//! Planning ([`plan_volumes`]) is pure and decides every file's path, content and mode from the
//! pod and the fetched objects; [`materialise`] writes a plan to disk (replacing what an earlier
//! start wrote, so a restart sees current Secret/ConfigMap data). [`mount_rewrites`] maps the
//! container's mount paths to the local paths for argument rewriting (see `launch`).
//! Other volume types (persistentVolumeClaim, csi, image, …) are refused with a clear error.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::downward::field_value;
use super::launch::{CONFIG_MAP, MountRewrite, ObjectSources, PodPlacement, SECRET};

/// Errors planning or writing volumes; reported as the container's waiting message.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A non-optional Secret/ConfigMap is missing.
    #[error("volume {volume:?}: {kind} {name:?} not found")]
    MissingObject {
        /// Volume name.
        volume: String,
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Object name.
        name: String,
    },
    /// An `items` entry names a key the object does not have.
    #[error("volume {volume:?}: key {key:?} not found in {kind} {name:?}")]
    MissingKey {
        /// Volume name.
        volume: String,
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Key name.
        key: String,
    },
    /// A file path would leave the volume directory.
    #[error("volume {volume:?}: path {path:?} must be relative and must not contain '..'")]
    BadPath {
        /// Volume name.
        volume: String,
        /// The offending path.
        path: String,
    },
    /// The volume type is not implemented by the runner.
    #[error(
        "volume {0:?}: unsupported volume type (supported: secret, configMap, downwardAPI, projected, emptyDir, hostPath)"
    )]
    Unsupported(String),
    /// A downward API item could not be resolved.
    #[error("volume {volume:?}: {source}")]
    Downward {
        /// Volume name.
        volume: String,
        /// The cause.
        source: super::launch::LaunchError,
    },
    /// No token was fetched for a service-account token projection.
    #[error("volume {0:?}: no service-account token available")]
    MissingToken(String),
    /// A container mount names a volume the pod does not declare.
    #[error("volumeMount {0:?} names no volume of the pod")]
    UnknownMount(String),
    /// Writing files failed.
    #[error("writing volume files under {path}: {source}")]
    Io {
        /// Path that failed.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Path relative to the volume directory.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// What one volume becomes on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumePlan {
    /// A directory under the pod's `volumes/` with these files (empty for emptyDir).
    Files {
        /// Volume name.
        name: String,
        /// Files to write.
        files: Vec<PlannedFile>,
        /// Whether the directory survives container restarts untouched (emptyDir).
        keep_existing: bool,
    },
    /// A path of this machine used as is (hostPath).
    HostPath {
        /// Volume name.
        name: String,
        /// The host path.
        path: PathBuf,
    },
}

impl VolumePlan {
    /// The volume's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Files { name, .. } | Self::HostPath { name, .. } => name,
        }
    }
}

/// Tokens fetched for service-account token projections, keyed by audience (`""` = the
/// apiserver's default audience).
pub type Tokens = HashMap<String, String>;

const DEFAULT_MODE: u32 = 0o644;

fn mode(item: Option<i32>, default: Option<i32>) -> u32 {
    item.or(default)
        .and_then(|m| u32::try_from(m).ok())
        .map_or(DEFAULT_MODE, |m| m & 0o777)
}

fn check_path(volume: &str, path: &str) -> Result<(), VolumeError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && p.is_relative();
    if ok {
        Ok(())
    } else {
        Err(VolumeError::BadPath {
            volume: volume.to_string(),
            path: path.to_string(),
        })
    }
}

/// Files of a Secret/ConfigMap source: all keys, or the listed `items`.
fn key_files(
    volume: &str,
    kind: &'static str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
    default_mode: Option<i32>,
    sources: &ObjectSources,
) -> Result<Vec<PlannedFile>, VolumeError> {
    let Some(data) = sources.object(kind, name) else {
        return if optional {
            Ok(Vec::new())
        } else {
            Err(VolumeError::MissingObject {
                volume: volume.to_string(),
                kind,
                name: name.to_string(),
            })
        };
    };
    let mut files = Vec::new();
    match items {
        None => {
            for (key, value) in data {
                check_path(volume, key)?;
                files.push(PlannedFile {
                    path: key.clone(),
                    data: value.clone(),
                    mode: mode(None, default_mode),
                });
            }
        }
        Some(items) => {
            for item in items {
                check_path(volume, &item.path)?;
                match data.get(&item.key) {
                    Some(value) => files.push(PlannedFile {
                        path: item.path.clone(),
                        data: value.clone(),
                        mode: mode(item.mode, default_mode),
                    }),
                    None if optional => {}
                    None => {
                        return Err(VolumeError::MissingKey {
                            volume: volume.to_string(),
                            kind,
                            name: name.to_string(),
                            key: item.key.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(files)
}

fn downward_files(
    volume: &str,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    placement: &PodPlacement<'_>,
) -> Result<Vec<PlannedFile>, VolumeError> {
    items
        .iter()
        .map(|item| {
            check_path(volume, &item.path)?;
            let field = item
                .field_ref
                .as_ref()
                .ok_or_else(|| VolumeError::Downward {
                    volume: volume.to_string(),
                    source: super::launch::LaunchError::Unsupported(
                        "downwardAPI resourceFieldRef".into(),
                    ),
                })?;
            let value = field_value(pod, field, placement, true).map_err(|source| {
                VolumeError::Downward {
                    volume: volume.to_string(),
                    source: source.into(),
                }
            })?;
            Ok(PlannedFile {
                path: item.path.clone(),
                data: value.into_bytes(),
                mode: mode(item.mode, default_mode),
            })
        })
        .collect()
}

fn plan_volume(
    pod: &Pod,
    volume: &Volume,
    sources: &ObjectSources,
    tokens: &Tokens,
    placement: &PodPlacement<'_>,
) -> Result<VolumePlan, VolumeError> {
    let name = volume.name.as_str();
    let files = |files: Vec<PlannedFile>| VolumePlan::Files {
        name: name.to_string(),
        files,
        keep_existing: false,
    };
    if let Some(s) = &volume.secret {
        let secret = s.secret_name.as_deref().unwrap_or_default();
        let optional = s.optional.unwrap_or(false);
        return key_files(
            name,
            SECRET,
            secret,
            s.items.as_deref(),
            optional,
            s.default_mode,
            sources,
        )
        .map(files);
    }
    if let Some(c) = &volume.config_map {
        let optional = c.optional.unwrap_or(false);
        return key_files(
            name,
            CONFIG_MAP,
            &c.name,
            c.items.as_deref(),
            optional,
            c.default_mode,
            sources,
        )
        .map(files);
    }
    if let Some(d) = &volume.downward_api {
        let items = d.items.as_deref().unwrap_or_default();
        return downward_files(name, pod, items, d.default_mode, placement).map(files);
    }
    if let Some(p) = &volume.projected {
        let mut all = Vec::new();
        for source in p.sources.as_deref().unwrap_or_default() {
            if let Some(s) = &source.secret {
                let optional = s.optional.unwrap_or(false);
                all.extend(key_files(
                    name,
                    SECRET,
                    &s.name,
                    s.items.as_deref(),
                    optional,
                    p.default_mode,
                    sources,
                )?);
            } else if let Some(c) = &source.config_map {
                let optional = c.optional.unwrap_or(false);
                all.extend(key_files(
                    name,
                    CONFIG_MAP,
                    &c.name,
                    c.items.as_deref(),
                    optional,
                    p.default_mode,
                    sources,
                )?);
            } else if let Some(d) = &source.downward_api {
                let items = d.items.as_deref().unwrap_or_default();
                all.extend(downward_files(name, pod, items, p.default_mode, placement)?);
            } else if let Some(t) = &source.service_account_token {
                check_path(name, &t.path)?;
                let token = tokens
                    .get(t.audience.as_deref().unwrap_or_default())
                    .ok_or_else(|| VolumeError::MissingToken(name.to_string()))?;
                all.push(PlannedFile {
                    path: t.path.clone(),
                    data: token.clone().into_bytes(),
                    mode: mode(None, p.default_mode),
                });
            } else {
                return Err(VolumeError::Unsupported(name.to_string()));
            }
        }
        return Ok(files(all));
    }
    if volume.empty_dir.is_some() {
        return Ok(VolumePlan::Files {
            name: name.to_string(),
            files: Vec::new(),
            keep_existing: true,
        });
    }
    if let Some(h) = &volume.host_path {
        return Ok(VolumePlan::HostPath {
            name: name.to_string(),
            path: PathBuf::from(&h.path),
        });
    }
    Err(VolumeError::Unsupported(name.to_string()))
}

/// Plans every volume of the pod.
pub fn plan_volumes(
    pod: &Pod,
    sources: &ObjectSources,
    tokens: &Tokens,
    placement: &PodPlacement<'_>,
) -> Result<Vec<VolumePlan>, VolumeError> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|v| plan_volume(pod, v, sources, tokens, placement))
        .collect()
}

/// Local path of a volume.
pub fn volume_path(volumes_dir: &Path, plan: &VolumePlan) -> PathBuf {
    match plan {
        VolumePlan::Files { name, .. } => volumes_dir.join(name),
        VolumePlan::HostPath { path, .. } => path.clone(),
    }
}

/// The first container's mounts as path rewrites (`subPath` appended to the volume's path).
pub fn mount_rewrites(
    pod: &Pod,
    volumes_dir: &Path,
    plans: &[VolumePlan],
) -> Result<Vec<MountRewrite>, VolumeError> {
    let by_name: BTreeMap<&str, &VolumePlan> = plans.iter().map(|p| (p.name(), p)).collect();
    let mounts = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.volume_mounts.as_deref())
        .unwrap_or_default();
    mounts
        .iter()
        .map(|m| {
            let plan = by_name
                .get(m.name.as_str())
                .ok_or_else(|| VolumeError::UnknownMount(m.name.clone()))?;
            let mut local = volume_path(volumes_dir, plan);
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                check_path(&m.name, sub)?;
                local.push(sub);
            }
            Ok(MountRewrite {
                mount_path: m.mount_path.trim_end_matches('/').to_string(),
                local,
            })
        })
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the planned files under `volumes_dir` (blocking file I/O; small files only).
pub fn materialise(volumes_dir: &Path, plans: &[VolumePlan]) -> Result<(), VolumeError> {
    std::fs::create_dir_all(volumes_dir).map_err(io(volumes_dir))?;
    for plan in plans {
        let VolumePlan::Files {
            name,
            files,
            keep_existing,
        } = plan
        else {
            continue;
        };
        let dir = volumes_dir.join(name);
        if *keep_existing {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            continue;
        }
        // Write into a fresh directory, then swap it in, so a reader never sees half a volume.
        let staging = volumes_dir.join(format!(".{name}.new"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        for file in files {
            let path = staging.join(&file.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&path, &file.data).map_err(io(&path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
                .map_err(io(&path))?;
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::rename(&staging, &dir).map_err(io(&dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test pod parses")
    }

    fn placement() -> PodPlacement<'static> {
        PodPlacement {
            pod_ip: Ipv4Addr::new(127, 0, 1, 2),
            host_ip: Ipv4Addr::new(127, 0, 1, 1),
            node_name: "runner-0",
        }
    }

    fn sources() -> ObjectSources {
        let mut s = ObjectSources::default();
        s.secrets.insert(
            "tls".into(),
            BTreeMap::from([
                ("tls.crt".into(), b"CERT".to_vec()),
                ("tls.key".into(), b"KEY".to_vec()),
            ]),
        );
        s.config_maps.insert(
            "kube-root-ca.crt".into(),
            BTreeMap::from([("ca.crt".into(), b"CA".to_vec())]),
        );
        s
    }

    const POD: &str = r#"
metadata: {name: p, namespace: ns}
spec:
  containers:
  - name: c
    volumeMounts:
    - {name: tls, mountPath: /etc/tls/}
    - {name: api, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}
    - {name: scratch, mountPath: /tmp/x, subPath: sub}
  volumes:
  - {name: tls, secret: {secretName: tls, defaultMode: 256, items: [{key: tls.crt, path: certs/tls.crt}]}}
  - name: api
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3607}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
  - {name: scratch, emptyDir: {}}
  - {name: host, hostPath: {path: /opt/data}}
"#;

    #[test]
    fn plans_secret_projected_empty_and_host_volumes() {
        let tokens = Tokens::from([(String::new(), "TOKEN".to_string())]);
        let plans = plan_volumes(&pod(POD), &sources(), &tokens, &placement()).unwrap();
        assert_eq!(
            plans[0],
            VolumePlan::Files {
                name: "tls".into(),
                files: vec![PlannedFile {
                    path: "certs/tls.crt".into(),
                    data: b"CERT".to_vec(),
                    mode: 0o400
                }],
                keep_existing: false
            }
        );
        let VolumePlan::Files { files, .. } = &plans[1] else {
            panic!("projected volume is files")
        };
        let got: Vec<_> = files
            .iter()
            .map(|f| (f.path.as_str(), f.data.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("token", &b"TOKEN"[..]),
                ("ca.crt", b"CA"),
                ("namespace", b"ns")
            ]
        );
        assert!(
            matches!(&plans[2], VolumePlan::Files { keep_existing: true, files, .. } if files.is_empty())
        );
        assert_eq!(
            plans[3],
            VolumePlan::HostPath {
                name: "host".into(),
                path: "/opt/data".into()
            }
        );
        let rewrites = mount_rewrites(&pod(POD), Path::new("/v"), &plans).unwrap();
        assert_eq!(rewrites[0].mount_path, "/etc/tls");
        assert_eq!(rewrites[0].local, Path::new("/v/tls"));
        assert_eq!(rewrites[2].local, Path::new("/v/scratch/sub"));
    }

    #[test]
    fn missing_objects_keys_and_tokens_are_errors_unless_optional() {
        let tokens = Tokens::new();
        assert!(matches!(
            plan_volumes(&pod(POD), &sources(), &tokens, &placement()),
            Err(VolumeError::MissingToken(v)) if v == "api"
        ));
        let p = pod(
            "metadata: {name: p}\nspec: {containers: [], volumes: [{name: v, secret: {secretName: gone}}]}",
        );
        assert!(matches!(
            plan_volumes(&p, &sources(), &tokens, &placement()),
            Err(VolumeError::MissingObject { kind: SECRET, .. })
        ));
        let p = pod(
            "metadata: {name: p}\nspec: {containers: [], volumes: [{name: v, secret: {secretName: gone, optional: true}}]}",
        );
        assert!(plan_volumes(&p, &sources(), &tokens, &placement()).is_ok());
        let p = pod(
            "metadata: {name: p}\nspec: {containers: [], volumes: [{name: v, configMap: {name: kube-root-ca.crt, items: [{key: nope, path: x}]}}]}",
        );
        assert!(matches!(
            plan_volumes(&p, &sources(), &tokens, &placement()),
            Err(VolumeError::MissingKey { .. })
        ));
        let p = pod(
            "metadata: {name: p}\nspec: {containers: [], volumes: [{name: v, persistentVolumeClaim: {claimName: c}}]}",
        );
        assert!(matches!(
            plan_volumes(&p, &sources(), &tokens, &placement()),
            Err(VolumeError::Unsupported(_))
        ));
    }

    #[test]
    fn paths_cannot_escape_the_volume() {
        let tokens = Tokens::new();
        for path in ["../x", "/abs", "a/../../b", ""] {
            let p = pod(&format!(
                "metadata: {{name: p}}\nspec: {{containers: [], volumes: [{{name: v, secret: {{secretName: tls, items: [{{key: tls.crt, path: '{path}'}}]}}}}]}}"
            ));
            assert!(
                matches!(
                    plan_volumes(&p, &sources(), &tokens, &placement()),
                    Err(VolumeError::BadPath { .. })
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn materialise_writes_files_with_modes_and_replaces_old_content() {
        let dir = std::env::temp_dir().join(format!("pod-runner-volumes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let plan = |data: &[u8], path: &str| {
            vec![
                VolumePlan::Files {
                    name: "v".into(),
                    files: vec![PlannedFile {
                        path: path.into(),
                        data: data.to_vec(),
                        mode: 0o600,
                    }],
                    keep_existing: false,
                },
                VolumePlan::Files {
                    name: "e".into(),
                    files: vec![],
                    keep_existing: true,
                },
            ]
        };
        materialise(&dir, &plan(b"one", "a/b.txt")).unwrap();
        std::fs::write(dir.join("e/kept"), b"k").unwrap();
        assert_eq!(std::fs::read(dir.join("v/a/b.txt")).unwrap(), b"one");
        let m = std::fs::metadata(dir.join("v/a/b.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600);
        materialise(&dir, &plan(b"two", "c.txt")).unwrap();
        assert!(!dir.join("v/a/b.txt").exists());
        assert_eq!(std::fs::read(dir.join("v/c.txt")).unwrap(), b"two");
        assert_eq!(std::fs::read(dir.join("e/kept")).unwrap(), b"k");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

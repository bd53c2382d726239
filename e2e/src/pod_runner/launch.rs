//! Turns a Pod's first container into a local launch plan: program, arguments, environment
//! and working directory. Pure: everything fetched from the API (Secrets, ConfigMaps) and the
//! materialised volume directories are passed in.
//!
//! Rules (what a kubelet does, adapted to processes on one machine):
//! - The program is the image's mapped binary. When `command` is set, its first element (a path
//!   inside the image) is replaced by that binary and the rest become the first arguments;
//!   `args` follow.
//! - The environment is built like Kubernetes builds it: a small base (`PATH`, `HOSTNAME`,
//!   the apiserver address), then `envFrom` sources in order, then `env` entries in order (later
//!   wins); `value`s may use `$(VAR)` of earlier entries; `valueFrom` reads the downward API
//!   (`metadata.name|namespace|uid`, `metadata.labels['k']`, `metadata.annotations['k']`,
//!   `spec.nodeName`, `spec.serviceAccountName`, `status.podIP(s)`, `status.hostIP(s)`), a
//!   Secret key or a ConfigMap key. `resourceFieldRef` is not supported (a clear error).
//!   Then `$(VAR)` in `command` and `args` is expanded with the final environment.
//! - Paths: every occurrence of a container `volumeMount.mountPath` in an argument, an env value
//!   or `workingDir`, at a path boundary (`--config=/etc/sb/config.toml`, `/etc/sb`, but not
//!   `/etc/sbx`), is rewritten to the directory the volume was materialised in (with `subPath`
//!   appended). The longest mount path wins.
//! - Addresses: `0.0.0.0:` in an argument or env value becomes `<podIP>:`, and an argument or
//!   env value that is exactly `0.0.0.0` becomes `<podIP>`, so a server that would listen on all
//!   interfaces listens on the pod's own loopback address instead.
//! - The working directory is the remapped `workingDir` when it lies in a mount, else the pod's
//!   own directory (an in-image path means nothing here).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, EnvVarSource, Pod};

pub use super::downward::PodPlacement;
use super::downward::{UnsupportedFieldPath, field_value};
use super::expand::expand;

/// Errors building a launch plan; reported as `CreateContainerConfigError`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LaunchError {
    /// The pod has no containers.
    #[error("pod has no containers")]
    NoContainer,
    /// A downward API field path the runner does not know.
    #[error("unsupported downward API field path {0:?}")]
    UnsupportedFieldPath(String),
    /// A feature of the pod spec the runner does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A referenced Secret or ConfigMap does not exist (and is not optional).
    #[error("{kind} {name:?} not found")]
    MissingObject {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Object name.
        name: String,
    },
    /// A referenced key is missing (and not optional).
    #[error("key {key:?} not found in {kind} {name:?}")]
    MissingKey {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Key name.
        key: String,
    },
    /// A value used as an environment variable is not UTF-8.
    #[error("key {key:?} of {kind} {name:?} is not valid UTF-8 and cannot be an env value")]
    NotUtf8 {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Key name.
        key: String,
    },
}

impl From<UnsupportedFieldPath> for LaunchError {
    fn from(error: UnsupportedFieldPath) -> Self {
        Self::UnsupportedFieldPath(error.0)
    }
}

/// Data of the Secrets and ConfigMaps a pod references, fetched by the caller. An object
/// missing from a map does not exist.
#[derive(Debug, Clone, Default)]
pub struct ObjectSources {
    /// Secret name → key → bytes.
    pub secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// ConfigMap name → key → bytes (`data` and `binaryData` merged).
    pub config_maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

impl ObjectSources {
    /// The object of `kind` (`secret`/`configmap`) called `name`, if it exists.
    pub fn object(&self, kind: &'static str, name: &str) -> Option<&BTreeMap<String, Vec<u8>>> {
        match kind {
            SECRET => self.secrets.get(name),
            _ => self.config_maps.get(name),
        }
    }
}

/// `kind` label of Secrets in errors and lookups.
pub const SECRET: &str = "secret";
/// `kind` label of ConfigMaps in errors and lookups.
pub const CONFIG_MAP: &str = "configmap";

/// A container mount resolved to a local path, for path rewriting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRewrite {
    /// `volumeMount.mountPath` as written in the pod (no trailing slash).
    pub mount_path: String,
    /// The local file or directory it stands for.
    pub local: PathBuf,
}

/// What to execute for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    /// The program (the image's mapped binary).
    pub program: PathBuf,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// The complete environment (the process gets nothing else).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
}

/// Inputs of [`plan`] besides the pod.
#[derive(Debug, Clone)]
pub struct PlanInputs<'a> {
    /// The image's mapped binary.
    pub program: &'a Path,
    /// Pod address, node address, node name.
    pub placement: PodPlacement<'a>,
    /// Fetched Secrets and ConfigMaps.
    pub sources: &'a ObjectSources,
    /// Container mounts → local paths.
    pub mounts: &'a [MountRewrite],
    /// The pod's own directory (default working directory).
    pub pod_dir: &'a Path,
    /// Base environment before the container's own (`PATH`, apiserver address, `KUBECONFIG`…).
    pub base_env: &'a [(String, String)],
}

/// The container the runner runs: the pod's first one.
pub fn first_container(pod: &Pod) -> Result<&Container, LaunchError> {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .ok_or(LaunchError::NoContainer)
}

/// Builds the launch plan of the pod's first container.
pub fn plan(pod: &Pod, inputs: &PlanInputs<'_>) -> Result<LaunchPlan, LaunchError> {
    let container = first_container(pod)?;
    let env = container_env(pod, container, inputs)?;
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let command = container.command.as_deref().unwrap_or_default();
    let raw_args = command
        .iter()
        .skip(1)
        .chain(container.args.as_deref().unwrap_or_default());
    let args = raw_args
        .map(|a| rewrite(&expand(a, lookup), inputs))
        .collect();
    let env = env
        .iter()
        .map(|(k, v)| (k.clone(), rewrite(v, inputs)))
        .collect();
    let cwd = container
        .working_dir
        .as_deref()
        .map(|dir| remap_paths(dir, inputs.mounts))
        .filter(|dir| {
            inputs
                .mounts
                .iter()
                .any(|m| dir.starts_with(&*m.local.to_string_lossy()))
        })
        .map_or_else(|| inputs.pod_dir.to_path_buf(), PathBuf::from);
    Ok(LaunchPlan {
        program: inputs.program.to_path_buf(),
        args,
        env,
        cwd,
    })
}

fn rewrite(value: &str, inputs: &PlanInputs<'_>) -> String {
    let remapped = remap_paths(value, inputs.mounts);
    rewrite_wildcard_address(&remapped, inputs.placement.pod_ip)
}

/// Replaces `0.0.0.0:` by `<ip>:` and a value of exactly `0.0.0.0` by `<ip>`.
pub fn rewrite_wildcard_address(value: &str, ip: Ipv4Addr) -> String {
    if value == "0.0.0.0" {
        return ip.to_string();
    }
    value.replace("0.0.0.0:", &format!("{ip}:"))
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '~' | '+')
}

/// Rewrites mount paths in `value` to their local paths (longest mount path first, only at
/// path boundaries).
pub fn remap_paths(value: &str, mounts: &[MountRewrite]) -> String {
    let mut sorted: Vec<&MountRewrite> = mounts
        .iter()
        .filter(|m| m.mount_path.len() > 1 && m.mount_path.starts_with('/'))
        .collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.mount_path.len()));
    let mut out = String::with_capacity(value.len());
    let mut i = 0;
    'outer: while i < value.len() {
        let prev_ok = value[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !is_path_char(c));
        if prev_ok {
            for m in &sorted {
                if value[i..].starts_with(&m.mount_path) {
                    let end = i + m.mount_path.len();
                    let next_ok = value[end..]
                        .chars()
                        .next()
                        .is_none_or(|c| c == '/' || !is_path_char(c));
                    if next_ok {
                        out.push_str(&m.local.to_string_lossy());
                        i = end;
                        continue 'outer;
                    }
                }
            }
        }
        let c = value[i..].chars().next().unwrap_or_default();
        out.push(c);
        i += c.len_utf8().max(1);
    }
    out
}

/// Whether `name` may be an environment variable name (keys of `envFrom` sources that are not
/// are skipped, as Kubernetes does).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn set_env(env: &mut Vec<(String, String)>, name: String, value: String) {
    env.retain(|(k, _)| *k != name);
    env.push((name, value));
}

fn container_env(
    pod: &Pod,
    container: &Container,
    inputs: &PlanInputs<'_>,
) -> Result<Vec<(String, String)>, LaunchError> {
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in inputs.base_env {
        set_env(&mut env, k.clone(), v.clone());
    }
    if let Some(name) = pod.metadata.name.as_ref() {
        set_env(&mut env, "HOSTNAME".into(), name.clone());
    }
    for from in container.env_from.as_deref().unwrap_or_default() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (kind, name, optional) = if let Some(r) = &from.secret_ref {
            (SECRET, r.name.as_str(), r.optional.unwrap_or(false))
        } else if let Some(r) = &from.config_map_ref {
            (CONFIG_MAP, r.name.as_str(), r.optional.unwrap_or(false))
        } else {
            continue;
        };
        let Some(data) = inputs.sources.object(kind, name) else {
            if optional {
                continue;
            }
            return Err(LaunchError::MissingObject {
                kind,
                name: name.to_string(),
            });
        };
        for (key, value) in data {
            let var = format!("{prefix}{key}");
            if !valid_env_name(&var) {
                continue;
            }
            let value = utf8(kind, name, key, value)?;
            set_env(&mut env, var, value);
        }
    }
    for var in container.env.as_deref().unwrap_or_default() {
        let value = if let Some(source) = &var.value_from {
            match value_from(pod, source, inputs)? {
                Some(v) => v,
                None => continue,
            }
        } else {
            let raw = var.value.as_deref().unwrap_or_default();
            let lookup = |n: &str| {
                env.iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            };
            expand(raw, lookup)
        };
        set_env(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn utf8(kind: &'static str, name: &str, key: &str, value: &[u8]) -> Result<String, LaunchError> {
    String::from_utf8(value.to_vec()).map_err(|_| LaunchError::NotUtf8 {
        kind,
        name: name.to_string(),
        key: key.to_string(),
    })
}

/// Resolves a `valueFrom`; `Ok(None)` means an optional reference that is absent (the
/// variable is then not set).
fn value_from(
    pod: &Pod,
    source: &EnvVarSource,
    inputs: &PlanInputs<'_>,
) -> Result<Option<String>, LaunchError> {
    if let Some(field) = &source.field_ref {
        return Ok(Some(field_value(pod, field, &inputs.placement, false)?));
    }
    if source.resource_field_ref.is_some() {
        return Err(LaunchError::Unsupported(
            "env valueFrom.resourceFieldRef".into(),
        ));
    }
    let (kind, name, key, optional) = if let Some(r) = &source.secret_key_ref {
        (
            SECRET,
            r.name.as_str(),
            r.key.as_str(),
            r.optional.unwrap_or(false),
        )
    } else if let Some(r) = &source.config_map_key_ref {
        (
            CONFIG_MAP,
            r.name.as_str(),
            r.key.as_str(),
            r.optional.unwrap_or(false),
        )
    } else {
        return Err(LaunchError::Unsupported(
            "env valueFrom without a known source".into(),
        ));
    };
    let Some(data) = inputs.sources.object(kind, name) else {
        return if optional {
            Ok(None)
        } else {
            Err(LaunchError::MissingObject {
                kind,
                name: name.to_string(),
            })
        };
    };
    match data.get(key) {
        Some(value) => utf8(kind, name, key, value).map(Some),
        None if optional => Ok(None),
        None => Err(LaunchError::MissingKey {
            kind,
            name: name.to_string(),
            key: key.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).expect("test pod parses")
    }

    fn sources() -> ObjectSources {
        let mut s = ObjectSources::default();
        s.secrets.insert(
            "auth".into(),
            BTreeMap::from([
                ("jwt-key".into(), b"s3cret".to_vec()),
                ("bin".into(), vec![0xff, 0xfe]),
            ]),
        );
        s.config_maps.insert(
            "cfg".into(),
            BTreeMap::from([
                ("LEVEL".into(), b"debug".to_vec()),
                ("bad key".into(), b"x".to_vec()),
            ]),
        );
        s
    }

    fn run_plan(p: &Pod, s: &ObjectSources) -> Result<LaunchPlan, LaunchError> {
        let mounts = vec![
            MountRewrite {
                mount_path: "/etc/sb".into(),
                local: "/run/pods/ns_p/volumes/config".into(),
            },
            MountRewrite {
                mount_path: "/etc/sb/tls".into(),
                local: "/run/pods/ns_p/volumes/tls".into(),
            },
        ];
        let base = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        plan(
            p,
            &PlanInputs {
                program: Path::new("/bin/signaling-node"),
                placement: PodPlacement {
                    pod_ip: Ipv4Addr::new(127, 0, 1, 2),
                    host_ip: Ipv4Addr::new(127, 0, 1, 1),
                    node_name: "runner-0",
                },
                sources: s,
                mounts: &mounts,
                pod_dir: Path::new("/run/pods/ns_p"),
                base_env: &base,
            },
        )
    }

    const POD: &str = r#"
metadata: {name: sig-0, namespace: live, uid: u-1, labels: {app: sig}}
spec:
  containers:
  - name: node
    image: ghcr.io/switchboard/signaling-node:v1
    command: [/usr/local/bin/signaling-node, serve]
    args:
    - --listen=0.0.0.0:7000
    - --admin-listen
    - 0.0.0.0:9100
    - --advertise=$(POD_IP):7000
    - --config=/etc/sb/config.toml
    - --cert=/etc/sb/tls/tls.crt
    - /etc/sbx/other
    - $$(POD_IP)
    env:
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: URL, value: "ws://$(POD_IP):7000/ws"}
    - {name: KEY, valueFrom: {secretKeyRef: {name: auth, key: jwt-key}}}
    - {name: OPT, valueFrom: {secretKeyRef: {name: nope, key: k, optional: true}}}
    envFrom:
    - {configMapRef: {name: cfg}, prefix: SB_}
"#;

    #[test]
    fn builds_program_args_and_env_like_a_kubelet() {
        let plan = run_plan(&pod(POD), &sources()).unwrap();
        assert_eq!(plan.program, Path::new("/bin/signaling-node"));
        assert_eq!(
            plan.args,
            vec![
                "serve",
                "--listen=127.0.1.2:7000",
                "--admin-listen",
                "127.0.1.2:9100",
                "--advertise=127.0.1.2:7000",
                "--config=/run/pods/ns_p/volumes/config/config.toml",
                "--cert=/run/pods/ns_p/volumes/tls/tls.crt",
                "/etc/sbx/other",
                "$(POD_IP)",
            ]
        );
        let env: BTreeMap<_, _> = plan.env.iter().cloned().collect();
        assert_eq!(env["PATH"], "/usr/bin:/bin");
        assert_eq!(env["HOSTNAME"], "sig-0");
        assert_eq!(env["POD_IP"], "127.0.1.2");
        assert_eq!(env["POD_NAME"], "sig-0");
        assert_eq!(env["NODE"], "runner-0");
        assert_eq!(env["APP"], "sig");
        assert_eq!(env["URL"], "ws://127.0.1.2:7000/ws");
        assert_eq!(env["KEY"], "s3cret");
        assert_eq!(env["SB_LEVEL"], "debug");
        assert!(!env.contains_key("OPT"));
        assert!(!env.keys().any(|k| k.contains(' ')));
        assert_eq!(plan.cwd, Path::new("/run/pods/ns_p"));
    }

    #[test]
    fn without_command_args_follow_the_program() {
        let p = pod("metadata: {name: a}\nspec: {containers: [{name: c, args: [x, '0.0.0.0']}]}");
        let plan = run_plan(&p, &sources()).unwrap();
        assert_eq!(plan.args, vec!["x", "127.0.1.2"]);
    }

    #[test]
    fn working_dir_inside_a_mount_is_remapped() {
        let p =
            pod("metadata: {name: a}\nspec: {containers: [{name: c, workingDir: /etc/sb/tls}]}");
        assert_eq!(
            run_plan(&p, &sources()).unwrap().cwd,
            Path::new("/run/pods/ns_p/volumes/tls")
        );
        let p = pod("metadata: {name: a}\nspec: {containers: [{name: c, workingDir: /app}]}");
        assert_eq!(
            run_plan(&p, &sources()).unwrap().cwd,
            Path::new("/run/pods/ns_p")
        );
    }

    #[test]
    fn missing_references_are_typed_errors() {
        let cases = [
            (
                "{name: K, valueFrom: {secretKeyRef: {name: gone, key: k}}}",
                LaunchError::MissingObject {
                    kind: SECRET,
                    name: "gone".into(),
                },
            ),
            (
                "{name: K, valueFrom: {configMapKeyRef: {name: cfg, key: nope}}}",
                LaunchError::MissingKey {
                    kind: CONFIG_MAP,
                    name: "cfg".into(),
                    key: "nope".into(),
                },
            ),
            (
                "{name: K, valueFrom: {secretKeyRef: {name: auth, key: bin}}}",
                LaunchError::NotUtf8 {
                    kind: SECRET,
                    name: "auth".into(),
                    key: "bin".into(),
                },
            ),
            (
                "{name: K, valueFrom: {fieldRef: {fieldPath: status.phase}}}",
                LaunchError::UnsupportedFieldPath("status.phase".into()),
            ),
            (
                "{name: K, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}",
                LaunchError::Unsupported("env valueFrom.resourceFieldRef".into()),
            ),
        ];
        for (var, want) in cases {
            let p = pod(&format!(
                "metadata: {{name: a}}\nspec: {{containers: [{{name: c, env: [{var}]}}]}}"
            ));
            assert_eq!(run_plan(&p, &sources()), Err(want), "{var}");
        }
        let empty = pod("metadata: {name: a}\nspec: {containers: []}");
        assert_eq!(run_plan(&empty, &sources()), Err(LaunchError::NoContainer));
    }

    #[test]
    fn remap_respects_path_boundaries() {
        let mounts = [MountRewrite {
            mount_path: "/etc/sb".into(),
            local: "/L".into(),
        }];
        let cases = [
            ("/etc/sb", "/L"),
            ("/etc/sb/", "/L/"),
            ("/etc/sb/a.toml", "/L/a.toml"),
            ("--c=/etc/sb/a", "--c=/L/a"),
            ("a:/etc/sb,b:/etc/sb/x", "a:/L,b:/L/x"),
            ("/etc/sbx", "/etc/sbx"),
            ("/x/etc/sb", "/x/etc/sb"),
            ("é/etc/sb", "é/L"),
        ];
        for (input, want) in cases {
            assert_eq!(remap_paths(input, &mounts), want, "{input}");
        }
    }
}

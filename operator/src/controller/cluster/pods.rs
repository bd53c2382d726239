//! The signaling-node Pod of a version pool: name, labels, container, probes, volumes and the
//! template hash that tells an up-to-date pod from an outdated one.
//!
//! No preStop hook: on SIGTERM the node itself drains (marks itself draining in etcd, stops
//! taking joins, hands its shards off, tells clients to migrate) within
//! `spec.drainTimeoutSeconds`, which the CRD keeps below `terminationGracePeriodSeconds`.
//!
//! The image's entrypoint must be the `signaling-node` binary (the pod sets only `args`).
//! Settings the brief's command line does not carry are passed as environment variables the
//! node may read: `SWITCHBOARD_VERSION`, `SWITCHBOARD_PROTOCOLS`,
//! `SWITCHBOARD_DRAIN_TIMEOUT_SECONDS`, `SWITCHBOARD_JWT_KEYS_DIR` (the auth Secret mounted
//! whole: `secret` and/or `keys.json`, so keys rotate by editing the Secret) and, with etcd
//! TLS, `SWITCHBOARD_ETCD_CA_FILE`, `SWITCHBOARD_ETCD_CERT_FILE`, `SWITCHBOARD_ETCD_KEY_FILE`
//! (unknown variables are harmless, unknown flags are not). With `spec.clientAccess` the node's
//! URL is the pod's own `SWITCHBOARD_ADVERTISE_URL` (filled in after the template hash, so it
//! does not make every pod look different), plus `SWITCHBOARD_WS_PATHS` for an entry path
//! other than `/ws`, `SWITCHBOARD_TLS_CERT` / `SWITCHBOARD_TLS_KEY` when the nodes end TLS
//! and `SWITCHBOARD_WEBTRANSPORT_LISTEN` (UDP, the signaling port's number) with
//! `clientAccess.webTransport`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Pod, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, Probe,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::access::{AccessPlan, CLIENT_TLS_DIR, Placeholder, tls_copy_name, with_node_port};
use super::pools::VersionPool;
use crate::controller::labels::{self, common_labels, selector_labels};
use crate::controller::{Error, Result};
use crate::crd::{ADMIN_PORT, SignalingCluster};

/// Name of the signaling-node container.
pub const CONTAINER: &str = "signaling-node";
/// The images' `nonroot` user and group (Dockerfile.signaling-node `USER 65532:65532`).
pub const NONROOT_UID: i64 = 65532;
/// Where the auth Secret is mounted whole (files `secret` and/or `keys.json` inside).
pub const AUTH_DIR: &str = "/etc/switchboard/auth";
/// Where the etcd TLS Secret is mounted.
pub const ETCD_TLS_DIR: &str = "/etc/switchboard/etcd-tls";
/// The variable carrying the node's URL when `spec.clientAccess` chooses it.
pub const ADVERTISE_URL_ENV: &str = "SWITCHBOARD_ADVERTISE_URL";

/// Name of pod `index` of `version` in `cluster`.
pub fn pod_name(cluster: &str, version: &str, index: u32) -> String {
    format!("{cluster}-{version}-{index}")
}

/// The index of a pod named by [`pod_name`], if `name` has that shape.
pub fn pod_index(cluster: &str, version: &str, name: &str) -> Option<u32> {
    let digits = name
        .strip_prefix(cluster)?
        .strip_prefix('-')?
        .strip_prefix(version)?
        .strip_prefix('-')?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

/// Name of the headless Service that gives each pod a DNS name.
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-nodes")
}

/// The desired pod `index` of `pool`, with a controller owner reference to the cluster and
/// the template hash annotation.
pub fn desired_pod(cluster: &SignalingCluster, pool: &VersionPool, index: u32) -> Result<Pod> {
    let super::Identity {
        name,
        namespace,
        owner,
    } = super::identity(cluster)?;
    let (name, namespace) = (name.as_str(), namespace.as_str());
    let (mut labels, annotations, mut spec) = template(cluster, name, namespace, pool)?;
    let mut annotations = annotations;
    annotations.insert(
        labels::TEMPLATE_HASH.into(),
        template_hash(&labels, &annotations, &spec)?,
    );
    // Per pod, after the hash: the pod's own name label and URL.
    let pod = pod_name(name, &pool.name, index);
    labels.insert(labels::POD.into(), pod.clone());
    if let Some(access) = AccessPlan::of(cluster).map_err(Error::ClientAccess)? {
        let url = access.pod_url(name, namespace, &pool.name, &pod, index);
        set_env(&mut spec, ADVERTISE_URL_ENV, &url);
    }
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The template hash the pods of `pool` should carry.
pub fn pool_template_hash(cluster: &SignalingCluster, pool: &VersionPool) -> Result<String> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingObjectKey("name"))?;
    let namespace = cluster
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let (labels, annotations, spec) = template(cluster, name, namespace, pool)?;
    template_hash(&labels, &annotations, &spec)
}

/// Fills the node port into a pod's URL (its Service got it) and records it on the pod.
pub fn set_node_port(pod: &mut Pod, node_port: i32) {
    if let Some(spec) = pod.spec.as_mut() {
        let url = env_value(spec, ADVERTISE_URL_ENV).map(|u| with_node_port(&u, node_port));
        if let Some(url) = url {
            set_env(spec, ADVERTISE_URL_ENV, &url);
        }
    }
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::NODE_PORT.into(), node_port.to_string());
}

/// The URL a pod advertises when the operator chose it (`SWITCHBOARD_ADVERTISE_URL`).
pub fn advertised_url(pod: &Pod) -> Option<String> {
    env_value(pod.spec.as_ref()?, ADVERTISE_URL_ENV)
}

fn env_value(spec: &PodSpec, name: &str) -> Option<String> {
    spec.containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn set_env(spec: &mut PodSpec, name: &str, value: &str) {
    let env = spec
        .containers
        .first_mut()
        .and_then(|c| c.env.as_mut())
        .and_then(|env| env.iter_mut().find(|e| e.name == name));
    if let Some(var) = env {
        var.value = Some(value.to_string());
    }
}

/// The template hash recorded on an existing pod.
pub fn recorded_hash(pod: &Pod) -> Option<&str> {
    pod.annotations()
        .get(labels::TEMPLATE_HASH)
        .map(String::as_str)
}

/// FNV-1a (64 bit) over the JSON of everything that makes up the pod except its name: stable
/// across operator restarts and platforms (k8s-openapi serializes fields and maps in order).
fn template_hash(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    spec: &PodSpec,
) -> Result<String> {
    let bytes = serde_json::to_vec(&(labels, annotations, spec))?;
    Ok(labels::fnv1a(&bytes))
}

type Template = (BTreeMap<String, String>, BTreeMap<String, String>, PodSpec);

fn template(
    cluster: &SignalingCluster,
    name: &str,
    namespace: &str,
    pool: &VersionPool,
) -> Result<Template> {
    let spec = &cluster.spec;
    let access = AccessPlan::of(cluster).map_err(Error::ClientAccess)?;
    let overrides = spec.pod_template.clone().unwrap_or_default();

    let mut labels = overrides.labels.clone().unwrap_or_default();
    labels.extend(common_labels(name, "node"));
    labels.insert(labels::VERSION.into(), pool.name.clone());
    let annotations = overrides.annotations.clone().unwrap_or_default();

    let port = spec.port;
    let args = vec![
        "serve".to_string(),
        "--listen".into(),
        format!("0.0.0.0:{port}"),
        "--admin-listen".into(),
        format!("0.0.0.0:{ADMIN_PORT}"),
        "--etcd-endpoints".into(),
        spec.etcd.endpoints.join(","),
        "--namespace".into(),
        namespace.to_string(),
        "--cluster".into(),
        name.to_string(),
        "--advertise-url".into(),
        match &access {
            Some(_) => format!("$({ADVERTISE_URL_ENV})"),
            None => format!("ws://$(POD_IP):{port}/ws"),
        },
        // Every node must hash rooms onto the same shard ranges as the RoomShards.
        "--shard-count".into(),
        spec.shards.to_string(),
        // Node images older than SWITCHBOARD_JWT_KEYS_DIR read their key only from this flag
        // (a rollout may run them); newer ones take it as optional beside the keys dir.
        "--jwt-secret-file".into(),
        format!("{AUTH_DIR}/secret"),
    ];

    let protocols: Vec<&str> = pool.protocols.iter().map(|p| p.as_str()).collect();
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        value_env("SWITCHBOARD_VERSION", &pool.name),
        value_env("SWITCHBOARD_PROTOCOLS", &protocols.join(",")),
        value_env(
            "SWITCHBOARD_DRAIN_TIMEOUT_SECONDS",
            &spec.drain_timeout_seconds.to_string(),
        ),
        value_env("SWITCHBOARD_JWT_KEYS_DIR", AUTH_DIR),
    ];
    if let Some(access) = &access {
        // Runtime values the URL names come from the downward API, defined before the URL
        // that refers to them (Kubernetes expands `$(VAR)` from earlier variables only).
        if access.template.uses(Placeholder::HostIp) {
            env.insert(3, field_env("HOST_IP", "status.hostIP"));
        }
        env.push(value_env(
            ADVERTISE_URL_ENV,
            &access.pool_url(name, namespace, &pool.name),
        ));
        if let Some(path) = access.extra_ws_path() {
            env.push(value_env("SWITCHBOARD_WS_PATHS", path));
        }
        if access.serves_webtransport() {
            // The UDP port with the signaling port's number: where clients look for it.
            env.push(value_env(
                "SWITCHBOARD_WEBTRANSPORT_LISTEN",
                &format!("0.0.0.0:{port}"),
            ));
        }
    }

    let mut volumes = vec![Volume {
        name: "auth".into(),
        // Every key of the Secret: `secret` and/or `keys.json` (the node reads what exists),
        // so rotating a key is an edit of the Secret, applied by the node without a restart.
        secret: Some(SecretVolumeSource {
            secret_name: Some(spec.auth_secret.clone()),
            items: None,
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "auth".into(),
        mount_path: AUTH_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    if let Some(tls) = &spec.etcd.tls_secret {
        volumes.push(Volume {
            name: "etcd-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.clone()),
                default_mode: Some(0o440),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "etcd-tls".into(),
            mount_path: ETCD_TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        env.push(value_env(
            "SWITCHBOARD_ETCD_CA_FILE",
            &format!("{ETCD_TLS_DIR}/ca.crt"),
        ));
        env.push(value_env(
            "SWITCHBOARD_ETCD_CERT_FILE",
            &format!("{ETCD_TLS_DIR}/tls.crt"),
        ));
        env.push(value_env(
            "SWITCHBOARD_ETCD_KEY_FILE",
            &format!("{ETCD_TLS_DIR}/tls.key"),
        ));
    }

    if access.as_ref().is_some_and(AccessPlan::nodes_serve_tls) {
        volumes.push(Volume {
            name: "client-tls".into(),
            secret: Some(SecretVolumeSource {
                // The operator's checked copy: it changes only to a valid certificate.
                secret_name: Some(tls_copy_name(name)),
                default_mode: Some(0o440),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "client-tls".into(),
            mount_path: CLIENT_TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
        env.push(value_env(
            "SWITCHBOARD_TLS_CERT",
            &format!("{CLIENT_TLS_DIR}/tls.crt"),
        ));
        env.push(value_env(
            "SWITCHBOARD_TLS_KEY",
            &format!("{CLIENT_TLS_DIR}/tls.key"),
        ));
    }

    let env = merge_env(overrides.env.clone().unwrap_or_default(), env);
    let mut ports = vec![
        ContainerPort {
            name: Some("ws".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        },
        ContainerPort {
            name: Some("admin".into()),
            container_port: ADMIN_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        },
    ];
    if access.as_ref().is_some_and(AccessPlan::serves_webtransport) {
        ports.push(ContainerPort {
            name: Some("wt".into()),
            container_port: port,
            protocol: Some("UDP".into()),
            ..Default::default()
        });
    }

    let container = Container {
        name: CONTAINER.into(),
        image: Some(pool.image.clone()),
        args: Some(args),
        env: Some(env),
        ports: Some(ports),
        readiness_probe: Some(http_probe("/readyz", 2, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        resources: overrides.resources.clone(),
        env_from: overrides.env_from.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(
            overrides
                .security_context
                .clone()
                .unwrap_or(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        add: None,
                    }),
                    ..Default::default()
                }),
        ),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };

    let pod_spec = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        subdomain: Some(headless_service_name(name)),
        termination_grace_period_seconds: Some(spec.termination_grace_period_seconds),
        node_selector: overrides.node_selector.clone(),
        tolerations: overrides.tolerations.clone(),
        affinity: Some(
            overrides
                .affinity
                .clone()
                .unwrap_or_else(|| spread_over_machines(name)),
        ),
        topology_spread_constraints: overrides.topology_spread_constraints.clone(),
        priority_class_name: overrides.priority_class_name.clone(),
        service_account_name: overrides.service_account_name.clone(),
        image_pull_secrets: overrides.image_pull_secrets.clone(),
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        // The `restricted` Pod Security Standard: non-root (the image's nonroot user),
        // RuntimeDefault seccomp; the container drops every capability. The Secret volumes
        // (mode 0440) belong to the fsGroup, so the non-root user can read them.
        security_context: Some(overrides.pod_security_context.clone().unwrap_or(
            PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NONROOT_UID),
                run_as_group: Some(NONROOT_UID),
                fs_group: Some(NONROOT_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    Ok((labels, annotations, pod_spec))
}

/// The default affinity: prefer machines that run no other node of this cluster, so one
/// machine's loss or drain takes as few nodes as possible.
fn spread_over_machines(cluster: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(cluster)),
                            match_expressions: None,
                        }),
                        ..Default::default()
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        }),
        ..Default::default()
    }
}

/// `cluster` with `defaults` added to its pod template's environment, except the variables the
/// template sets itself (the cluster's own settings win over the operator's).
pub fn with_node_env<'a>(
    cluster: &'a SignalingCluster,
    defaults: &[EnvVar],
) -> std::borrow::Cow<'a, SignalingCluster> {
    let template_env = cluster
        .spec
        .pod_template
        .as_ref()
        .and_then(|t| t.env.as_deref())
        .unwrap_or_default();
    let missing: Vec<EnvVar> = defaults
        .iter()
        .filter(|d| !template_env.iter().any(|t| t.name == d.name))
        .cloned()
        .collect();
    if missing.is_empty() {
        return std::borrow::Cow::Borrowed(cluster);
    }
    let mut cluster = cluster.clone();
    let template = cluster
        .spec
        .pod_template
        .get_or_insert_with(Default::default);
    template.env.get_or_insert_with(Vec::new).extend(missing);
    std::borrow::Cow::Owned(cluster)
}

/// The pod template's variables followed by the operator's, without the template's variables
/// that the operator sets itself (its settings must win, and Kubernetes warns on duplicates).
fn merge_env(template: Vec<EnvVar>, ours: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = template
        .into_iter()
        .filter(|t| !ours.iter().any(|o| o.name == t.name))
        .collect();
    env.extend(ours);
    env
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
        value: None,
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        success_threshold: Some(1),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::Toleration;

    use super::*;
    use crate::controller::cluster::pools::version_pools;
    use crate::controller::cluster::testing::cluster;
    use crate::crd::PodOverrides;

    fn pool(c: &SignalingCluster) -> VersionPool {
        version_pools(c, None).unwrap().remove(0)
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn container_env(pod: &Pod) -> Vec<(String, Option<String>)> {
        container(pod)
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect()
    }

    #[test]
    fn the_operators_node_env_reaches_pods_unless_the_template_sets_it() {
        let defaults = vec![
            var(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://operator-default:4317",
            ),
            var("SWITCHBOARD_TRACE_SAMPLE_RATIO", "0.01"),
        ];
        let c = cluster(2, 4);
        let with = with_node_env(&c, &defaults);
        let pod = desired_pod(&with, &pool(&with), 0).unwrap();
        let env = container_env(&pod);
        assert!(env.contains(&(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            Some("http://operator-default:4317".into())
        )));
        // Turning tracing on changes the template: the pods roll.
        assert_ne!(
            pool_template_hash(&with, &pool(&with)).unwrap(),
            pool_template_hash(&c, &pool(&c)).unwrap()
        );
        // The cluster's own value wins; nothing is added twice.
        let mut own = cluster(2, 4);
        own.spec.pod_template = Some(PodOverrides {
            env: Some(vec![var("OTEL_EXPORTER_OTLP_ENDPOINT", "")]),
            ..Default::default()
        });
        let with = with_node_env(&own, &defaults);
        let env = container_env(&desired_pod(&with, &pool(&with), 0).unwrap());
        let endpoints: Vec<_> = env
            .iter()
            .filter(|(n, _)| n == "OTEL_EXPORTER_OTLP_ENDPOINT")
            .collect();
        assert_eq!(
            endpoints,
            vec![&(
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
                Some(String::new())
            )]
        );
        assert!(
            env.iter()
                .any(|(n, _)| n == "SWITCHBOARD_TRACE_SAMPLE_RATIO")
        );
        // No defaults: the cluster is used as it is.
        assert!(matches!(
            with_node_env(&c, &[]),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    fn container(pod: &Pod) -> &Container {
        &pod.spec.as_ref().unwrap().containers[0]
    }

    #[test]
    fn names_round_trip_and_reject_lookalikes() {
        assert_eq!(pod_name("demo", "v2", 7), "demo-v2-7");
        assert_eq!(pod_index("demo", "v2", "demo-v2-7"), Some(7));
        assert_eq!(pod_index("demo", "v2", "demo-v2-07"), None);
        assert_eq!(pod_index("demo", "v2", "demo-v2-"), None);
        assert_eq!(pod_index("demo", "v2", "demo-v2-x"), None);
        assert_eq!(pod_index("demo", "v2", "demo-v22-1"), None);
        assert_eq!(pod_index("demo", "v", "demo-v2-1"), None);
        assert_eq!(pod_index("demo", "v2", "demo-v2-0"), Some(0));
    }

    #[test]
    fn pod_runs_serve_with_the_cluster_settings() {
        let c = cluster(3, 16);
        let pod = desired_pod(&c, &pool(&c), 2).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("demo-default-2"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("live"));
        let args = container(&pod).args.clone().unwrap().join(" ");
        assert_eq!(
            args,
            "serve --listen 0.0.0.0:7000 --admin-listen 0.0.0.0:9100 \
             --etcd-endpoints http://etcd-0:2379,http://etcd-1:2379 --namespace live --cluster demo \
             --advertise-url ws://$(POD_IP):7000/ws --shard-count 16 \
             --jwt-secret-file /etc/switchboard/auth/secret"
        );
        let env: BTreeMap<_, _> = container(&pod)
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.clone()))
            .collect();
        let field = |name: &str| {
            env[name]
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.clone())
        };
        assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
        assert_eq!(
            field("POD_NAMESPACE").as_deref(),
            Some("metadata.namespace")
        );
        assert_eq!(field("POD_IP").as_deref(), Some("status.podIP"));
        // POD_IP is defined before the args use it (Kubernetes expands $(VAR) from env).
        assert_eq!(env["SWITCHBOARD_VERSION"].value.as_deref(), Some("default"));
        assert_eq!(env["SWITCHBOARD_PROTOCOLS"].value.as_deref(), Some("v1,v2"));
        assert_eq!(
            env["SWITCHBOARD_JWT_KEYS_DIR"].value.as_deref(),
            Some("/etc/switchboard/auth")
        );
        assert!(!env.contains_key("SWITCHBOARD_ETCD_CA_FILE"));
    }

    #[test]
    fn pod_has_probes_secret_labels_owner_and_grace_period() {
        let c = cluster(3, 16);
        let pod = desired_pod(&c, &pool(&c), 0).unwrap();
        let ctr = container(&pod);
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(path(&ctr.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(path(&ctr.liveness_probe).as_deref(), Some("/healthz"));
        let port = ctr
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| h.port.clone());
        assert_eq!(port, Some(IntOrString::Int(9100)));
        assert!(ctr.lifecycle.is_none(), "SIGTERM drains; no preStop hook");

        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.termination_grace_period_seconds, Some(60));
        assert_eq!(spec.subdomain.as_deref(), Some("demo-nodes"));
        let secret = spec.volumes.as_ref().unwrap()[0].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("demo-auth"));
        assert_eq!(
            secret.items, None,
            "the whole Secret: secret and/or keys.json"
        );
        assert_eq!(ctr.volume_mounts.as_ref().unwrap()[0].mount_path, AUTH_DIR);

        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::CLUSTER], "demo");
        assert_eq!(labels[labels::VERSION], "default");
        assert_eq!(labels["app.kubernetes.io/name"], "signaling-node");
        assert_eq!(
            labels["app.kubernetes.io/managed-by"],
            "switchboard-operator"
        );
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("SignalingCluster", "demo", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert!(recorded_hash(&pod).is_some());
    }

    #[test]
    fn overrides_reach_the_pod_and_operator_labels_win() {
        let mut c = cluster(3, 16);
        c.spec.etcd.tls_secret = Some("etcd-client".into());
        c.spec.pod_template = Some(PodOverrides {
            node_selector: Some(BTreeMap::from([("pool".into(), "signaling".into())])),
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                ..Default::default()
            }]),
            labels: Some(BTreeMap::from([
                ("team".into(), "live".into()),
                (labels::CLUSTER.into(), "spoofed".into()),
            ])),
            env: Some(vec![
                value_env("SWITCHBOARD_DEMO", "true"),
                value_env("SWITCHBOARD_VERSION", "spoofed"),
            ]),
            ..Default::default()
        });
        let pod = desired_pod(&c, &pool(&c), 0).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_selector.as_ref().unwrap()["pool"], "signaling");
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "live");
        assert_eq!(labels[labels::CLUSTER], "demo");
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 2);
        let env = container(&pod).env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "SWITCHBOARD_ETCD_CA_FILE"));
        let values = |name: &str| -> Vec<Option<String>> {
            env.iter()
                .filter(|e| e.name == name)
                .map(|e| e.value.clone())
                .collect()
        };
        assert_eq!(values("SWITCHBOARD_DEMO"), [Some("true".to_string())]);
        assert_eq!(values("SWITCHBOARD_VERSION"), [Some("default".to_string())]);
    }

    #[test]
    fn the_rest_of_the_pod_template_reaches_the_pod() {
        use k8s_openapi::api::core::v1::{
            ConfigMapEnvSource, EnvFromSource, LocalObjectReference, TopologySpreadConstraint,
        };
        let c = cluster(3, 16);
        let pod = desired_pod(&c, &pool(&c), 0).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        // Default: spread over machines, softly.
        let anti = spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .unwrap();
        assert_eq!(
            anti[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(
            anti[0]
                .pod_affinity_term
                .label_selector
                .as_ref()
                .unwrap()
                .match_labels,
            Some(selector_labels("demo"))
        );
        assert!(spec.image_pull_secrets.is_none() && spec.priority_class_name.is_none());

        let mut c = c;
        c.spec.pod_template = Some(PodOverrides {
            image_pull_secrets: Some(vec![LocalObjectReference {
                name: "registry".into(),
            }]),
            topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "topology.kubernetes.io/zone".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                ..Default::default()
            }]),
            priority_class_name: Some("realtime".into()),
            service_account_name: Some("signaling".into()),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "node-env".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            affinity: Some(Affinity::default()),
            ..Default::default()
        });
        let pod = desired_pod(&c, &pool(&c), 0).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.image_pull_secrets.as_ref().unwrap()[0].name,
            "registry"
        );
        assert_eq!(spec.topology_spread_constraints.as_ref().unwrap().len(), 1);
        assert_eq!(spec.priority_class_name.as_deref(), Some("realtime"));
        assert_eq!(spec.service_account_name.as_deref(), Some("signaling"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(
            spec.affinity,
            Some(Affinity::default()),
            "given affinity replaces the default"
        );
        let env_from = container(&pod).env_from.as_ref().unwrap();
        assert_eq!(
            env_from[0].config_map_ref.as_ref().unwrap().name,
            "node-env"
        );
    }

    #[test]
    fn pods_meet_the_restricted_pod_security_standard() {
        let c = cluster(3, 16);
        let pod = desired_pod(&c, &pool(&c), 0).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let psc = spec.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(NONROOT_UID));
        // The auth Secret is mounted 0440: only its group can read it besides root.
        assert_eq!(psc.fs_group, Some(NONROOT_UID));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        let sc = container(&pod).security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let dropped = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
        assert_eq!(dropped, Some(vec!["ALL".to_string()]));
        assert_ne!(sc.privileged, Some(true));
    }

    #[test]
    fn template_hash_tracks_the_spec_not_the_pod_name() {
        let c = cluster(3, 16);
        let p = pool(&c);
        let a = desired_pod(&c, &p, 0).unwrap();
        let b = desired_pod(&c, &p, 5).unwrap();
        assert_eq!(recorded_hash(&a), recorded_hash(&b));
        assert_eq!(
            recorded_hash(&a),
            Some(pool_template_hash(&c, &p).unwrap().as_str())
        );

        let mut newer = p.clone();
        newer.image = "switchboard/signaling-node:2".into();
        assert_ne!(
            pool_template_hash(&c, &newer).unwrap(),
            pool_template_hash(&c, &p).unwrap()
        );
        let mut config_only = c.clone();
        config_only.spec.config.heartbeat_seconds = 5;
        // Node config is hot-reloaded through etcd: it must not restart pods.
        assert_eq!(
            pool_template_hash(&config_only, &p).unwrap(),
            pool_template_hash(&c, &p).unwrap()
        );
    }

    #[test]
    fn a_cluster_without_uid_is_an_error() {
        let mut c = cluster(3, 16);
        c.metadata.uid = None;
        let p = pool(&c);
        assert!(matches!(
            desired_pod(&c, &p, 0),
            Err(Error::MissingObjectKey("uid"))
        ));
    }
}

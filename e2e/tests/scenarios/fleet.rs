//! Declarative scenarios: apply and see Ready (a), invalid manifests refused (b), config
//! rollout (g), scaling (h), operator leader takeover (i) and cluster deletion (j).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_e2e::cluster::eventually;
use switchboard_e2e::real_node::Fault;

use crate::calls::Member;
use crate::support::{
    CLUSTER, CLUSTER_LABEL, Env, EnvOptions, NS, PATIENCE, SHARDS, ScenarioTimer, condition_true,
    measured, node_url, pod_ready,
};

/// Shorter grace periods than the example's 60/30 s, so scale-down and teardown are quick.
pub fn quick(sigc: &mut Value) {
    sigc["spec"]["terminationGracePeriodSeconds"] = json!(10);
    sigc["spec"]["drainTimeoutSeconds"] = json!(5);
}

fn phase_name(shard: &switchboard_operator::crd::RoomShard) -> String {
    shard
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s.phase).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Every shard Assigned to one of `nodes`.
async fn all_assigned_to(env: &Env, nodes: &[String]) -> bool {
    let shards = env.shards().await;
    shards.len() == SHARDS as usize
        && shards.values().all(|s| {
            phase_name(s) == "Assigned"
                && s.status
                    .as_ref()
                    .and_then(|st| st.node.as_ref())
                    .is_some_and(|n| nodes.contains(n))
        })
}

/// Ready node pod names.
async fn ready_node_names(env: &Env) -> Vec<String> {
    env.node_pods()
        .await
        .iter()
        .filter(|p| pod_ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_apply_examples_and_see_ready() {
    let _t = ScenarioTimer::start("a_apply_examples_and_see_ready");
    let env = env_or_skip!(EnvOptions::default());
    let took = env.deploy_demo(true, |_| {}).await;
    measured("a: kubectl apply examples/basic -> sigc/demo Ready", took);

    let table = env.kubectl(&["get", "sigc,rshard,prollout"], None);
    eprintln!("{table}");
    let sigc = env.sigc().await.expect("sigc/demo exists");
    assert!(condition_true(&sigc, "Ready"), "sigc/demo not Ready");
    let status = sigc.status.clone().unwrap_or_default();
    assert_eq!(status.shards_assigned, 16, "shardsAssigned");
    assert_eq!(status.ready_replicas, 3, "readyReplicas");
    let shards = env.shards().await;
    assert_eq!(shards.len(), 16, "16 RoomShards");
    let ready = ready_node_names(&env).await;
    assert_eq!(ready.len(), 3, "3 Ready node pods: {ready:?}");
    for (index, shard) in &shards {
        assert_eq!(phase_name(shard), "Assigned", "shard {index}");
        let node = shard.status.as_ref().and_then(|s| s.node.clone());
        assert!(
            node.as_ref().is_some_and(|n| ready.contains(n)),
            "shard {index} owned by {node:?}, not a Ready node pod"
        );
    }
    assert!(
        table.contains("demo-shard-0015") && table.contains("protocolrollout"),
        "kubectl get shows the resources:\n{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_invalid_manifests_are_refused_with_the_cel_message() {
    let _t = ScenarioTimer::start("b_invalid_manifests_are_refused_with_the_cel_message");
    // The API server alone validates; no operator needed.
    let env = env_or_skip!(EnvOptions {
        operator: false,
        ..EnvOptions::default()
    });
    let docs = env.demo_manifests(true, |_| {});
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("examples/basic has a {kind}"))
    };
    let apply = [
        "apply",
        "--server-side",
        "--field-manager=scenarios",
        "-f",
        "-",
    ];

    let mut rollout = find("ProtocolRollout");
    rollout["spec"]["versions"][0]["weight"] = json!(80);
    let err = env.kubectl_err(&apply, Some(&rollout.to_string()));
    assert!(
        err.contains("version weights must sum to 100"),
        "weights 80/10: {err}"
    );

    let mut sigc = find("SignalingCluster");
    sigc["spec"]["shards"] = json!(0);
    let err = env.kubectl_err(&apply, Some(&sigc.to_string()));
    assert!(
        err.contains("shards must be between 1 and 4096"),
        "shards 0: {err}"
    );

    let sigc = find("SignalingCluster");
    env.apply(&[find("Secret"), sigc.clone()]);
    let mut resharded = sigc;
    resharded["spec"]["shards"] = json!(32);
    let err = env.kubectl_err(&apply, Some(&resharded.to_string()));
    assert!(
        err.contains("shards is immutable"),
        "shards 16 -> 32: {err}"
    );
    // Also through a plain edit (merge patch), the way `kubectl edit` sends it.
    let err = env.merge_patch_err("sigc", r#"{"spec":{"shards":8}}"#);
    assert!(err.contains("shards is immutable"), "patch shards: {err}");
    let shards = env.kubectl(
        &["get", "sigc", CLUSTER, "-o", "jsonpath={.spec.shards}"],
        None,
    );
    assert_eq!(shards.trim(), "16", "the stored cluster is unchanged");
    env.kubectl(&["delete", "sigc", CLUSTER, "--wait=true"], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_config_change_is_applied_by_every_node() {
    let _t = ScenarioTimer::start("g_config_change_is_applied_by_every_node");
    let env = env_or_skip!(EnvOptions::default());
    env.deploy_demo(false, quick).await;
    let before = env.sigc().await.expect("sigc/demo");
    let revision = before
        .status
        .as_ref()
        .and_then(|s| s.config_revision)
        .unwrap_or(0);

    let started = Instant::now();
    env.merge_patch("sigc", r#"{"spec":{"config":{"heartbeatSeconds":10}}}"#);
    let waited = eventually("ConfigApplied with a new revision", PATIENCE, || async {
        let sigc = env.sigc().await?;
        let status = sigc.status.as_ref()?;
        let generation = sigc.metadata.generation?;
        let applied = status
            .conditions
            .iter()
            .find(|c| c.type_ == "ConfigApplied")?;
        (applied.status == "True"
            && status.config_revision? > revision
            && status.observed_generation? >= generation
            && applied.observed_generation.is_none_or(|g| g >= generation))
        .then_some(status.config_revision)
        .flatten()
    })
    .await;
    let new_revision = env.check(waited);
    measured("g: config edit -> ConfigApplied True", started.elapsed());
    eprintln!("config revision {revision} -> {new_revision}");

    // Every node acked the new revision in etcd, and a client sees the new heartbeat.
    let acks: Vec<(String, String)> = env
        .etcd_keys()
        .await
        .into_iter()
        .filter(|(k, _)| k.contains("/acks/"))
        .collect();
    assert_eq!(acks.len(), 3, "one ack per node: {acks:?}");
    for (key, value) in &acks {
        let ack: Value = serde_json::from_str(value).expect("ack JSON");
        assert_eq!(
            ack["config_revision"].as_i64(),
            Some(new_revision),
            "{key} = {value}"
        );
    }
    let room = "studio-g";
    let owner = env.owner_of(room).await;
    let member = Member::connect(
        &node_url(&owner),
        "alice",
        env.token("alice", room).await,
        None,
    )
    .await;
    assert_eq!(
        member.client.welcome().heartbeat_ms,
        10_000,
        "the node applied heartbeatSeconds 10 without a restart"
    );
    let restarts: i32 = env
        .node_pods()
        .await
        .iter()
        .filter_map(|p| {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()
                .map(|c| c.restart_count)
        })
        .sum();
    assert_eq!(restarts, 0, "no node restarted for the config change");
    member.client.close().await;
}

/// Waits until `replicas` node pods are Ready, the cluster is Ready and the shards are spread
/// over exactly those nodes, at most one apart; returns the per-node counts.
async fn balanced(env: &Env, replicas: usize) -> BTreeMap<String, usize> {
    let what = format!("{replicas} Ready nodes with balanced shards");
    let waited = eventually(&what, Duration::from_secs(120), || async {
        let pods = env.node_pods().await;
        let ready = ready_node_names(env).await;
        if pods.len() != replicas || ready.len() != replicas {
            return None;
        }
        let sigc = env.sigc().await?;
        let status = sigc.status.as_ref()?;
        // What `kubectl get sigc` shows must have caught up too.
        if usize::try_from(status.ready_replicas).ok()? != replicas
            || status.observed_generation < sigc.metadata.generation
            || !condition_true(&sigc, "Ready")
            || !all_assigned_to(env, &ready).await
        {
            return None;
        }
        let counts = env.shards_per_node().await;
        let max = counts.values().copied().max()?;
        let min = counts.values().copied().min()?;
        (counts.len() == replicas && max - min <= 1).then_some(counts)
    })
    .await;
    env.check(waited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_scale_up_and_down_moves_pods_and_shards() {
    let _t = ScenarioTimer::start("h_scale_up_and_down_moves_pods_and_shards");
    let env = env_or_skip!(EnvOptions::default());
    env.deploy_demo(false, quick).await;
    for replicas in [4usize, 2] {
        let started = Instant::now();
        env.kubectl(
            &["scale", "sigc", CLUSTER, &format!("--replicas={replicas}")],
            None,
        );
        let counts = balanced(&env, replicas).await;
        measured(
            &format!("h: kubectl scale --replicas={replicas} -> pods Ready and shards balanced"),
            started.elapsed(),
        );
        eprintln!("shards per node at {replicas} replicas: {counts:?}");
        let sigc = env.sigc().await.expect("sigc/demo");
        assert_eq!(
            sigc.status.as_ref().map(|s| s.ready_replicas),
            Some(i32::try_from(replicas).unwrap_or(0)),
            "status.readyReplicas (the scale subresource's status)"
        );
        let scale = env.kubectl(
            &[
                "get",
                "sigc",
                CLUSTER,
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
            None,
        );
        assert_eq!(scale.trim(), replicas.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i_operator_leader_killed_standby_takes_over() {
    let _t = ScenarioTimer::start("i_operator_leader_killed_standby_takes_over");
    let env = env_or_skip!(EnvOptions {
        operator_replicas: 2,
        ..EnvOptions::default()
    });
    env.deploy_demo(false, quick).await;
    let leader = env.check(eventually("a leader", PATIENCE, || async { env.leader().await }).await);
    let standby = env
        .operator_pods()
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .find(|n| *n != leader)
        .unwrap_or_else(|| env.fail("no standby operator pod"));

    // The leader hangs (SIGSTOP of its container): it neither renews nor releases the Lease,
    // so the standby takes over once the Lease expires.
    let started = Instant::now();
    env.check(
        env.cluster
            .fault(Fault::Stop, crate::support::OPERATOR_NS, &leader),
    );
    let waited = eventually("the standby holding the Lease", PATIENCE, || async {
        (env.leader().await.as_deref() == Some(standby.as_str())).then_some(())
    })
    .await;
    env.check(waited);
    measured(
        "i: leader frozen -> standby holds the Lease",
        started.elapsed(),
    );

    // The new leader does the work: a node killed meanwhile loses its shards to live nodes,
    // and a scale-up is carried out.
    let victim = env
        .shards_per_node()
        .await
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .map(|(node, _)| node)
        .unwrap_or_else(|| env.fail("no node owns a shard"));
    let owned_before: Vec<u32> = env
        .shards()
        .await
        .iter()
        .filter(|(_, s)| {
            s.status.as_ref().and_then(|st| st.node.as_deref()) == Some(victim.as_str())
        })
        .map(|(i, _)| *i)
        .collect();
    let started = Instant::now();
    env.check(env.cluster.fault(Fault::Kill, NS, &victim));
    let waited = eventually("the killed node's shards reassigned", PATIENCE, || async {
        let shards = env.shards().await;
        owned_before
            .iter()
            .all(|i| {
                shards.get(i).is_some_and(|s| {
                    s.status.as_ref().is_some_and(|st| {
                        st.last_failover.as_ref().is_some_and(|f| f.from == victim)
                            && phase_name(s) == "Assigned"
                    })
                })
            })
            .then_some(())
    })
    .await;
    env.check(waited);
    measured(
        "i: node killed under the new leader -> its shards reassigned",
        started.elapsed(),
    );
    env.kubectl(&["scale", "sigc", CLUSTER, "--replicas=4"], None);
    let waited = eventually("a 4th node pod created and Ready", PATIENCE, || async {
        (ready_node_names(&env).await.len() >= 4).then_some(())
    })
    .await;
    env.check(waited);

    // The old leader wakes up: it lost the Lease and must not write (it exits, and its
    // container restarts as a standby).
    env.check(
        env.cluster
            .fault(Fault::Cont, crate::support::OPERATOR_NS, &leader),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    if env.leader().await.as_deref() != Some(standby.as_str()) {
        env.fail("the old leader took the Lease back after SIGCONT");
    }
    env.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j_deleting_the_cluster_removes_pods_and_etcd_keys() {
    let _t = ScenarioTimer::start("j_deleting_the_cluster_removes_pods_and_etcd_keys");
    let env = env_or_skip!(EnvOptions::default());
    env.deploy_demo(false, quick).await;
    // A room with state, so rooms/ keys exist too.
    let room = "studio-j";
    let owner = env.owner_of(room).await;
    let mut alice = Member::connect(
        &node_url(&owner),
        "alice",
        env.token("alice", room).await,
        None,
    )
    .await;
    alice.join(room).await;
    let keys = env.etcd_keys().await;
    for part in ["/nodes/", "/assignments/", "/rooms/", "/config"] {
        assert!(
            keys.iter().any(|(k, _)| k.contains(part)),
            "expected {part} keys before deletion: {:?}",
            keys.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
    }
    alice.client.close().await;

    let started = Instant::now();
    env.kubectl(
        &["delete", "sigc", CLUSTER, "--wait=true", "--timeout=120s"],
        None,
    );
    measured(
        "j: kubectl delete sigc (--wait) returned",
        started.elapsed(),
    );
    let waited = eventually(
        "no pods, RoomShards or etcd keys of the cluster",
        PATIENCE,
        || async {
            let pods = env.all_node_pods().await;
            let shards = env.shards().await;
            let keys = env.etcd_keys().await;
            (pods.is_empty() && shards.is_empty() && keys.is_empty()).then_some(())
        },
    )
    .await;
    if waited.is_err() {
        let left = env.etcd_keys().await;
        env.fail(format!(
            "after deleting sigc/demo: {} pod(s), {} RoomShard(s), etcd keys left under \
             /switchboard/{NS}/{CLUSTER}/: {:?}",
            env.all_node_pods().await.len(),
            env.shards().await.len(),
            left.iter().map(|(k, _)| k).collect::<Vec<_>>()
        ));
    }
    measured(
        "j: kubectl delete sigc -> no pods, no RoomShards, no etcd keys",
        started.elapsed(),
    );
    let pods = env.kubectl(
        &[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            &format!("{CLUSTER_LABEL}={CLUSTER}"),
            "-o",
            "name",
        ],
        None,
    );
    assert!(pods.trim().is_empty(), "kubectl still lists pods: {pods}");
    // Nothing writes keys back (a node that outlived the cleanup would).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = env.etcd_keys().await;
    assert!(
        later.is_empty(),
        "etcd keys reappeared after the cleanup: {:?}",
        later.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_a_pod_refused_by_pod_security_shows_in_the_cluster_status() {
    let _t = ScenarioTimer::start("n_a_pod_refused_by_pod_security_shows_in_the_cluster_status");
    let env = env_or_skip!(EnvOptions::default());
    // The fleet namespace enforces `restricted`: a pod template asking for root is refused
    // by the apiserver when the operator creates the pods.
    env.apply(&env.demo_manifests(false, |sigc| {
        quick(sigc);
        sigc["spec"]["podTemplate"]["podSecurityContext"] =
            json!({"runAsNonRoot": false, "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}});
    }));
    let started = Instant::now();
    let waited = eventually("the refusal in sigc/demo's status", PATIENCE, || async {
        let sigc = env.sigc().await?;
        sigc.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.reason == "Forbidden" && c.message.contains("violates PodSecurity"))
            .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
    })
    .await;
    let condition = env.check(waited);
    eprintln!("n: {condition}");
    measured("n: refused pod -> condition in status", started.elapsed());
    let events = env.kubectl(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=SignalingCluster,reason=Forbidden",
            "-o",
            "name",
        ],
        None,
    );
    assert!(
        !events.trim().is_empty(),
        "a Warning Event Forbidden on sigc/demo"
    );
    let pods = env.node_pods().await;
    assert!(pods.is_empty(), "no pod was admitted: {:?}", pods.len());

    // Fixed by the user: the default (restricted) security context again, and the fleet comes up.
    env.kubectl(
        &[
            "patch",
            "sigc",
            CLUSTER,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/podTemplate/podSecurityContext"}]"#,
        ],
        None,
    );
    env.wait_ready().await;
}

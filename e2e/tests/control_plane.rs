//! The local control plane and the pod runner, end to end with real components: etcd,
//! kube-apiserver, kube-controller-manager and kube-scheduler from `e2e/scripts/control-plane`,
//! `pod-runner` with two nodes, and `e2e-test-server` as the workload.
//!
//! One test walks a pod through its life (scheduled by the real scheduler, started on its own
//! loopback address, Ready from its probe, kill -9 and restart, freeze and thaw, graceful
//! deletion), then a Deployment (controller-manager), garbage collection, and a node going dark.
//! Skips with a message only when the tool binaries are absent (the test command builds them).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use kube::api::{Api, ListParams};
use switchboard_e2e::cluster::{ClusterOptions, LocalCluster, eventually};
use switchboard_e2e::pod_runner::control::{Action, DarkProcesses};
use switchboard_e2e::pod_runner::http;

const WAIT: Duration = Duration::from_secs(30);

fn pod_yaml(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: server
    image: ghcr.io/switchboard/e2e-test-server:dev
    args: ["--listen", "0.0.0.0:8080"]
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    readinessProbe:
      httpGet: {{path: /readyz, port: 8080}}
      periodSeconds: 1
      timeoutSeconds: 1
      failureThreshold: 1
"#
    )
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web-deploy}}
  template:
    metadata: {labels: {app: web-deploy}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: server
        image: ghcr.io/switchboard/e2e-test-server:dev
        args: ["--listen", "0.0.0.0:8080"]
        readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1}
"#;

fn container_pid(pod: &Pod) -> Option<u32> {
    let id = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .as_ref()?;
    id.strip_prefix("pod-runner://")?.parse().ok()
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_ready(node: &Node) -> Option<String> {
    let conds = node.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

async fn get_env(ip: Ipv4Addr) -> serde_json::Value {
    let r = http::request(
        SocketAddr::from((ip, 8080)),
        "GET",
        "/env",
        &[],
        b"",
        Duration::from_secs(2),
    )
    .await
    .expect("GET /env from the pod");
    serde_json::from_slice(&r.body).expect("/env is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_schedules_runs_restarts_and_collects_pods() {
    if let Err(missing) = LocalCluster::tools_present() {
        eprintln!("SKIP control_plane e2e test: {missing}");
        return;
    }
    let opts = ClusterOptions::new(env!("CARGO_BIN_EXE_pod-runner"))
        .image("e2e-test-server", env!("CARGO_BIN_EXE_e2e-test-server"));
    let cluster = LocalCluster::start(opts)
        .await
        .expect("local cluster starts");
    eprintln!(
        "measured: control plane start {} ms",
        cluster.control_plane_startup.as_millis()
    );

    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(cluster.client.clone());
    eventually("both runner nodes Ready", WAIT, || async {
        let list = nodes.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|n| node_ready(n).as_deref() == Some("True"))
            .count();
        (ready == 2).then_some(())
    })
    .await
    .unwrap();

    // --- A pod: scheduled by kube-scheduler, runs on its own loopback IP, becomes Ready.
    let created = Instant::now();
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&pod_yaml("solo")))
        .unwrap();
    let pod = eventually("pod solo Ready", WAIT, || async {
        let p = pods.get("solo").await.ok()?;
        is_ready(&p).then_some(p)
    })
    .await
    .unwrap();
    eprintln!(
        "measured: pod create -> Ready {} ms",
        created.elapsed().as_millis()
    );
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
    assert!(
        node_name.starts_with("runner-"),
        "bound to a runner node: {node_name}"
    );
    let events: Api<Event> = Api::default_namespaced(cluster.client.clone());
    let scheduled = eventually("Scheduled event from default-scheduler", WAIT, || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=solo"))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Scheduled"))
    })
    .await
    .unwrap();
    let reporter = scheduled
        .reporting_component
        .clone()
        .or(scheduled.source.and_then(|s| s.component));
    assert_eq!(reporter.as_deref(), Some("default-scheduler"));
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ip: Ipv4Addr = status.pod_ip.as_deref().unwrap().parse().unwrap();
    assert!(ip.is_loopback(), "pod IP {ip} is in 127.0.0.0/8");
    assert_ne!(ip, Ipv4Addr::LOCALHOST);
    let node = nodes.get(&node_name).await.unwrap();
    let internal_ip = node.status.unwrap().addresses.unwrap()[0].address.clone();
    assert_eq!(status.host_ip.as_deref(), Some(internal_ip.as_str()));
    // The process listens on the pod IP ("0.0.0.0:" rewritten) and sees the downward API.
    let env = get_env(ip).await;
    assert_eq!(env["POD_NAME"], "solo");
    assert_eq!(env["POD_IP"], ip.to_string());
    assert_eq!(env["NODE_NAME"], node_name);
    assert_eq!(env["args"][2], format!("{ip}:8080"));

    // --- kill -9: reported at once, restarted (restartPolicy Always), Ready again.
    let pid = container_pid(&pod).expect("container ID carries the pid");
    let killed = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let after_kill = eventually("kill -9 reported", WAIT, || async {
        let p = pods.get("solo").await.ok()?;
        let c = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        let exit = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .or(c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))?;
        (exit.exit_code == 137).then_some(p)
    })
    .await
    .unwrap();
    eprintln!(
        "measured: kill -9 -> status reported {} ms",
        killed.elapsed().as_millis()
    );
    let restarted = eventually("pod solo restarted and Ready", WAIT, || async {
        let p = pods.get("solo").await.ok()?;
        (is_ready(&p) && restart_count(&p) == 1).then_some(p)
    })
    .await
    .unwrap();
    let new_pid = container_pid(&restarted).unwrap();
    assert_ne!(new_pid, pid, "a new process");
    assert!(restart_count(&after_kill) <= 1);

    // --- Freeze (SIGSTOP): the probe fails and the pod turns not ready; thaw brings it back.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pod-runner"))
        .args([
            "ctl",
            "freeze",
            "default/solo",
            "--control",
            &cluster.control.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctl freeze: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("frozen pod not Ready", WAIT, || async {
        let p = pods.get("solo").await.ok()?;
        (!is_ready(&p)).then_some(())
    })
    .await
    .unwrap();
    cluster
        .ctl(Action::Resume, "default/solo", None)
        .await
        .unwrap();
    eventually("thawed pod Ready", WAIT, || async {
        is_ready(&pods.get("solo").await.ok()?).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        restart_count(&pods.get("solo").await.unwrap()),
        1,
        "a freeze is not a restart"
    );

    // --- Deletion: SIGTERM to the process, then the pod object disappears.
    let deleted = Instant::now();
    cluster
        .kubectl(&["delete", "pod", "solo", "--wait=false"], None)
        .unwrap();
    eventually("pod solo gone", WAIT, || async {
        pods.get_opt("solo").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    eprintln!(
        "measured: delete -> pod gone {} ms",
        deleted.elapsed().as_millis()
    );
    let log = std::fs::read_to_string(cluster.pod_log("default", "solo")).unwrap();
    assert!(
        log.contains("received SIGTERM"),
        "process got SIGTERM:\n{log}"
    );
    assert!(!pid_alive(new_pid), "process {new_pid} is gone");

    // --- Deployment → ReplicaSet → pods (controller-manager), Ready through the runner.
    cluster
        .kubectl(&["apply", "-f", "-"], Some(DEPLOYMENT))
        .unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(cluster.client.clone());
    eventually("deployment web 2/2 ready", WAIT, || async {
        let d = deployments.get("web").await.ok()?;
        (d.status?.ready_replicas? == 2).then_some(())
    })
    .await
    .unwrap();
    let replica_sets: Api<ReplicaSet> = Api::default_namespaced(cluster.client.clone());
    let rs = replica_sets
        .list(&ListParams::default().labels("app=web-deploy"))
        .await
        .unwrap();
    assert_eq!(rs.items.len(), 1);
    let rs_owner = rs.items[0].metadata.owner_references.as_ref().unwrap()[0]
        .kind
        .clone();
    assert_eq!(rs_owner, "Deployment");
    let deploy_pods = pods
        .list(&ListParams::default().labels("app=web-deploy"))
        .await
        .unwrap();
    assert_eq!(deploy_pods.items.len(), 2);
    let ips: std::collections::BTreeSet<_> = deploy_pods
        .items
        .iter()
        .map(|p| p.status.as_ref().unwrap().pod_ip.clone().unwrap())
        .collect();
    assert_eq!(ips.len(), 2, "each pod has its own address: {ips:?}");

    // --- Garbage collection: background deletion takes the ReplicaSet and its pods along.
    cluster
        .kubectl(
            &[
                "delete",
                "deployment",
                "web",
                "--cascade=background",
                "--wait=false",
            ],
            None,
        )
        .unwrap();
    eventually("ReplicaSet and pods of web collected", WAIT, || async {
        let rs = replica_sets
            .list(&ListParams::default().labels("app=web-deploy"))
            .await
            .ok()?;
        let p = pods
            .list(&ListParams::default().labels("app=web-deploy"))
            .await
            .ok()?;
        (rs.items.is_empty() && p.items.is_empty()).then_some(())
    })
    .await
    .unwrap();
    // And for a plain owner reference.
    let config_maps: Api<ConfigMap> = Api::default_namespaced(cluster.client.clone());
    cluster
        .kubectl(
            &["create", "configmap", "owner", "--from-literal=a=b"],
            None,
        )
        .unwrap();
    let owner_uid = config_maps
        .get("owner")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let dependent = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dependent\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {owner_uid}}}\ndata: {{x: \"z\"}}\n"
    );
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&dependent))
        .unwrap();
    cluster
        .kubectl(&["delete", "configmap", "owner"], None)
        .unwrap();
    eventually("dependent ConfigMap collected", WAIT, || async {
        config_maps
            .get_opt("dependent")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();

    // --- A node goes dark: the node lifecycle controller marks it and its pod not Ready while
    // the process keeps serving (a partition); on resume the runner reports Ready again.
    let pinned = pod_yaml("pinned").replace("spec:\n", "spec:\n  nodeName: runner-1\n");
    cluster
        .kubectl(&["apply", "-f", "-"], Some(&pinned))
        .unwrap();
    let pinned_ip: Ipv4Addr = eventually("pod pinned Ready", WAIT, || async {
        let p = pods.get("pinned").await.ok()?;
        if !is_ready(&p) {
            return None;
        }
        p.status?.pod_ip?.parse().ok()
    })
    .await
    .unwrap();
    let dark_at = Instant::now();
    cluster
        .ctl(Action::Dark, "runner-1", Some(DarkProcesses::Keep))
        .await
        .unwrap();
    eventually("dark node runner-1 not Ready", WAIT, || async {
        let n = nodes.get("runner-1").await.ok()?;
        (node_ready(&n).as_deref() != Some("True")).then_some(())
    })
    .await
    .unwrap();
    eprintln!(
        "measured: node dark -> NotReady/Unknown {} ms (grace 6 s)",
        dark_at.elapsed().as_millis()
    );
    eventually("pod on the dark node not Ready", WAIT, || async {
        (!is_ready(&pods.get("pinned").await.ok()?)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        get_env(pinned_ip).await["POD_NAME"],
        "pinned",
        "kept processes still serve"
    );
    cluster.ctl(Action::Resume, "runner-1", None).await.unwrap();
    eventually("resumed node runner-1 Ready", WAIT, || async {
        let n = nodes.get("runner-1").await.ok()?;
        (node_ready(&n).as_deref() == Some("True")).then_some(())
    })
    .await
    .unwrap();
    eventually("pod on the resumed node Ready again", WAIT, || async {
        is_ready(&pods.get("pinned").await.ok()?).then_some(())
    })
    .await
    .unwrap();
}

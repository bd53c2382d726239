//! Clients outside the cluster (issue 16), from the node's client network namespace, whose
//! only route is to the node's external address (pod and Service addresses unreachable there,
//! which each scenario checks first):
//!
//! - o: node ports, TLS on the nodes. The co-host demo (`signaling-node client --demo`)
//!   through the entry URL; a call whose owner is killed (kill -9) resumes on the new owner
//!   through the node URLs; the certificate rotated under a live call (new handshakes get it,
//!   the call's connections stay); then the bad inputs: a certificate for the wrong host, the
//!   Secret deleted, a template with an unknown placeholder — each a ClientAccessReady reason
//!   and a Warning Event, the last good certificate still served, no pod restarted.
//! - p: Traefik (an Ingress per node, one host with a path per node), TLS at the proxy. The
//!   co-host demo; a kill -9 of the owner; a weight change that hands the room to a v2 node;
//!   and the browser (Chromium in the client namespace, the page served over https through
//!   the Ingress) through the entry URL and the node URLs, resuming after the owner's kill.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use switchboard_e2e::cluster::eventually;
use switchboard_e2e::outside::{
    Certificates, ENTRY_NODE_PORT, EXTERNAL_HOST, INGRESS_NODE_PORT, Pair, file_fingerprint,
    ingress_access, node_port_access, run_outside, served_fingerprint, tcp_from_outside,
    tls_secret, unix_ms, welcomes_after,
};
use switchboard_e2e::real_node::Fault;
use switchboard_operator::crd::SignalingCluster;

use crate::failover::name;
use crate::fleet::quick;
use crate::support::{
    CLUSTER, Env, EnvOptions, NS, PATIENCE, SHARDS, ScenarioTimer, measured, pod_ip,
};

/// The client certificate's Secret.
const CERT_SECRET: &str = "signal-cert";

/// A binary built next to this test's (e2e/scripts/run-scenarios builds them).
fn sibling_bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_outside-client"))
        .parent()
        .map(|d| d.join(name))
        .unwrap_or_default()
}

/// What the outside scenarios share: certificates, the join-token key as a file the outside
/// processes read, and the binaries they run.
struct Outside {
    pki: Certificates,
    key_file: PathBuf,
    client_bin: PathBuf,
    node_bin: PathBuf,
}

impl Outside {
    fn new(env: &Env) -> Self {
        let pki = env.check(Certificates::new());
        let node_bin = sibling_bin("signaling-node");
        if !node_bin.is_file() {
            env.fail(format!(
                "{} not found (cargo build --bin signaling-node)",
                node_bin.display()
            ));
        }
        Self {
            pki,
            key_file: PathBuf::new(),
            client_bin: PathBuf::from(env!("CARGO_BIN_EXE_outside-client")),
            node_bin,
        }
    }

    /// Writes the fleet's join-token key (once it is deployed) where the outside processes
    /// read it.
    async fn load_key(&mut self, env: &Env) {
        let key = env.auth_key().await;
        self.key_file = env.check(self.pki.file("join-token.key", &key));
    }

    /// A certificate for `sans` in Secret [`CERT_SECRET`]; returns its fingerprint.
    fn install_cert(&self, env: &Env, name: &str, sans: &str) -> String {
        let cert = env.check(self.pki.issue(name, sans));
        env.apply(&[env.check(tls_secret(CERT_SECRET, NS, &cert))]);
        env.check(file_fingerprint(&cert.cert))
    }

    /// The co-host demo of the CLI from the client namespace, through `entry`.
    fn cohost_demo(&self, env: &Env, entry: &str, room: &str) -> String {
        let node = self.node_bin.display().to_string();
        let (ca, key) = (
            self.pki.ca.display().to_string(),
            self.key_file.display().to_string(),
        );
        let started = Instant::now();
        let out = run_outside(
            &env.cluster,
            &node,
            &[
                "client",
                "--demo",
                "--url",
                entry,
                "--room",
                room,
                "--ca-file",
                &ca,
                "--jwt-secret-file",
                &key,
                "--hold",
                "1",
            ],
        );
        let out = env.check(out);
        if !out.contains("demo complete") {
            env.fail(format!("the co-host demo did not complete:\n{out}"));
        }
        measured(
            "outside: co-host demo through the entry URL (connect, redirect, call, hangup)",
            started.elapsed(),
        );
        out
    }

    fn pair(&self, env: &Env, entry: &str, room: &str) -> Pair {
        env.check(Pair::spawn(
            &env.cluster,
            &self.client_bin,
            entry,
            room,
            &self.key_file,
            &self.pki.ca,
        ))
    }
}

/// From the client namespace, pod and Service addresses are unreachable and the entry is not.
fn only_the_external_address_is_reachable(env: &Env, pods: &[Pod], entry_port: u16) {
    for pod in pods {
        let ip = pod_ip(pod).unwrap_or_default();
        if let Ok(()) = tcp_from_outside(&env.cluster, &ip, 7000) {
            env.fail(format!(
                "the client namespace reached pod {} at {ip}:7000",
                name(pod)
            ));
        }
    }
    let service_ip = env.kubectl(
        &[
            "-n",
            NS,
            "get",
            "service",
            CLUSTER,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    );
    if let Ok(()) = tcp_from_outside(&env.cluster, service_ip.trim(), 7000) {
        env.fail(format!(
            "the client namespace reached Service {CLUSTER} at {service_ip}"
        ));
    }
    let external = &env.cluster.addresses.external_ip;
    env.check(tcp_from_outside(&env.cluster, external, entry_port));
    eprintln!(
        "outside: pod and Service addresses unreachable from {}; {external}:{entry_port} reachable",
        env.cluster.addresses.client_netns
    );
}

/// Waits until the cluster says clients can come in: ClientAccessReady True, the entry URL
/// published.
async fn wait_client_access(env: &Env, entry: &str) -> SignalingCluster {
    let waited = eventually(
        "ClientAccessReady and status.entryUrl",
        PATIENCE,
        || async {
            let sigc = env.sigc().await?;
            let status = sigc.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "ClientAccessReady" && c.status == "True");
            (ready && status.entry_url.as_deref() == Some(entry)).then_some(sigc)
        },
    )
    .await;
    env.check(waited)
}

/// The ClientAccessReady condition's (status, reason, message).
async fn client_access(env: &Env) -> Option<(String, String, String)> {
    let sigc = env.sigc().await?;
    let c = sigc
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "ClientAccessReady")?;
    Some((c.status, c.reason, c.message))
}

/// Waits for ClientAccessReady False with `reason` and a Warning Event of that reason.
async fn expect_refusal(env: &Env, reason: &str) -> String {
    let waited = eventually(
        &format!("ClientAccessReady False {reason}"),
        PATIENCE,
        || async {
            let (status, got, message) = client_access(env).await?;
            (status == "False" && got == reason).then_some(message)
        },
    )
    .await;
    let message = env.check(waited);
    let events = env.kubectl(
        &[
            "-n",
            NS,
            "get",
            "events",
            "--field-selector",
            &format!("reason={reason},type=Warning"),
            "-o",
            "jsonpath={.items[*].note}",
        ],
        None,
    );
    let events = if events.trim().is_empty() {
        env.kubectl(
            &[
                "-n",
                NS,
                "get",
                "events.v1.events.k8s.io",
                "--field-selector",
                &format!("reason={reason},type=Warning"),
                "-o",
                "jsonpath={.items[*].note}",
            ],
            None,
        )
    } else {
        events
    };
    if events.trim().is_empty() {
        env.fail(format!("no Warning Event {reason} (condition: {message})"));
    }
    eprintln!("outside: {reason}: {message}");
    message
}

/// Node pods by name with their uid and container restart count.
async fn pod_generations(env: &Env) -> Vec<(String, String, i32)> {
    env.node_pods()
        .await
        .iter()
        .map(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
            (
                name(p),
                p.metadata.uid.clone().unwrap_or_default(),
                restarts,
            )
        })
        .collect()
}

/// A pair connected through `entry`: both on the room's owner, under its node URL (or the entry URL
/// when the entry picked the owner).
async fn connected_pair(env: &Env, outside: &Outside, entry: &str, room: &str) -> (Pair, Pod) {
    let owner = env.owner_of(room).await;
    let mut pair = outside.pair(env, entry, room);
    let call = pair
        .wait_for("the call Connected", PATIENCE, |l| l["event"] == "call")
        .await;
    env.check(call);
    let url = advertised(&owner);
    for user in ["alice", "bob"] {
        let connected = pair
            .seen
            .iter()
            .find(|l| l["event"] == "connected" && l["user"] == user)
            .cloned()
            .unwrap_or_default();
        // The entry Service picks any node: the owner itself needs no redirect.
        let on_owner_url = connected["url"] == json!(url) || connected["url"] == json!(entry);
        if connected["node"] != json!(name(&owner)) || !on_owner_url {
            env.fail(format!(
                "{user} should be on the owner {} at {url} (or at {entry} when the entry picked \
                 the owner): {connected}",
                name(&owner)
            ));
        }
    }
    eprintln!(
        "outside: the pair in {room} is on {} at {url}",
        name(&owner)
    );
    (pair, owner)
}

/// The URL a node pod advertises (its `SWITCHBOARD_ADVERTISE_URL`).
fn advertised(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == "SWITCHBOARD_ADVERTISE_URL"))
        .and_then(|e| e.value.clone())
        .unwrap_or_default()
}

/// Kills the owner (kill -9); both clients resume the same sessions on a new owner through
/// that node's URL; the call goes on. Returns the resume times.
async fn kill_owner_and_resume(env: &Env, pair: &mut Pair, owner: &Pod, label: &str) {
    let sessions: Vec<(String, Value)> = ["alice", "bob"]
        .iter()
        .map(|u| {
            let connected = pair
                .seen
                .iter()
                .find(|l| l["event"] == "connected" && l["user"] == *u)
                .cloned()
                .unwrap_or_default();
            ((*u).to_string(), connected["session"].clone())
        })
        .collect();
    let t0 = unix_ms();
    let mark = pair.seen.len();
    env.check(env.cluster.fault(Fault::Kill, NS, &name(owner)));
    for (user, session) in &sessions {
        let resumed = pair
            .wait_for_since(mark, &format!("{user} resumed"), PATIENCE, |l| {
                l["event"] == "welcome" && l["user"] == json!(user) && l["resumed"] == true
            })
            .await;
        let resumed = env.check(resumed);
        if &resumed["session"] != session {
            env.fail(format!("{user} got a new session, not a resume: {resumed}"));
        }
    }
    let mut times = Vec::new();
    for (user, _) in &sessions {
        let welcome = welcomes_after(&pair.seen, user, t0)
            .into_iter()
            .find(|l| l["resumed"] == true)
            .cloned()
            .unwrap_or_default();
        let at = u128::from(welcome["at_ms"].as_u64().unwrap_or_default());
        times.push(at.saturating_sub(t0));
        eprintln!(
            "{label}: {user} resumed on {} at {}",
            welcome["node"], welcome["url"]
        );
    }
    let last = times.iter().copied().max().unwrap_or_default();
    measured(
        &format!("{label}: owner killed -> both clients resumed (from the outside namespace)"),
        Duration::from_millis(u64::try_from(last).unwrap_or(u64::MAX)),
    );
}

/// Hangs the call up; both see it end with no gap, lost session or error.
async fn expect_call_intact(env: &Env, pair: Pair) {
    let ended = env.check(pair.hangup(PATIENCE).await);
    if ended["problems"].as_array().is_some_and(|p| !p.is_empty()) {
        env.fail(format!(
            "the outside clients saw problems: {}",
            ended["problems"]
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o_outside_clients_through_node_ports_with_tls_on_the_nodes() {
    let _t = ScenarioTimer::start("o_outside_clients_through_node_ports_with_tls_on_the_nodes");
    let env = env_or_skip!(EnvOptions::default());
    let mut outside = Outside::new(&env);
    let first = outside.install_cert(&env, "first", &format!("DNS:{EXTERNAL_HOST}"));
    let entry = format!("wss://{EXTERNAL_HOST}:{ENTRY_NODE_PORT}/ws");
    let started = Instant::now();
    env.deploy_demo(false, |sigc| {
        quick(sigc);
        sigc["spec"]["clientAccess"] = node_port_access(CERT_SECRET);
    })
    .await;
    wait_client_access(&env, &entry).await;
    measured("o: apply -> Ready with client access", started.elapsed());
    outside.load_key(&env).await;
    let pods = env.node_pods().await;
    only_the_external_address_is_reachable(&env, &pods, ENTRY_NODE_PORT);
    for pod in &pods {
        let url = advertised(pod);
        if !url.starts_with(&format!("wss://{EXTERNAL_HOST}:3")) {
            env.fail(format!(
                "{} advertises {url}, not a node port URL",
                name(pod)
            ));
        }
    }

    // The co-host demo, then a call whose owner dies.
    outside.cohost_demo(&env, &entry, "studio-o1");
    let (mut pair, owner) = connected_pair(&env, &outside, &entry, "studio-o2").await;
    kill_owner_and_resume(&env, &mut pair, &owner, "o (kill -9 owner, node ports)").await;
    env.wait_ready().await;

    // Rotation under the live call: new handshakes get the new certificate, the call's
    // connections stay.
    let welcomes_before = pair.seen.iter().filter(|l| l["event"] == "welcome").count();
    let served = || served_fingerprint(&env.cluster, EXTERNAL_HOST, ENTRY_NODE_PORT);
    if env.check(served()) != first {
        env.fail("the nodes do not serve the installed certificate");
    }
    let rotated_at = Instant::now();
    let second = outside.install_cert(&env, "second", &format!("DNS:{EXTERNAL_HOST}"));
    let waited = eventually(
        "handshakes get the rotated certificate",
        PATIENCE,
        || async { (served().ok()? == second).then_some(()) },
    )
    .await;
    env.check(waited);
    measured(
        "o: Secret rotated -> new handshakes get the new certificate",
        rotated_at.elapsed(),
    );
    // Every node, not only the one the entry Service picked.
    for pod in env.node_pods().await {
        let port = advertised(&pod)
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches("/ws").parse::<u16>().ok())
            .unwrap_or_default();
        let waited = eventually(
            &format!("{} serves the new certificate", name(&pod)),
            PATIENCE,
            || async {
                (served_fingerprint(&env.cluster, EXTERNAL_HOST, port).ok()? == second)
                    .then_some(())
            },
        )
        .await;
        env.check(waited);
    }
    // Nothing more after the rotation than what the owner's kill caused (kube-proxy keeps
    // established connections; a restarted owner may migrate the room back: that is a move,
    // resumed, not a drop).
    let after: Vec<&Value> = pair.seen[..]
        .iter()
        .filter(|l| l["event"] == "welcome" && l["resumed"] != true)
        .collect();
    if !after.is_empty() {
        env.fail(format!(
            "a client lost its session around the rotation: {after:?}"
        ));
    }
    eprintln!(
        "o: {} Welcome(s) before the rotation, {} after",
        welcomes_before,
        pair.seen.iter().filter(|l| l["event"] == "welcome").count()
    );
    expect_call_intact(&env, pair).await;

    // Bad input: each refused with a reason and a Warning Event; the last good certificate
    // keeps serving and no pod restarts.
    let generations = pod_generations(&env).await;
    outside.install_cert(&env, "wrong-host", "DNS:elsewhere.switchboard.test");
    let message = expect_refusal(&env, "CertificateHostMismatch").await;
    if !message.contains(EXTERNAL_HOST) {
        env.fail(format!(
            "the mismatch message should name {EXTERNAL_HOST}: {message}"
        ));
    }
    env.kubectl(&["-n", NS, "delete", "secret", CERT_SECRET], None);
    expect_refusal(&env, "TLSSecretNotFound").await;
    env.merge_patch(
        "sigc",
        &json!({"spec": {"clientAccess": {"nodeUrlTemplate":
                format!("wss://{EXTERNAL_HOST}:{{nodeport}}/ws")}}})
        .to_string(),
    );
    let message = expect_refusal(&env, "UnknownPlaceholder").await;
    if !message.contains("{nodeport}") {
        env.fail(format!(
            "the message should name the unknown placeholder: {message}"
        ));
    }
    // Long enough for a crash loop or a rolled pod to show.
    tokio::time::sleep(Duration::from_secs(15)).await;
    if env.check(served()) != second {
        env.fail("the nodes stopped serving the last good certificate");
    }
    let now = pod_generations(&env).await;
    if now != generations {
        env.fail(format!(
            "pods were replaced or restarted by bad input:\nbefore {generations:?}\nafter  {now:?}"
        ));
    }
    outside.cohost_demo(&env, &entry, "studio-o3");

    // Fixed: the condition comes back.
    env.merge_patch(
        "sigc",
        &json!({"spec": {"clientAccess": node_port_access(CERT_SECRET)}}).to_string(),
    );
    outside.install_cert(&env, "third", &format!("DNS:{EXTERNAL_HOST}"));
    wait_client_access(&env, &entry).await;
}

/// The rollout's weights as a merge patch of `examples/basic`'s versions.
fn weights_patch(v1: u32, v2: u32) -> String {
    let docs = crate::support::examples();
    let mut versions: Vec<Value> = docs
        .iter()
        .find(|d| d["kind"] == "ProtocolRollout")
        .and_then(|d| d["spec"]["versions"].as_array().cloned())
        .unwrap_or_default();
    for version in &mut versions {
        version["weight"] = json!(if version["name"] == "v1" { v1 } else { v2 });
    }
    json!({"spec": {"versions": versions}}).to_string()
}

/// The page a browser opens: the node's demo page over https through the Ingress.
fn demo_ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "demo-page", "namespace": NS},
        "spec": {
            "ingressClassName": "traefik",
            "tls": [{"hosts": [EXTERNAL_HOST], "secretName": "demo-client-tls"}],
            "rules": [{"host": EXTERNAL_HOST, "http": {"paths": [{
                "path": "/demo", "pathType": "Prefix",
                "backend": {"service": {"name": "demo-nodes", "port": {"name": "admin"}}},
            }]}}],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p_outside_clients_through_an_ingress_with_tls_at_the_proxy() {
    let _t = ScenarioTimer::start("p_outside_clients_through_an_ingress_with_tls_at_the_proxy");
    let env = env_or_skip!(EnvOptions {
        ingress: true,
        ..EnvOptions::default()
    });
    let mut outside = Outside::new(&env);
    let cert = env.check(outside.pki.issue("proxy", &format!("DNS:{EXTERNAL_HOST}")));
    env.apply(&[env.check(tls_secret(CERT_SECRET, NS, &cert))]);
    let entry = format!("wss://{EXTERNAL_HOST}:{INGRESS_NODE_PORT}/ws");
    let mut docs = env.demo_manifests(true, |sigc| {
        quick(sigc);
        sigc["spec"]["clientAccess"] = ingress_access(CERT_SECRET);
        // The demo page for the browser (served by the nodes' admin port).
        sigc["spec"]["podTemplate"]["env"] = json!([{"name": "SWITCHBOARD_DEMO", "value": "true"}]);
    });
    if let Some(rollout) = docs.iter_mut().find(|d| d["kind"] == "ProtocolRollout") {
        rollout["spec"]["strategy"]["maxShardsMoving"] = json!(4);
        rollout["spec"]["strategy"]["pauseBetweenStepsSeconds"] = json!(0);
    }
    env.apply(&docs);
    env.wait_ready().await;
    wait_client_access(&env, &entry).await;
    outside.load_key(&env).await;
    let pods = env.node_pods().await;
    only_the_external_address_is_reachable(&env, &pods, INGRESS_NODE_PORT);
    for pod in &pods {
        let want = format!(
            "wss://{EXTERNAL_HOST}:{INGRESS_NODE_PORT}/nodes/{}/ws",
            name(pod)
        );
        if advertised(pod) != want {
            env.fail(format!(
                "{} advertises {}, not {want}",
                name(pod),
                advertised(pod)
            ));
        }
    }
    let fingerprint = env.check(file_fingerprint(&cert.cert));
    let waited = eventually("Traefik serves the certificate", PATIENCE, || async {
        (served_fingerprint(&env.cluster, EXTERNAL_HOST, INGRESS_NODE_PORT).ok()? == fingerprint)
            .then_some(())
    })
    .await;
    env.check(waited);

    outside.cohost_demo(&env, &entry, "studio-p1");
    let (mut pair, owner) = connected_pair(&env, &outside, &entry, "studio-p2").await;
    kill_owner_and_resume(&env, &mut pair, &owner, "p (kill -9 owner, Ingress)").await;
    expect_call_intact(&env, pair).await;
    env.wait_ready().await;

    // A weight change hands a v1 room to a v2 node: the clients follow Migrate to that
    // node's URL through the proxy and resume.
    let shards = env.shards().await;
    let room = (0..64)
        .map(|i| format!("studio-p-{i}"))
        .find(|room| {
            let index = switchboard_contract::shard::shard_of(room, SHARDS);
            shards
                .get(&index)
                .is_some_and(|s| s.status.as_ref().and_then(|s| s.version.as_deref()) == Some("v1"))
        })
        .unwrap_or_else(|| env.fail("no room on a v1 shard"));
    let (mut pair, _) = connected_pair(&env, &outside, &entry, &room).await;
    let t0 = unix_ms();
    let mark = pair.seen.len();
    env.merge_patch("prollout", &weights_patch(0, 100));
    for user in ["alice", "bob"] {
        let moved = pair
            .wait_for_since(
                mark,
                &format!("{user} moved to a v2 node"),
                Duration::from_secs(180),
                |l| {
                    l["event"] == "welcome"
                        && l["user"] == user
                        && l["resumed"] == true
                        && l["node"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("demo-v2-"))
                },
            )
            .await;
        let moved = env.check(moved);
        let node = moved["node"].as_str().unwrap_or_default().to_string();
        let want = format!("wss://{EXTERNAL_HOST}:{INGRESS_NODE_PORT}/nodes/{node}/ws");
        // While the proxy has no route for a new node yet (404), the client resumes through
        // the entry URL, which welcomes it directly when the entry Service picked the owner.
        if moved["url"] != json!(want) && moved["url"] != json!(entry) {
            env.fail(format!(
                "{user} moved to {node} but through {}, not {want} (nor {entry})",
                moved["url"]
            ));
        }
        let at = u128::from(moved["at_ms"].as_u64().unwrap_or_default());
        measured(
            &format!("p: weights 0/100 -> {user} resumed on a v2 node"),
            Duration::from_millis(u64::try_from(at.saturating_sub(t0)).unwrap_or_default()),
        );
    }
    expect_call_intact(&env, pair).await;

    // The browser, in the client namespace, through the entry URL and the node URLs.
    env.wait_ready().await;
    env.apply(&[demo_ingress()]);
    browser(&env, &cert).await;
}

/// signaling-node/web/e2e/outside.ts with Chromium in the client namespace: it prints the
/// owner it is on once the call is up and waits for a line on stdin; the owner is killed; it
/// checks the pages resumed on a new owner through its node URL.
async fn browser(env: &Env, cert: &switchboard_testkit::ServerCert) {
    let web = switchboard_e2e::cluster::repo_root().join("signaling-node/web");
    let script = web.join("build/e2e/outside.js");
    if !script.is_file() {
        env.fail(format!(
            "{} not found (e2e/scripts/web-client test builds it)",
            script.display()
        ));
    }
    let room = "studio-browser";
    let tokens = [env.token("alice", room).await, env.token("bob", room).await];
    let spki = env.check(spki_hash(&cert.cert));
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .current_dir(&web)
        .env("CLIENT_NETNS", &env.cluster.addresses.client_netns)
        .env("EXTERNAL_HOST", EXTERNAL_HOST)
        .env("EXTERNAL_IP", &env.cluster.addresses.external_ip)
        .env(
            "ORIGIN",
            format!("https://{EXTERNAL_HOST}:{INGRESS_NODE_PORT}"),
        )
        .env(
            "ENTRY_URL",
            format!("wss://{EXTERNAL_HOST}:{INGRESS_NODE_PORT}/ws"),
        )
        .env("ROOM", room)
        .env("ALICE_TOKEN", &tokens[0])
        .env("BOB_TOKEN", &tokens[1])
        .env("CERT_SPKI", spki)
        .env("RUN_DIR", &env.cluster.run_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| env.fail(format!("node {}: {e}", script.display())));
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stdin = child.stdin.take().expect("stdin");
    let mut owner = None;
    let deadline = Instant::now() + Duration::from_secs(240);
    while let Ok(Ok(Some(line))) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        lines.next_line(),
    )
    .await
    {
        println!("{line}");
        if let Some(node) = line.strip_prefix("OWNER ") {
            owner = Some(node.trim().to_string());
            env.check(env.cluster.fault(Fault::Kill, NS, node.trim()));
            let _ = stdin
                .write_all(format!("KILLED {}\n", unix_ms()).as_bytes())
                .await;
        }
    }
    let status = child.wait().await;
    if owner.is_none() || !status.as_ref().is_ok_and(|s| s.success()) {
        env.fail(format!(
            "the browser e2e failed ({status:?}); owner {owner:?}"
        ));
    }
}

/// The base64 SHA-256 of a certificate's public key (Chromium's
/// `--ignore-certificate-errors-spki-list`).
fn spki_hash(cert: &std::path::Path) -> Result<String, String> {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | openssl base64 -A",
        cert.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if hash.is_empty() {
        Err(format!("no SPKI hash for {}", cert.display()))
    } else {
        Ok(hash)
    }
}

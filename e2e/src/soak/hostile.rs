//! Hostile kubectl input: invalid and conflicting manifests that the API server must refuse
//! (CRD schema and CEL rules), each sent as a server-side dry run (or, for immutable fields, as
//! an update of a live object), counting refusals and anything wrongly accepted.

use serde_json::{Value, json};

use super::env::SoakEnv;

/// One hostile input's outcome.
#[derive(Debug, Clone)]
pub struct HostileCase {
    /// What was sent.
    pub name: &'static str,
    /// Refused (the expected outcome).
    pub refused: bool,
    /// The API server's message (first line) or "accepted".
    pub message: String,
}

fn first_line(s: &str) -> String {
    // The API server's message without kubectl's echo of the command.
    let text = s.split_once(": The ").map_or(s, |(_, rest)| rest);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect()
}

fn sigc(name: &str, tweak: impl FnOnce(&mut Value)) -> Value {
    let mut v = json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "SignalingCluster",
        "metadata": {"name": name},
        "spec": {
            "replicas": 3, "shards": 16, "image": "ghcr.io/switchboard/signaling-node:v1",
            "port": 7000, "etcd": {"endpoints": ["http://127.0.0.1:1"]},
            "authSecret": "demo-auth",
            "config": {"heartbeatSeconds": 30, "idleTimeoutSeconds": 300}
        }
    });
    tweak(&mut v);
    v
}

fn rollout(name: &str, cluster: &str, tweak: impl FnOnce(&mut Value)) -> Value {
    let mut v = json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "ProtocolRollout",
        "metadata": {"name": name},
        "spec": {
            "clusterRef": cluster,
            "versions": [
                {"name": "v1", "image": "ghcr.io/switchboard/signaling-node:v1", "protocols": ["v1"], "weight": 50},
                {"name": "v2", "image": "ghcr.io/switchboard/signaling-node:v2", "protocols": ["v1", "v2"], "weight": 50}
            ]
        }
    });
    tweak(&mut v);
    v
}

/// The invalid manifests.
fn invalid() -> Vec<(&'static str, Value)> {
    vec![
        (
            "sigc replicas -1",
            sigc("h1", |v| v["spec"]["replicas"] = json!(-1)),
        ),
        (
            "sigc shards 0",
            sigc("h2", |v| v["spec"]["shards"] = json!(0)),
        ),
        (
            "sigc replicas not a number",
            sigc("h3", |v| v["spec"]["replicas"] = json!("three")),
        ),
        (
            "sigc no etcd endpoints",
            sigc("h4", |v| v["spec"]["etcd"]["endpoints"] = json!([])),
        ),
        (
            "sigc empty authSecret",
            sigc("h5", |v| v["spec"]["authSecret"] = json!("")),
        ),
        (
            "sigc idle timeout not above heartbeat",
            sigc("h6", |v| {
                v["spec"]["config"]["idleTimeoutSeconds"] = json!(10)
            }),
        ),
        ("sigc port 0", sigc("h7", |v| v["spec"]["port"] = json!(0))),
        (
            "sigc port 70000",
            sigc("h8", |v| v["spec"]["port"] = json!(70000)),
        ),
        (
            "rollout weights sum to 150",
            rollout("h9", "x", |v| {
                v["spec"]["versions"][0]["weight"] = json!(100)
            }),
        ),
        (
            "rollout weight 101",
            rollout("h10", "x", |v| {
                v["spec"]["versions"][0]["weight"] = json!(101);
                v["spec"]["versions"][1]["weight"] = json!(-1);
            }),
        ),
        (
            "rollout duplicate version names",
            rollout("h11", "x", |v| {
                v["spec"]["versions"][1]["name"] = json!("v1")
            }),
        ),
        (
            "rollout version name not a DNS label",
            rollout("h12", "x", |v| {
                v["spec"]["versions"][0]["name"] = json!("V_1!")
            }),
        ),
        ("rollout empty clusterRef", rollout("h13", "", |_| {})),
        (
            "rollout maxErrorRate 2.0",
            rollout("h14", "x", |v| {
                v["spec"]["strategy"] = json!({"rollback": {"maxErrorRate": 2.0}})
            }),
        ),
        (
            "rollout no versions",
            rollout("h15", "x", |v| v["spec"]["versions"] = json!([])),
        ),
    ]
}

fn dry_run(env: &SoakEnv, doc: &Value) -> Result<String, String> {
    env.kubectl_in(&["create", "--dry-run=server", "-f", "-"], &doc.to_string())
        .map_err(|e| e.to_string())
}

/// Runs every hostile case against the API server.
pub fn run(env: &SoakEnv) -> Vec<HostileCase> {
    let mut out = Vec::new();
    for (name, doc) in invalid() {
        let result = dry_run(env, &doc);
        out.push(HostileCase {
            name,
            refused: result.is_err(),
            message: match result {
                Ok(_) => "accepted".into(),
                Err(e) => first_line(&e),
            },
        });
    }
    // Conflicting edit of a live object: clusterRef is immutable.
    let live = rollout("hostile-live", "nobody", |_| {});
    if env
        .kubectl_in(&["create", "-f", "-"], &live.to_string())
        .is_ok()
    {
        let patch = json!({"spec": {"clusterRef": "somebody"}}).to_string();
        let result = env.kubectl(&[
            "patch",
            "prollout",
            "hostile-live",
            "--type=merge",
            "-p",
            &patch,
        ]);
        out.push(HostileCase {
            name: "rollout clusterRef changed on a live object",
            refused: result.is_err(),
            message: match result {
                Ok(_) => "accepted".into(),
                Err(e) => first_line(&e.to_string()),
            },
        });
        let _ = env.kubectl(&["delete", "prollout", "hostile-live", "--wait=false"]);
    }
    out
}

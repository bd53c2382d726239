//! `outside-bench`: what clients outside the cluster pay, measured from the real node's outside
//! network namespace against the sample fleet in node-port mode with TLS on the nodes:
//!
//! - setup latency (connect → Joined, P50/P99 at N connections, rooms of 2) through the entry
//!   URL and its redirect, against the same load straight to each room's owner (the baseline),
//!   alternating the two modes run by run (`signaling-node bench`, `--straight-to-owner`);
//! - resume time after the owner's kill -9: a co-host pair (`outside-client`) in a call, the
//!   owner's container killed, until both clients got their resumed Welcome.
//!
//! Every run appends one JSON record (with the load average before it) to the records file;
//! [`report`] turns the records into the section of docs/benchmarks.md. Reported, never
//! asserted.

pub mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::outside::{
    Certificates, ENTRY_NODE_PORT, EXTERNAL_HOST, Pair, node_port_access, run_outside, tls_secret,
    unix_ms, welcomes_after,
};
use crate::real_node::{Fault, RealCluster, basic_examples};

/// Namespace of the sample fleet.
const NS: &str = "default";
/// The sample fleet's name.
const CLUSTER: &str = "demo";
/// How long a step may take before the bench gives up on it.
const PATIENCE: Duration = Duration::from_secs(180);

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections per setup run.
    pub connections: usize,
    /// Setup runs per mode.
    pub reps: usize,
    /// Owner kills.
    pub resumes: usize,
    /// The `signaling-node` binary (release) that runs the bench.
    pub node_bin: PathBuf,
    /// The `outside-client` binary.
    pub client_bin: PathBuf,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn kubectl_json(cluster: &RealCluster, args: &[&str]) -> Result<Value, String> {
    let out = cluster.kubectl(args, None).map_err(|e| e.to_string())?;
    serde_json::from_str(&out).map_err(|e| format!("kubectl {}: {e}", args.join(" ")))
}

/// Polls `check` every half second until it gives a value or `PATIENCE` passes.
async fn wait<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {PATIENCE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The fleet serves every shard with every node ready, and clients can come in.
fn fleet_ready(cluster: &RealCluster) -> Option<()> {
    let sigc = kubectl_json(cluster, &["-n", NS, "get", "sigc", CLUSTER, "-o", "json"]).ok()?;
    let status = &sigc["status"];
    let condition = |t: &str| {
        status["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == t && c["status"] == "True"))
    };
    let ready = status["readyReplicas"] == sigc["spec"]["replicas"]
        && status["shardsAssigned"] == sigc["spec"]["shards"]
        && condition("Ready")
        && condition("ClientAccessReady");
    ready.then_some(())
}

/// The node pod owning `room`, from its RoomShard.
fn owner_of(cluster: &RealCluster, room: &str) -> Option<String> {
    let index = switchboard_contract::shard::shard_of(room, 16);
    let shards = kubectl_json(cluster, &["-n", NS, "get", "rshard", "-o", "json"]).ok()?;
    shards["items"]
        .as_array()?
        .iter()
        .find(|s| s["spec"]["index"] == json!(index) && s["spec"]["cluster"] == CLUSTER)
        .and_then(|s| s["status"]["node"].as_str().map(str::to_string))
}

/// Starts a cluster, deploys the fleet with client access and measures; every record goes to
/// `sink` as it is made.
pub async fn run(options: &Options, mut sink: impl FnMut(&Value)) -> Result<(), String> {
    let cluster = RealCluster::start().await.map_err(|e| e.to_string())?;
    cluster.deploy(&[]).map_err(|e| e.to_string())?;
    let pki = Certificates::new()?;
    let cert = pki.issue("bench", &format!("DNS:{EXTERNAL_HOST}"))?;
    let mut docs = vec![tls_secret("signal-cert", NS, &cert)?];
    let mut key = String::new();
    for mut doc in basic_examples()? {
        match doc["kind"].as_str() {
            Some("Secret") => {
                key = doc["stringData"]["secret"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                docs.push(doc);
            }
            Some("SignalingCluster") => {
                doc["spec"]["clientAccess"] = node_port_access("signal-cert");
                doc["spec"]["terminationGracePeriodSeconds"] = json!(10);
                doc["spec"]["drainTimeoutSeconds"] = json!(5);
                docs.push(doc);
            }
            _ => {}
        }
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    cluster
        .kubectl(
            &[
                "-n",
                NS,
                "apply",
                "--server-side",
                "--field-manager=outside-bench",
                "-f",
                "-",
            ],
            Some(&list.to_string()),
        )
        .map_err(|e| e.to_string())?;
    wait("the fleet Ready with client access", || {
        fleet_ready(&cluster)
    })
    .await?;
    let key_file = pki.file("join-token.key", key.as_bytes())?;
    let entry = format!("wss://{EXTERNAL_HOST}:{ENTRY_NODE_PORT}/ws");
    sink(&json!({
        "kind": "meta", "date": utc_now(), "connections": options.connections,
        "reps": options.reps, "resumes": options.resumes,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg": loadavg(), "entry": entry,
    }));

    let node = options.node_bin.display().to_string();
    let (ca, key_path) = (pki.ca.display().to_string(), key_file.display().to_string());
    for rep in 1..=options.reps {
        // Alternate which mode goes first, so neither always runs on a warmer machine.
        let modes = if rep % 2 == 1 {
            [report::ENTRY, report::OWNER]
        } else {
            [report::OWNER, report::ENTRY]
        };
        for mode in modes {
            let load = loadavg();
            let connections = options.connections.to_string();
            let mut args = vec![
                "bench",
                "--url",
                &entry,
                "--ca-file",
                &ca,
                "--jwt-secret-file",
                &key_path,
                "--connections",
                &connections,
                "--room-size",
                "2",
                "--duration",
                "1",
                "--rate",
                "0",
                "--flow-rate",
                "0",
                "--connect-rate",
                "500",
                "--json",
            ];
            if mode == report::OWNER {
                args.push("--straight-to-owner");
            }
            eprintln!("outside-bench: setup {mode} rep {rep} ({connections} connections)");
            let out = run_outside(&cluster, &node, &args)?;
            let line = out
                .lines()
                .rev()
                .find(|l| l.starts_with('{'))
                .ok_or_else(|| format!("no JSON line from the bench:\n{out}"))?;
            let bench: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
            sink(
                &json!({"kind": "setup", "mode": mode, "rep": rep, "loadavg": load, "bench": bench}),
            );
            wait("the fleet Ready", || fleet_ready(&cluster)).await?;
        }
    }

    for rep in 1..=options.resumes {
        let room = format!("resume-{rep}");
        let record = resume_once(&cluster, options, &entry, &room, &key_file, &pki.ca).await;
        let record = match record {
            Ok(mut r) => {
                r["rep"] = json!(rep);
                r
            }
            Err(e) => json!({"kind": "resume", "rep": rep, "ok": false, "error": e}),
        };
        sink(&record);
        // The killed node restarts in place; wait until it serves again before the next kill.
        wait("the fleet Ready after the kill", || fleet_ready(&cluster)).await?;
        tokio::time::sleep(Duration::from_secs(12)).await;
    }
    Ok(())
}

async fn resume_once(
    cluster: &RealCluster,
    options: &Options,
    entry: &str,
    room: &str,
    key_file: &Path,
    ca: &Path,
) -> Result<Value, String> {
    let load = loadavg();
    let mut pair = Pair::spawn(cluster, &options.client_bin, entry, room, key_file, ca)?;
    pair.wait_for("the call", PATIENCE, |l| l["event"] == "call")
        .await?;
    let owner = owner_of(cluster, room).ok_or("no owner")?;
    let t0 = unix_ms();
    cluster
        .fault(Fault::Kill, NS, &owner)
        .map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for user in ["alice", "bob"] {
        let resumed = pair
            .wait_for(&format!("{user} resumed"), PATIENCE, |l| {
                l["event"] == "welcome" && l["user"] == user && l["resumed"] == true
            })
            .await?;
        let at = u128::from(resumed["at_ms"].as_u64().unwrap_or_default());
        times.push(at.saturating_sub(t0));
    }
    let new_owner = welcomes_after(&pair.seen, "alice", t0)
        .last()
        .map(|l| l["node"].clone())
        .unwrap_or_default();
    let ended = pair.hangup(PATIENCE).await?;
    let ok = ended["problems"].as_array().is_some_and(Vec::is_empty);
    Ok(json!({
        "kind": "resume", "ok": ok, "loadavg": load, "owner": owner, "new_owner": new_owner,
        "alice_ms": times[0], "bob_ms": times[1], "last_ms": times.iter().max(),
        "problems": ended["problems"],
    }))
}

/// Now as `YYYY-MM-DDTHH:MMZ` (what `e2e/bench` records too).
fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%MZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

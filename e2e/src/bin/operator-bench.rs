//! `operator-bench`: how fast the shard manager places and fails over shards at scale, with
//! batched transactions and, as the baseline measured in the same run, one transaction per
//! shard. Reported, not asserted; prints one JSON document.
//!
//! It starts its own etcd through the test kit (`--etcd-bin`, else where
//! `switchboard_testkit::tools` looks), registers `--nodes` simulated nodes (keys under their
//! own leases, no processes) and runs the manager in this process without Kubernetes. Per
//! mode:
//! - `steady_state_ms`: manager start → every shard has an assignment (seen by a separate
//!   etcd client);
//! - failover of one node: its lease is revoked (what etcd does at lease expiry) →
//!   `reassigned_ms` until every one of its shards names a live node, plus the manager's own
//!   `detected_ms` (delete event observed → new assignment committed, worst shard);
//! - `rss_kib` of this process once steady (the manager dominates it).
//!
//! With `--apiserver` (a `kube-apiserver` found by the test kit, at most 4096 shards as the
//! CRD allows) the batched run also writes RoomShard statuses and reports how long all of
//! them took and the apiserver write rate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use etcd_client::{Client, GetOptions, PutOptions};
use futures::StreamExt;
use serde_json::json;
use switchboard_contract::keys::{Assignment, Key, Keyspace, Load, NodeInfo, NodeState, Value};
use switchboard_operator::controller::shards::core::Notice;
use switchboard_operator::controller::shards::manager::{self, ManagerOptions};
use switchboard_operator::controller::shards::{ShardManagers, ShardMetrics};
use switchboard_operator::crd::{EtcdSpec, NodeConfig, SignalingCluster, SignalingClusterSpec};
use switchboard_testkit::{ApiServer, Etcd, EtcdOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Shard manager scale benchmark (prints JSON)")]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 500)]
    nodes: u32,
    /// Shards.
    #[arg(long, default_value_t = 10_000)]
    shards: u32,
    /// etcd binary.
    #[arg(long, env = "SWITCHBOARD_ETCD_BIN")]
    etcd_bin: Option<PathBuf>,
    /// Run etcd with fsync on every commit (production-like); off: `--unsafe-no-fsync`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
    /// Skip the one-transaction-per-shard baseline.
    #[arg(long)]
    skip_naive: bool,
    /// Also run a kube-apiserver and write RoomShard statuses (shards ≤ 4096).
    #[arg(long)]
    apiserver: bool,
}

const NAMESPACE: &str = "bench";
const CLUSTER: &str = "demo";

fn cluster_object(args: &Args, etcd: &str) -> SignalingCluster {
    let mut cluster = SignalingCluster::new(
        CLUSTER,
        SignalingClusterSpec {
            replicas: i32::try_from(args.nodes).unwrap_or(i32::MAX),
            image: "switchboard/signaling-node:bench".into(),
            port: 7000,
            shards: i32::try_from(args.shards).unwrap_or(i32::MAX),
            etcd: EtcdSpec {
                endpoints: vec![etcd.into()],
                tls_secret: None,
            },
            auth_secret: "auth".into(),
            config: NodeConfig::default(),
            client_access: None,
            pod_template: None,
            termination_grace_period_seconds: 60,
            drain_timeout_seconds: 30,
            disruption_budget: None,
        },
    );
    cluster.metadata.namespace = Some(NAMESPACE.into());
    cluster
}

/// Registers the simulated nodes; returns name → lease.
async fn register_nodes(
    client: &Client,
    keys: &Keyspace,
    count: u32,
) -> Result<BTreeMap<String, i64>> {
    let results: Vec<Result<(String, i64)>> = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            async move {
                let name = format!("{CLUSTER}-default-{i}");
                let lease = client.lease_client().grant(3600, None).await?.id();
                let info = NodeInfo {
                    url: format!("ws://127.0.0.1:7000/{name}"),
                    version: "default".into(),
                    protocols: vec!["switchboard.v1".into()],
                    state: NodeState::Ready,
                    load: Load::default(),
                    error_rate: 0.0,
                    started_at_ms: 0,
                    liveness: None,
                };
                client
                    .kv_client()
                    .put(
                        keys.node(&name)?,
                        info.encode(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                    .await?;
                Ok((name, lease))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn count_assignments(client: &Client, keys: &Keyspace) -> Result<i64> {
    Ok(client
        .kv_client()
        .get(
            keys.assignments_prefix(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?
        .count())
}

async fn read_assignments(client: &Client, keys: &Keyspace) -> Result<BTreeMap<u32, Assignment>> {
    let response = client
        .kv_client()
        .get(
            keys.assignments_prefix(),
            Some(GetOptions::new().with_prefix()),
        )
        .await?;
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| match keys.parse(kv.key()).ok()? {
            Key::Assignment(shard) => Some((shard, Assignment::decode(kv.value()).ok()?)),
            _ => None,
        })
        .collect())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn wait_for(
    deadline: Duration,
    mut check: impl AsyncFnMut() -> Result<bool>,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > deadline {
            bail!("timed out after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One run: placement from nothing, then the loss of one node.
async fn run_mode(
    args: &Args,
    url: &str,
    leases: &mut BTreeMap<String, i64>,
    batch: usize,
    concurrency: usize,
    kube: Option<kube::Client>,
) -> Result<serde_json::Value> {
    let client = Client::connect([url], None).await?;
    let keys = Keyspace::new(NAMESPACE, CLUSTER)?;
    client
        .kv_client()
        .delete(
            keys.assignments_prefix(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    let cluster = cluster_object(args, url);
    let (tx, mut notices) = mpsc::channel(65_536);
    let options = ManagerOptions {
        txn_batch: batch,
        txn_concurrency: concurrency,
        observer: Some(tx),
        rooms_interval: Duration::from_secs(3600),
        ..ManagerOptions::default()
    };
    let rss_before = rss_kib();
    let metrics = ShardMetrics::register(&prometheus::Registry::new());
    let mut managers = None;
    let started = Instant::now();
    let handle = match &kube {
        None => Some(manager::spawn(
            &cluster,
            client.clone(),
            None,
            metrics,
            options,
        )?),
        Some(kube) => {
            let api: kube::Api<SignalingCluster> = kube::Api::namespaced(kube.clone(), NAMESPACE);
            let stored = api.get(CLUSTER).await?;
            let m =
                ShardManagers::with_options(kube.clone(), &prometheus::Registry::new(), options);
            m.ensure(&stored, client.clone());
            managers = Some(m);
            None
        }
    };
    let total = i64::from(args.shards);
    let steady = wait_for(Duration::from_secs(600), async || {
        Ok(count_assignments(&client, &keys).await? == total)
    })
    .await?;
    let placed = read_assignments(&client, &keys).await?;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for a in placed.values() {
        *per_node.entry(a.node.as_str()).or_insert(0) += 1;
    }
    let (min, max) = (
        per_node.values().min().copied().unwrap_or(0),
        per_node.values().max().copied().unwrap_or(0),
    );
    let rss_steady = rss_kib();

    let mut statuses = serde_json::Value::Null;
    if let Some(kube) = &kube {
        let api: kube::Api<switchboard_operator::crd::RoomShard> =
            kube::Api::namespaced(kube.clone(), NAMESPACE);
        wait_for(Duration::from_secs(600), async || {
            // Listing thousands of objects is itself apiserver load: look every 250 ms.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let list = api.list(&kube::api::ListParams::default()).await?;
            Ok(list
                .items
                .iter()
                .filter(|s| s.status.as_ref().is_some_and(|st| st.node.is_some()))
                .count()
                == args.shards as usize)
        })
        .await?;
        let since_start = started.elapsed();
        statuses = json!({
            "all_statuses_written_ms": since_start.as_millis(),
            "status_writes_per_s": (f64::from(args.shards) / since_start.as_secs_f64()).round(),
        });
    }

    // Lose the node with the most shards: revoke its lease (what lease expiry does).
    let victim = per_node
        .iter()
        .max_by_key(|(name, count)| (**count, std::cmp::Reverse(**name)))
        .map(|(name, _)| (*name).to_string())
        .context("no node owns shards")?;
    let lost: Vec<u32> = placed
        .iter()
        .filter(|(_, a)| a.node == victim)
        .map(|(s, _)| *s)
        .collect();
    while notices.try_recv().is_ok() {}
    let lease = leases.remove(&victim).context("victim lease")?;
    // Watch the assignments (no polling competing with the manager for CPU).
    let revision = client
        .kv_client()
        .get(
            keys.assignments_prefix(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0);
    let mut stream = client
        .watch_client()
        .watch(
            keys.assignments_prefix(),
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    let mut pending: std::collections::BTreeSet<u32> = lost.iter().copied().collect();
    let t0 = Instant::now();
    client.lease_client().revoke(lease).await?;
    while !pending.is_empty() {
        let response = tokio::time::timeout(Duration::from_secs(120), stream.next())
            .await
            .context("failover timed out")?
            .context("watch closed")??;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            if let (Ok(Key::Assignment(shard)), Ok(a)) =
                (keys.parse(kv.key()), Assignment::decode(kv.value()))
                && a.node != victim
            {
                pending.remove(&shard);
            }
        }
    }
    let reassigned = t0.elapsed();
    // The manager reports each failover after its commit returns (the watch may be faster).
    let mut detected_max = Duration::ZERO;
    let mut failovers = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while failovers < lost.len() {
        match tokio::time::timeout_at(deadline, notices.recv()).await {
            Ok(Some(Notice::Failover { detected, .. })) => {
                failovers += 1;
                detected_max = detected_max.max(detected);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    drop(handle);
    drop(managers);
    Ok(json!({
        "txn_batch": batch,
        "txn_concurrency": concurrency,
        "steady_state_ms": steady.as_millis(),
        "shards_per_node_min": min,
        "shards_per_node_max": max,
        "rss_kib_before": rss_before,
        "rss_kib_steady": rss_steady,
        "statuses": statuses,
        "failover": {
            "node": victim,
            "shards": lost.len(),
            "failovers_seen": failovers,
            "revoke_to_all_reassigned_ms": reassigned.as_secs_f64() * 1000.0,
            "detected_ms_worst_shard": detected_max.as_secs_f64() * 1000.0,
        },
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.apiserver && args.shards > 4096 {
        bail!("--apiserver needs --shards ≤ 4096 (the RoomShard CRD's limit)");
    }
    let etcd = Etcd::try_start(EtcdOptions {
        fsync: args.fsync,
        bin: args.etcd_bin.clone(),
        ..EtcdOptions::default()
    })
    .await?;
    let url = etcd.endpoint();
    let client = etcd.try_client().await?;
    let keys = Keyspace::new(NAMESPACE, CLUSTER)?;
    let registered = Instant::now();
    let mut leases = register_nodes(&client, &keys, args.nodes).await?;
    let register_ms = registered.elapsed().as_millis();

    let mut api_proc = None;
    let mut kube = None;
    if args.apiserver {
        let apiserver = ApiServer::try_start(&url, None).await?;
        let client = apiserver.try_client().await?;
        setup_kube(&client, &args, &url).await?;
        api_proc = Some(apiserver);
        kube = Some(client);
    }

    let batched = run_mode(&args, &url, &mut leases, 128, 4, kube.clone()).await?;
    let naive = if args.skip_naive {
        serde_json::Value::Null
    } else {
        run_mode(&args, &url, &mut leases, 1, 1, None).await?
    };
    let ratio = |key: &str| {
        let b = batched[key].as_f64()?;
        let n = naive[key].as_f64()?;
        (b > 0.0).then(|| (n / b * 10.0).round() / 10.0)
    };
    let failover_ratio = {
        let b = batched["failover"]["revoke_to_all_reassigned_ms"].as_f64();
        let n = naive["failover"]["revoke_to_all_reassigned_ms"].as_f64();
        match (b, n) {
            (Some(b), Some(n)) if b > 0.0 => Some((n / b * 10.0).round() / 10.0),
            _ => None,
        }
    };
    let report = json!({
        "bench": "operator-shard-manager",
        "nodes": args.nodes,
        "shards": args.shards,
        "etcd_fsync": args.fsync,
        "debug_assertions": cfg!(debug_assertions),
        "register_nodes_ms": register_ms,
        "batched": batched,
        "naive_one_txn_per_shard": naive,
        "steady_state_speedup_vs_naive": ratio("steady_state_ms"),
        "failover_speedup_vs_naive": failover_ratio,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    drop(api_proc);
    drop(etcd);
    Ok(())
}

async fn setup_kube(client: &kube::Client, args: &Args, url: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in switchboard_operator::crd::crds() {
        crds.create(&PostParams::default(), &crd).await?;
    }
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NAMESPACE.into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let clusters: Api<SignalingCluster> = Api::namespaced(client.clone(), NAMESPACE);
    let created = loop {
        match clusters
            .create(&PostParams::default(), &cluster_object(args, url))
            .await
        {
            Ok(created) => break created,
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "CRD not served yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    let shards: Api<switchboard_operator::crd::RoomShard> =
        Api::namespaced(client.clone(), NAMESPACE);
    let objects = switchboard_operator::controller::cluster::shards::room_shards(&created)?;
    let results: Vec<kube::Result<_>> = futures::stream::iter(objects)
        .map(|shard| {
            let shards = shards.clone();
            async move { shards.create(&PostParams::default(), &shard).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(())
}

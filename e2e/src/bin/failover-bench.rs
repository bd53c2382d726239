//! `failover-bench`, three modes (reported, not asserted):
//!
//! - `--real-node`: the real operator binary against the real node with real faults (kill -9,
//!   SIGSTOP, network cut); one JSON line per fault appended to `--records`
//!   (`switchboard_e2e::failover_bench::real`).
//! - `--render`: docs/benchmarks.md's `failover` section from the committed records
//!   (`switchboard_e2e::failover_bench::render`).
//! - default, **in-process**: the operator's shard-manager core driven in this process against
//!   real etcd and `signaling-node` processes, with the process exit seen by this parent (no
//!   Kubernetes, no detector); plus the restore of a 1,000-room shard. Prints a table; `--json
//!   FILE` writes the report (`switchboard_e2e::failover_bench`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use switchboard_e2e::cluster::{repo_root, tools_bin};
use switchboard_e2e::failover_bench::real::{Kind, RealOptions};
use switchboard_e2e::failover_bench::{self, Options};

#[derive(Debug, Parser)]
#[command(about = "Failover and restore benchmark (reported, not asserted)")]
struct Args {
    /// The real operator binary against the real node (see the module doc).
    #[arg(long, conflicts_with = "render")]
    real_node: bool,
    /// SIGSTOP faults (`--real-node`).
    #[arg(long, default_value_t = 30)]
    stops: usize,
    /// Network cuts (`--real-node`).
    #[arg(long, default_value_t = 30)]
    cuts: usize,
    /// The fleet's heartbeatSeconds (`--real-node`).
    #[arg(long, default_value_t = 1)]
    heartbeat_seconds: u32,
    /// Where `--real-node` appends its records (default:
    /// e2e/records/failover/run-<unix seconds>.jsonl).
    #[arg(long)]
    records: Option<PathBuf>,
    /// Write docs/benchmarks.md's failover section from the records in `--records-dir`.
    #[arg(long)]
    render: bool,
    /// No false failovers: run the fleet on a 3-member etcd under load and a CPU hog for this
    /// many minutes, with etcd leader changes; writes `--records-dir`/steady-<secs>.json.
    #[arg(long, value_name = "MINUTES", conflicts_with_all = ["render", "real_node"])]
    steady: Option<f64>,
    /// The committed records `--render` reads.
    #[arg(long)]
    records_dir: Option<PathBuf>,
    /// Kills per failure signal (in-process: process exit, lease expiry; `--real-node`: kill -9).
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Live nodes in the failover fleet.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards of the failover fleet.
    #[arg(long, default_value_t = 12)]
    shards: u32,
    /// Rooms in the restored shard.
    #[arg(long, default_value_t = 1000)]
    restore_rooms: usize,
    /// Restore repetitions.
    #[arg(long, default_value_t = 7)]
    restore_reps: usize,
    /// The signaling-node binary (default: beside this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, env = "SWITCHBOARD_ETCD_BIN")]
    etcd_bin: Option<PathBuf>,
    /// etcd fsyncs every commit (production-like); false adds --unsafe-no-fsync.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let root = repo_root();
    if args.render {
        let dir = args
            .records_dir
            .unwrap_or_else(|| root.join("e2e/records/failover"));
        failover_bench::render::render(
            &dir,
            &root.join("docs/benchmarks.md"),
            &root.join("docs/img"),
        )?;
        println!(
            "docs/benchmarks.md: failover section rendered from {}",
            dir.display()
        );
        return Ok(());
    }
    if let Some(minutes) = args.steady {
        let node_bin = match &args.node_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("no directory for this binary")?
                .join("signaling-node"),
        };
        let etcd_bin = args
            .etcd_bin
            .clone()
            .unwrap_or_else(|| tools_bin().join("etcd"));
        let dir = args
            .records_dir
            .clone()
            .unwrap_or_else(|| root.join("e2e/records/failover"));
        std::fs::create_dir_all(&dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let record = runtime.block_on(failover_bench::steady::run(
            minutes,
            args.heartbeat_seconds.max(1),
            node_bin,
            etcd_bin,
        ))?;
        let path = dir.join(format!("steady-{}.json", record.run / 1000));
        std::fs::write(&path, serde_json::to_string_pretty(&record)?)?;
        println!(
            "{} shard move(s) in {minutes} min, {} etcd leader change(s); record {}",
            record.moves.len(),
            record.leader_changes.len(),
            path.display()
        );
        return Ok(());
    }
    if args.real_node {
        let records = args.records.unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            root.join(format!("e2e/records/failover/run-{secs}.jsonl"))
        });
        let options = RealOptions {
            plan: vec![
                (Kind::Kill, args.kills),
                (Kind::Stop, args.stops),
                (Kind::Cut, args.cuts),
            ],
            heartbeat_secs: args.heartbeat_seconds.max(1),
            records: records.clone(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let done = runtime.block_on(failover_bench::real::run(&options))?;
        println!(
            "{} faults measured; records in {}",
            done.len(),
            records.display()
        );
        return Ok(());
    }
    let node_bin = match args.node_bin {
        Some(bin) => bin,
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .join("signaling-node"),
    };
    let etcd_bin = args.etcd_bin.unwrap_or_else(|| tools_bin().join("etcd"));
    for bin in [&node_bin, &etcd_bin] {
        anyhow::ensure!(bin.is_file(), "{} not found", bin.display());
    }
    let dir = std::env::temp_dir().join(format!("failover-bench-{}", std::process::id()));
    let options = Options {
        kills: args.kills,
        nodes: args.nodes.max(2),
        shards: args.shards.max(2),
        restore_rooms: args.restore_rooms,
        restore_reps: args.restore_reps.max(1),
        node_bin,
        etcd_bin,
        fsync: args.fsync,
        dir: dir.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(failover_bench::run(&options));
    drop(runtime);
    match result {
        Ok(report) => {
            let _ = std::fs::remove_dir_all(&dir);
            if let Some(path) = args.json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("\nreport written to {}", path.display());
            }
            Ok(())
        }
        Err(e) => Err(e.context(format!("logs kept in {}", dir.display()))),
    }
}

//! `failover-bench`: node crash → rooms served again (process exit and lease expiry), and the
//! restore of a 1,000-room shard, against real etcd and real `signaling-node` processes with
//! the operator's shard-manager core as the driver. Prints a table; `--json FILE` writes the
//! report. Reported, not asserted. See `switchboard_e2e::failover_bench`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use switchboard_e2e::cluster::tools_bin;
use switchboard_e2e::failover_bench::{self, Options};

#[derive(Debug, Parser)]
#[command(about = "Failover and restore benchmark (reported, not asserted)")]
struct Args {
    /// Kills per failure signal (process exit, lease expiry).
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

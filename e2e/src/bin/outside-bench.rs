//! `outside-bench`: setup latency through the entry URL against straight to the owner, and
//! resume time after the owner's kill, from the real node's outside network namespace (see
//! `switchboard_e2e::outside_bench`). `run` appends JSON records to a file; `report` writes
//! the generated section of docs/benchmarks.md from them. Reported, not asserted.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use switchboard_e2e::cluster::repo_root;
use switchboard_e2e::outside_bench::{self, Options, report};

#[derive(Debug, Parser)]
#[command(about = "Outside-client benchmark (reported, not asserted)")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a real-node cluster, measure, append the records.
    Run {
        /// Connections per setup run.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Setup runs per mode (entry, owner).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Owner kills.
        #[arg(long, default_value_t = 5)]
        resumes: usize,
        /// Where the records go (appended).
        #[arg(long, default_value = "docs/data/outside-bench.jsonl")]
        records: PathBuf,
        /// The release `signaling-node` (default: target/release, built by e2e/scripts/build-images).
        #[arg(long)]
        node_bin: Option<PathBuf>,
    },
    /// Write the generated section of a Markdown file from the records.
    Report {
        /// The records.
        #[arg(long, default_value = "docs/data/outside-bench.jsonl")]
        records: PathBuf,
        /// The document whose section is replaced.
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().command {
        Command::Run {
            connections,
            reps,
            resumes,
            records,
            node_bin,
        } => {
            let here = std::env::current_exe()?;
            let dir = here.parent().context("no directory for this binary")?;
            let node_bin = node_bin.unwrap_or_else(|| {
                dir.parent()
                    .map_or_else(|| dir.to_path_buf(), PathBuf::from)
                    .join("release/signaling-node")
            });
            if !node_bin.is_file() {
                bail!(
                    "{} not found (e2e/scripts/build-images builds it)",
                    node_bin.display()
                );
            }
            let options = Options {
                connections,
                reps,
                resumes,
                node_bin,
                client_bin: dir.join("outside-client"),
            };
            let path = repo_root().join(&records);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let mut failed = None;
            outside_bench::run(&options, |record| {
                if let Err(e) = writeln!(file, "{record}") {
                    failed = Some(e);
                }
                println!("{record}");
            })
            .await
            .map_err(anyhow::Error::msg)?;
            if let Some(e) = failed {
                bail!("writing {}: {e}", path.display());
            }
        }
        Command::Report { records, doc } => {
            let (records, doc) = (repo_root().join(records), repo_root().join(doc));
            let text = std::fs::read_to_string(&records)
                .with_context(|| format!("reading {}", records.display()))?;
            let parsed = report::parse(&text).map_err(anyhow::Error::msg)?;
            let current = std::fs::read_to_string(&doc)
                .with_context(|| format!("reading {}", doc.display()))?;
            std::fs::write(
                &doc,
                report::replace_section(&current, &report::section(&parsed)),
            )
            .with_context(|| format!("writing {}", doc.display()))?;
            eprintln!(
                "outside-bench: wrote the generated section of {}",
                doc.display()
            );
        }
    }
    Ok(())
}

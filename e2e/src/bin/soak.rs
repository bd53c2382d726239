//! `soak`: the randomized fault soak. Starts a control plane and one real node (containers,
//! CNI) with the fleet etcd and the operator on it, then runs `--runs` runs, each on a fresh
//! SignalingCluster under client load with seeded faults, and checks every run's history.
//! Also runs the bounded decoder fuzz and the hostile kubectl input, and prints a summary.
//!
//! ```text
//! soak --runs 2 --seed 7 --duration 20            # run seeds 7 and 8
//! soak --runs 1 --seed 8 --duration 20            # replay the second run of the above
//! soak --runs 0 --fuzz-iterations 200000          # only the decoder fuzz
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use switchboard_e2e::cluster::repo_root;
use switchboard_e2e::soak::env::SoakEnv;
use switchboard_e2e::soak::faults::FaultKind;
use switchboard_e2e::soak::records::{self, RunRecord};
use switchboard_e2e::soak::run::{self, RunConfig};
use switchboard_e2e::soak::{fuzz, hostile};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(name = "soak", about = "Randomized fault soak with a history checker")]
struct Cli {
    /// Runs (each from a clean fleet); run i uses seed `seed + i`.
    #[arg(long, default_value_t = 2)]
    runs: u64,
    /// Base seed [default: the current Unix time, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds of load and faults per run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Rooms per run (two clients each).
    #[arg(long, default_value_t = 12)]
    rooms: usize,
    /// Where failing runs keep their evidence [default: target/soak].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Decoder fuzz inputs (0: skip).
    #[arg(long, default_value_t = 20_000)]
    fuzz_iterations: u64,
    /// Skip the hostile kubectl input.
    #[arg(long)]
    no_hostile: bool,
    /// Also write the Markdown summary to this file (rewritten after every run, so an
    /// interrupted long soak still leaves the summary of the runs that finished).
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Keep the history and logs of passing runs too (to study recovery times)
    #[arg(long)]
    keep_all: bool,
    /// Append each run's record (one JSON line) to this file, for `--render` and the report.
    #[arg(long)]
    records: Option<PathBuf>,
    /// Print the summary of the records in this file and exit (no soak runs).
    #[arg(long)]
    render: Option<PathBuf>,
    /// Draw only these fault kinds (comma-separated names as in the summary, e.g.
    /// `lose-sole-node`) [default: every kind].
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    faults: Vec<FaultKind>,
}

/// A fault kind by its summary name.
fn parse_kind(name: &str) -> Result<FaultKind, String> {
    FaultKind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault kind {name:?}; known: {}", names.join(", "))
        })
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(path) = &cli.render {
        return render(path);
    }
    let seed = cli.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| repo_root().join("target/soak"));
    init_client_log(&out)?;
    println!(
        "SOAK seed {seed}, {} runs of {} s, {} rooms ({} clients)",
        cli.runs,
        cli.duration,
        cli.rooms,
        cli.rooms * 2
    );
    let mut report = String::new();
    let mut failed = false;

    if cli.fuzz_iterations > 0 {
        let t0 = Instant::now();
        let f = fuzz::run(seed, cli.fuzz_iterations, Duration::from_secs(120));
        let line = format!(
            "decoder fuzz (seed {seed}): {} frames tried ({} accepted and round-tripped, {} \
             rejected with a typed error), {} snapshot-decoder inputs; crashes {}, hangs {} \
             ({} ms)",
            f.tried,
            f.accepted,
            f.rejected,
            f.snapshots_tried,
            f.crashes.len(),
            f.hangs.len(),
            t0.elapsed().as_millis()
        );
        println!("FUZZ {line}");
        for c in f.crashes.iter().chain(&f.hangs) {
            println!("  FUZZ FAILURE {c}");
        }
        failed |= !f.crashes.is_empty() || !f.hangs.is_empty();
        report.push_str(&format!("- {line}\n"));
    }
    if cli.runs == 0 && cli.no_hostile {
        return finish(&cli, &report, failed);
    }

    let t0 = Instant::now();
    let env = SoakEnv::start()
        .await
        .context("starting the soak environment")?;
    println!(
        "SOAK environment up in {} ms (control plane, the real node, fleet etcd, operator x2; \
         run dir {})",
        t0.elapsed().as_millis(),
        env.cluster.run_dir.display()
    );

    if !cli.no_hostile {
        let cases = hostile::run(&env);
        let accepted: Vec<_> = cases.iter().filter(|c| !c.refused).collect();
        for c in &cases {
            println!(
                "HOSTILE {} {}: {}",
                if c.refused { "refused" } else { "ACCEPTED" },
                c.name,
                c.message
            );
        }
        let line = format!(
            "hostile kubectl input: {} invalid or conflicting manifests tried, {} refused, {} \
             wrongly accepted",
            cases.len(),
            cases.len() - accepted.len(),
            accepted.len()
        );
        println!("HOSTILE {line}");
        failed |= !accepted.is_empty();
        report.push_str(&format!("- {line}\n"));
    }

    // SIGINT/SIGTERM: finish the current run, then stop everything cleanly (the summary covers
    // the runs that finished).
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        tokio::spawn(async move {
            let mut term = match signal(SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("SOAK interrupted: stopping after the current run");
            flag.store(true, Ordering::Relaxed);
        });
    }
    let mut kept: Vec<RunRecord> = Vec::new();
    for i in 0..cli.runs {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        let cfg = RunConfig {
            seed: seed.wrapping_add(i),
            duration: Duration::from_secs(cli.duration),
            rooms: cli.rooms,
            out: out.clone(),
            keep_all: cli.keep_all,
            kinds: if cli.faults.is_empty() {
                FaultKind::ALL.to_vec()
            } else {
                cli.faults.clone()
            },
        };
        let name = format!("soak-{i}");
        let t = Instant::now();
        match run::run_one(&env, &name, &cfg).await {
            Ok(o) => {
                println!(
                    "RUN {i} seed {} {}: deploy {} ms, {} faults, {} calls ok, {} failed steps, \
                     {} records, {} etcd writes, {} violations ({} ms)",
                    o.seed,
                    if o.violations.is_empty() {
                        "passed"
                    } else {
                        "FAILED"
                    },
                    o.deploy.as_millis(),
                    o.faults.len(),
                    o.calls_ok,
                    o.calls_failed,
                    o.records,
                    o.etcd_writes,
                    o.violations.len(),
                    t.elapsed().as_millis()
                );
                for f in &o.faults {
                    println!(
                        "  {} {} -> recovered in {}",
                        f.kind.name(),
                        f.target,
                        f.recovery
                            .map_or("NEVER".into(), |d| format!("{} ms", d.as_millis()))
                    );
                }
                for v in o.violations.iter().take(20) {
                    print!("  {v}");
                }
                if let Some(dir) = o.kept.as_ref().filter(|_| !o.violations.is_empty()) {
                    println!(
                        "  FAILED run kept in {}; replay: e2e/soak --runs 1 --seed {} --duration {}",
                        dir.display(),
                        o.seed,
                        cli.duration
                    );
                    failed = true;
                }
                keep_record(&cli, &mut kept, RunRecord::of(&o))?;
            }
            Err(e) => {
                keep_record(
                    &cli,
                    &mut kept,
                    RunRecord::could_not_run(cfg.seed, e.to_string()),
                )?;
                failed = true;
                let dir = out.join(format!("{name}-seed-{}", cfg.seed));
                env.keep_logs(&dir).await;
                println!(
                    "RUN {i} seed {} could not run: {e}; logs kept in {}; replay: e2e/soak --runs 1 --seed {} --duration {}",
                    cfg.seed,
                    dir.display(),
                    cfg.seed,
                    cli.duration
                );
                let _ = env.teardown(&name).await;
            }
        }
        if let Some(path) = &cli.summary {
            let so_far = format!(
                "{report}\nsoak, seed {seed}, {} s per run, {} of {} runs done:\n\n{}",
                cli.duration,
                i + 1,
                cli.runs,
                records::summary(&kept)
            );
            let _ = std::fs::write(path, so_far);
        }
    }
    let s = records::summary(&kept);
    println!("\nSOAK summary (seed {seed}):\n{s}");
    report.push_str(&format!(
        "\nsoak, seed {seed}, {} s per run:\n\n{s}",
        cli.duration
    ));
    drop(env);
    finish(&cli, &report, failed)
}

/// Keeps `record` for the summary and appends it to `--records`.
fn keep_record(cli: &Cli, kept: &mut Vec<RunRecord>, record: RunRecord) -> Result<()> {
    if let Some(path) = &cli.records {
        use std::io::Write as _;
        let line = serde_json::to_string(&record).context("encoding a run record")?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .with_context(|| format!("appending to {}", path.display()))?;
    }
    kept.push(record);
    Ok(())
}

/// `--render`: the summary of a records file, exactly as the soak that wrote it printed it.
fn render(path: &std::path::Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let runs = records::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    print!("{}", records::summary(&runs));
    Ok(())
}

fn finish(cli: &Cli, report: &str, failed: bool) -> Result<()> {
    if let Some(path) = &cli.summary {
        std::fs::write(path, report).with_context(|| format!("writing {}", path.display()))?;
    }
    if failed {
        bail!("the soak found problems (see above)");
    }
    println!("SOAK passed");
    Ok(())
}

/// The client library's reconnect decisions (info level, `SOAK_CLIENT_LOG` overrides the
/// filter) go to `<out>/client.log`, appended, with UTC timestamps to line up with the pod
/// logs of a kept run.
fn init_client_log(out: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("client.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let filter = std::env::var("SOAK_CLIENT_LOG")
        .unwrap_or_else(|_| "warn,switchboard_client=info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}

//! One soak run from a clean fleet: deploy a fresh run cluster, start the pairs, inject the
//! seeded faults one after another (each held, healed, and timed until every room commits a
//! call transition again), stop the load, read etcd, check the history.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;

use super::collect::{self, HistoryWatch, OwnerWatch};
use super::entry::EntryProxy;
use super::env::{NS, SoakEnv};
use super::error::SoakError;
use super::faults::{self, FaultKind};
use super::history::{self, History, Kind, Violation};
use super::load::{self, Recorder};
use super::windows::{self, FaultWindow};

/// How long every room gets to commit a call transition again after a fault.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// How long a fault's window lasts past its heal and recovery: a healed node learns within
/// its lease TTL that it was fenced, and then migrates the clients still on it (longer after
/// loss and delay, [`faults::DEGRADED_SETTLE`]).
pub const FAULT_SETTLE: Duration = Duration::from_secs(2);

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Seed of this run (replay: `--runs 1 --seed <this>`).
    pub seed: u64,
    /// Load duration.
    pub duration: Duration,
    /// Rooms (two clients each).
    pub rooms: usize,
    /// Where a failing run keeps its history and logs.
    pub out: PathBuf,
    /// Keep them for passing runs too (to study recovery times).
    pub keep_all: bool,
    /// Fault kinds drawn from (not empty).
    pub kinds: Vec<FaultKind>,
}

/// One injected fault and how long the fleet took to serve every room again.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// Kind.
    pub kind: FaultKind,
    /// What was hit.
    pub target: String,
    /// Injected at (ms since the run's load started).
    pub at_ms: u64,
    /// Injection → every room committed a call transition again; `None`: not within the bound.
    pub recovery: Option<Duration>,
    /// End of the fault's window: healed, recovered (or given up) and settled.
    pub until_ms: u64,
    /// The target was the only Ready node of its version pool.
    pub sole_of_pool: bool,
}

impl FaultRecord {
    /// The summary row the fault is counted in: its kind, apart for the sole node of a pool.
    pub fn row(&self) -> String {
        if self.sole_of_pool {
            format!("{} (sole node of its pool)", self.kind.name())
        } else {
            self.kind.name().to_string()
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    /// Seed of the run.
    pub seed: u64,
    /// Faults injected.
    pub faults: Vec<FaultRecord>,
    /// Broken promises.
    pub violations: Vec<Violation>,
    /// Calls completed.
    pub calls_ok: u64,
    /// Calls that failed a step.
    pub calls_failed: u64,
    /// Of those, the ones a fault explains (the rest are violations).
    pub calls_failed_explained: usize,
    /// Client records checked.
    pub records: usize,
    /// etcd writes checked (assignments + rooms).
    pub etcd_writes: usize,
    /// Deploy time of the clean fleet.
    pub deploy: Duration,
    /// Where the run's evidence was kept (failing runs).
    pub kept: Option<PathBuf>,
}

/// Runs one soak run as cluster `name`.
pub async fn run_one(env: &SoakEnv, name: &str, cfg: &RunConfig) -> Result<RunOutcome, SoakError> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut out = RunOutcome {
        seed: cfg.seed,
        ..RunOutcome::default()
    };
    let since = collect::revision(&env.etcd_url).await?;
    // The recorder's clock starts here so the live ownership watch shares it.
    let rec = Recorder::new(cfg.rooms);
    let watch = HistoryWatch::start(&env.etcd_url, NS, name, since)?;
    let owners = OwnerWatch::start(&env.etcd_url, NS, name, since, rec.t0())?;
    out.deploy = env.deploy(name).await?;
    // Clients enter through a Service-like proxy, so an entry outlives any one pod.
    let entry = EntryProxy::start(env.cluster.client.clone(), name).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut pairs = Vec::new();
    for i in 0..cfg.rooms {
        let room = format!("{name}-room-{i}");
        let tokens = (
            env.token(&format!("h{i}"), &room),
            env.token(&format!("g{i}"), &room),
        );
        pairs.push(tokio::spawn(load::drive_pair(
            vec![entry.url()],
            room,
            i,
            tokens,
            rec.clone(),
            stop_rx.clone(),
        )));
    }
    // Every room up before the first fault.
    let started = Instant::now();
    while !rec.stalled_since(started).is_empty() && started.elapsed() < RECOVERY_BOUND {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load_start = Instant::now();
    while load_start.elapsed() < cfg.duration {
        let planned = faults::plan(&mut rng, &cfg.kinds);
        tokio::time::sleep(planned.gap).await;
        if load_start.elapsed() >= cfg.duration {
            break;
        }
        let t0 = Instant::now();
        let at_ms = u64::try_from(rec.t0().elapsed().as_millis()).unwrap_or(0);
        // Watch for recovery while the fault is held (a pause or partition outlasts the lease,
        // so the fleet fails over before it is healed).
        let (effective_tx, mut effective_rx) = watch::channel(None::<Instant>);
        let watcher = {
            let rec = rec.clone();
            tokio::spawn(async move {
                let effective = match effective_rx.wait_for(Option::is_some).await {
                    Ok(at) => at.unwrap_or(t0),
                    Err(_) => return None,
                };
                while effective.elapsed() < RECOVERY_BOUND {
                    if rec.stalled_since(effective).is_empty() {
                        return Some(effective.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None
            })
        };
        let injected = faults::inject(env, name, &planned, &effective_tx).await;
        drop(effective_tx);
        let injected = match injected {
            Ok(i) => i,
            Err(e) => {
                watcher.abort();
                return Err(e);
            }
        };
        eprintln!(
            "  fault {} {}{} at {} ms",
            planned.kind.name(),
            injected.target,
            if injected.sole_of_pool {
                " (sole node of its pool)"
            } else {
                ""
            },
            at_ms
        );
        let recovery = watcher.await.ok().flatten();
        if recovery.is_none() {
            let stalled = rec.stalled_since(t0);
            out.violations.push(Violation {
                kind: Kind::LostSession,
                summary: format!(
                    "after {} ({}), rooms {stalled:?} made no progress within {RECOVERY_BOUND:?}",
                    planned.kind.name(),
                    injected.target
                ),
                timeline: vec![format!("{at_ms:>7} ms  fault injected")],
            });
        }
        out.faults.push(FaultRecord {
            kind: planned.kind,
            target: injected.target,
            at_ms,
            recovery,
            until_ms: rec.now_ms() + faults::settle(&planned, FAULT_SETTLE).as_millis() as u64,
            sole_of_pool: injected.sole_of_pool,
        });
    }
    let _ = stop_tx.send(true);
    let mut members = Vec::new();
    for pair in pairs {
        match tokio::time::timeout(load::STEP * 4, pair).await {
            Ok(Ok(done)) => {
                out.calls_ok += done.calls_ok;
                out.calls_failed += done.calls_failed;
                if let Some(e) = done.setup_error {
                    out.violations.push(Violation {
                        kind: Kind::LostSession,
                        summary: format!("a pair never started: {e}"),
                        timeline: Vec::new(),
                    });
                }
                members.extend(done.members);
            }
            Ok(Err(e)) => out.violations.push(Violation {
                kind: Kind::LostSession,
                summary: format!("a client task failed: {e}"),
                timeline: Vec::new(),
            }),
            Err(_) => out.violations.push(Violation {
                kind: Kind::LostSession,
                summary: "a client task did not stop".into(),
                timeline: Vec::new(),
            }),
        }
    }
    // The final state, read while every session is still open (nothing has left yet).
    let etcd = retried("reading the run's etcd history", || watch.finish()).await?;
    drop(watch);
    let owners = owners.take();
    let room_deletes = etcd.room_deletes.clone();
    for member in members {
        member.close().await;
    }
    let (records, dropped) = rec.take();
    out.records = records.len();
    out.etcd_writes = etcd.assignments.len() + etcd.room_writes.len();
    for bad in &etcd.undecodable {
        out.violations.push(Violation {
            kind: Kind::LostWrite,
            summary: format!("undecodable value in etcd: {bad}"),
            timeline: Vec::new(),
        });
    }
    let history = History {
        records,
        finals: etcd.finals,
        assignments: etcd.assignments,
        room_writes: etcd.room_writes,
        log: etcd.log,
        faults: out
            .faults
            .iter()
            .map(|f| FaultWindow {
                from_ms: f.at_ms,
                to_ms: f.until_ms,
                what: format!("{} {}", f.kind.name(), f.target),
            })
            .collect(),
        owners,
        shard_count: super::env::SHARDS,
    };
    out.calls_failed_explained =
        windows::check_call_failures(&history.records, &history.faults).explained;
    out.violations.extend(history::check(&history));
    if !out.violations.is_empty() || cfg.keep_all {
        let dir = cfg.out.join(format!("{name}-seed-{}", cfg.seed));
        keep(&dir, &history, &out, dropped, &room_deletes);
        env.keep_logs(&dir).await;
        out.kept = Some(dir);
    }
    env.teardown(name).await?;
    retried("compacting the fleet etcd", || {
        collect::compact(&env.etcd_url)
    })
    .await?;
    Ok(out)
}

/// How often a read of etcd is tried before the run gives up on it.
const ETCD_ATTEMPTS: u32 = 3;

/// Runs the etcd request `f` again after an etcd error (a stream through the etcd Service can
/// break while etcd is slow or restarting), up to [`ETCD_ATTEMPTS`] times; the last error
/// says what was being done.
async fn retried<T, F, Fut>(what: &str, mut f: F) -> Result<T, SoakError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SoakError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(SoakError::Etcd(e)) if attempt < ETCD_ATTEMPTS => {
                eprintln!("  {what}: {e}; trying again");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(SoakError::Setup(format!("{what}: {e}"))),
            Ok(v) => return Ok(v),
        }
    }
}

/// Writes the history and the violations under `dir`.
fn keep(dir: &Path, history: &History, out: &RunOutcome, dropped: u64, room_deletes: &[String]) {
    let _ = std::fs::create_dir_all(dir);
    let mut text = String::new();
    for r in &history.records {
        let _ = writeln!(text, "{r}");
    }
    if dropped > 0 {
        let _ = writeln!(text, "({dropped} records beyond the bound were not kept)");
    }
    let _ = std::fs::write(dir.join("history.txt"), text);
    let mut v = String::new();
    for f in &out.faults {
        let _ = writeln!(
            v,
            "fault {:>7} ms {} {} recovered {:?}, window until {} ms",
            f.at_ms,
            f.kind.name(),
            f.target,
            f.recovery,
            f.until_ms
        );
    }
    for violation in &out.violations {
        let _ = write!(v, "{violation}");
    }
    let _ = std::fs::write(dir.join("violations.txt"), v);
    let mut w = String::new();
    for a in &history.assignments {
        let _ = writeln!(
            w,
            "rev {} assignment {} -> {} epoch {}",
            a.revision, a.shard, a.node, a.epoch
        );
    }
    for r in &history.room_writes {
        let _ = writeln!(
            w,
            "rev {} room {}/{} by {} epoch {}",
            r.revision, r.shard, r.room, r.node, r.epoch
        );
    }
    for d in room_deletes {
        let _ = writeln!(w, "{d}");
    }
    for a in &history.owners {
        let _ = writeln!(
            w,
            "{:>7} ms watch saw assignment {} -> {} epoch {}",
            a.at_ms, a.shard, a.node, a.epoch
        );
    }
    let _ = std::fs::write(dir.join("etcd-writes.txt"), w);
}

//! `signaling-node bench` and the hidden `signaling-node baseline-relay`: the load
//! generator's command line.

mod baseline;

pub use baseline::{BaselineRelayArgs, run_baseline_relay};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::centrifugo::Codec;
use crate::stats::{Ratios, json_line};
use crate::stress::{self, Scenario, StressConfig};
use crate::{BaselineMode, BenchConfig, TargetKind, run};
use switchboard_client::cli::{SecretArgs, VersionArg, versions};

/// Arguments of `signaling-node bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The server's URL: Switchboard and Centrifugo `ws://…`; for --target baseline or tcp an
    /// already running relay (`ws://HOST:PORT/`, `tcp://HOST:PORT`), else the bench starts one.
    #[arg(long)]
    pub url: Option<String>,
    /// What --url points at, or `tcp` for the raw TCP floor (a relay process started here).
    #[arg(long, value_enum, default_value_t = TargetArg::Switchboard)]
    pub target: TargetArg,
    /// Where the secret to mint join tokens comes from.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Connections to open (rounded down to whole rooms).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Members per room.
    #[arg(long, default_value_t = 2)]
    pub room_size: usize,
    /// Seconds of load after every connection joined and every pair's call connected.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Open-loop relay messages per second (ICE candidates on connected calls), all pairs together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Full co-host flows started per second, all pairs together.
    #[arg(long, default_value_t = 50.0)]
    pub flow_rate: f64,
    /// ICE candidates each side sends per flow.
    #[arg(long, default_value_t = 2)]
    pub candidates: u16,
    /// Connections opened per second during the ramp (100000 or more: as fast as
    /// --connect-concurrency allows).
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Cap on open-loop messages sent in total.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_messages: u64,
    /// The node's pid: report its RSS growth per idle connection.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also run the same load against the minimal baseline relay and print the ratios.
    #[arg(long)]
    pub baseline: bool,
    /// Measure the baseline relay alone.
    #[arg(long, conflicts_with = "url")]
    pub baseline_only: bool,
    /// Run the baseline relay inside this process instead of as a child process.
    #[arg(long, hide = true)]
    pub baseline_in_process: bool,
    /// Print a final line with the results as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Run a bad-input scenario against a Switchboard node instead of the benchmark (needs
    /// --url, a secret and --server-pid; prints one JSON line with the node's RSS curve).
    #[arg(long, value_enum)]
    pub stress: Option<Scenario>,
    /// The node's `/metrics` URL (stress runs report the change of its counters).
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// A URL whose GET makes the server collect its garbage (Centrifugo: its pprof heap
    /// endpoint with `?gc=1`); RSS is read again after it.
    #[arg(long)]
    pub gc_url: Option<String>,
    /// Protocol versions to offer (repeatable; default v2 and v1).
    #[arg(long = "protocol", value_enum)]
    pub protocols: Vec<VersionArg>,
    /// PEM CA certificates for a wss:// URL.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Connect every client straight to its room's owner (found first by one unmeasured
    /// connection per room through --url) instead of through --url and the redirect: the
    /// baseline for the setup latency through an entry URL.
    #[arg(long)]
    pub straight_to_owner: bool,
}

/// `--target`: what the main measurement runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    /// A Switchboard node at --url.
    Switchboard,
    /// The baseline relay alone (same as --baseline-only).
    Baseline,
    /// A Centrifugo v6 server at --url (`ws://HOST:PORT/connection/websocket`), Protobuf
    /// protocol; the secret is its token HMAC secret key.
    Centrifugo,
    /// The same with Centrifugo's JSON protocol (frames base64 in JSON publications).
    CentrifugoJson,
    /// The raw TCP floor: the baseline relay over length-prefixed TCP, as a child process.
    Tcp,
}

/// Builds the bench configuration from the arguments.
pub fn config(args: &BenchArgs) -> anyhow::Result<BenchConfig> {
    let baseline_only = args.baseline_only || args.target == TargetArg::Baseline;
    let centrifugo = matches!(
        args.target,
        TargetArg::Centrifugo | TargetArg::CentrifugoJson
    );
    if (args.target == TargetArg::Switchboard || centrifugo) && !baseline_only && args.url.is_none()
    {
        bail!("--url is required with --target switchboard or centrifugo");
    }
    if args.baseline_only && args.url.is_some() {
        bail!("--baseline-only measures the baseline alone: drop --url");
    }
    // A relay already running (started and pinned by the caller) instead of a child process.
    let running_relay = match (args.target, &args.url) {
        (TargetArg::Baseline | TargetArg::Tcp, Some(url)) => Some(relay_addr(url)?),
        _ => None,
    };
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    for (name, value) in [
        ("--rate", args.rate),
        ("--flow-rate", args.flow_rate),
        ("--connect-rate", args.connect_rate),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            bail!("{name} must be a non-negative number");
        }
    }
    let main_url = args.url.clone().filter(|_| running_relay.is_none());
    let secret = if main_url.is_some() {
        Some(args.secret.require()?)
    } else {
        None
    };
    let mut cfg = BenchConfig::new(main_url, secret, args.connections);
    cfg.gc_url = args.gc_url.clone();
    cfg.client.versions = versions(&args.protocols);
    cfg.client.ca_file = args.ca_file.clone();
    cfg.room_size = args.room_size;
    cfg.duration = Duration::from_secs_f64(args.duration);
    cfg.rate = args.rate;
    cfg.flow_rate = args.flow_rate;
    cfg.candidates = args.candidates;
    cfg.connect_rate = args.connect_rate.max(1.0);
    cfg.connect_concurrency = args.connect_concurrency.max(1);
    cfg.max_messages = args.max_messages;
    cfg.server_pid = args.server_pid;
    cfg.progress = true;
    if args.straight_to_owner && args.target != TargetArg::Switchboard {
        bail!("--straight-to-owner needs --target switchboard (rooms have owners there only)");
    }
    cfg.straight_to_owner = args.straight_to_owner;
    let relay_mode = || -> anyhow::Result<BaselineMode> {
        Ok(if let Some(addr) = running_relay {
            BaselineMode::Running(addr)
        } else if args.baseline_in_process {
            BaselineMode::InProcess
        } else {
            BaselineMode::Process(
                std::env::current_exe()
                    .context("locating this executable to start the baseline relay")?,
            )
        })
    };
    cfg.target = match args.target {
        TargetArg::Centrifugo => TargetKind::Centrifugo(Codec::Protobuf),
        TargetArg::CentrifugoJson => TargetKind::Centrifugo(Codec::Json),
        TargetArg::Tcp => TargetKind::Tcp(relay_mode()?),
        TargetArg::Switchboard | TargetArg::Baseline => TargetKind::Switchboard,
    };
    if args.baseline || baseline_only {
        cfg.baseline = Some(relay_mode()?);
    }
    Ok(cfg)
}

/// The address of a running relay given as `ws://HOST:PORT/` or `tcp://HOST:PORT`.
fn relay_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("tcp://"))
        .with_context(|| format!("a relay URL is ws://HOST:PORT/ or tcp://HOST:PORT, not {url}"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .parse()
        .with_context(|| format!("{authority} is not an IP address and port"))
}

/// Runs the bench and prints the summary (and the JSON line with --json); fails (a non-zero
/// exit) when any error was counted, after printing everything.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(scenario) = args.stress {
        return run_stress(&args, scenario).await;
    }
    let cfg = config(&args)?;
    let result = run(&cfg).await.context("bench failed")?;
    if let Some(main) = &result.main {
        print!("{}", main.human());
    }
    if let Some(baseline) = &result.baseline {
        print!("{}", baseline.human());
    }
    if let (Some(main), Some(baseline)) = (&result.main, &result.baseline) {
        println!("{}", Ratios::of(main, baseline).human());
    }
    if args.json {
        let line = match (&result.main, &result.baseline) {
            (Some(main), baseline) => json_line(main, baseline.as_ref()),
            (None, Some(baseline)) => json_line(baseline, None),
            (None, None) => bail!("nothing was measured"),
        };
        println!("{line}");
    }
    let errors: u64 = [&result.main, &result.baseline]
        .into_iter()
        .flatten()
        .map(|r| r.errors)
        .sum();
    if errors > 0 {
        bail!("{errors} errors (see the summary above)");
    }
    Ok(())
}

/// Runs a bad-input scenario and prints its JSON report.
async fn run_stress(args: &BenchArgs, scenario: Scenario) -> anyhow::Result<()> {
    let url = args
        .url
        .clone()
        .context("--stress needs --url (a Switchboard node)")?;
    let server_pid = args
        .server_pid
        .context("--stress needs --server-pid (its RSS is the point)")?;
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 3_600.0) {
        bail!("--duration must be between 0 and 3600 seconds");
    }
    crate::sys::raise_nofile(args.connections as u64 + 512)
        .context("raising the open-file limit")?;
    let cfg = StressConfig {
        url,
        secret: args.secret.require()?,
        scenario,
        connections: args.connections,
        duration: Duration::from_secs_f64(args.duration),
        server_pid,
        metrics_url: args.metrics_url.clone(),
        concurrency: args.connect_concurrency.max(1),
    };
    println!("{}", stress::run(&cfg).await);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn targets_pick_their_kind() {
        let args = parse(&["--target", "tcp", "--connections", "10"]).unwrap();
        let cfg = config(&args).unwrap();
        assert!(matches!(
            cfg.target,
            TargetKind::Tcp(BaselineMode::Process(_))
        ));
        assert!(config(&parse(&["--target", "tcp", "--url", "ws://x/ws"]).unwrap()).is_err());
        let cfg =
            config(&parse(&["--target", "tcp", "--url", "tcp://127.0.0.1:9"]).unwrap()).unwrap();
        assert!(matches!(
            cfg.target,
            TargetKind::Tcp(BaselineMode::Running(_))
        ));
        assert!(cfg.url.is_none());
        let cfg = config(&parse(&["--target", "baseline", "--url", "ws://127.0.0.1:9/"]).unwrap())
            .unwrap();
        assert!(matches!(cfg.baseline, Some(BaselineMode::Running(_))));
        assert!(config(&parse(&["--target", "centrifugo", "--secret", "k"]).unwrap()).is_err());
        let args = parse(&[
            "--target",
            "centrifugo",
            "--url",
            "ws://127.0.0.1:1/connection/websocket",
            "--secret",
            "k",
        ])
        .unwrap();
        assert!(matches!(
            config(&args).unwrap().target,
            TargetKind::Centrifugo(Codec::Protobuf)
        ));
        let cfg = config(&parse(&["--target", "baseline"]).unwrap()).unwrap();
        assert!(cfg.url.is_none() && cfg.baseline.is_some());
    }

    #[test]
    fn url_or_baseline_only_is_required() {
        assert!(config(&parse(&[]).unwrap()).is_err());
        assert!(parse(&["--baseline-only", "--url", "ws://x/ws"]).is_err());
        let args = parse(&["--baseline-only", "--connections", "10"]).unwrap();
        let cfg = config(&args).unwrap();
        assert!(cfg.url.is_none());
        assert!(matches!(cfg.baseline, Some(BaselineMode::Process(_))));
    }

    #[test]
    fn switchboard_needs_a_secret_and_sane_numbers() {
        let args = parse(&["--url", "ws://127.0.0.1:1/ws"]).unwrap();
        assert!(config(&args).is_err());
        let args = parse(&[
            "--url",
            "ws://127.0.0.1:1/ws",
            "--secret",
            "k",
            "--duration",
            "2",
            "--rate",
            "50",
        ])
        .unwrap();
        let cfg = config(&args).unwrap();
        assert_eq!(cfg.duration, Duration::from_secs(2));
        assert_eq!(cfg.rate, 50.0);
        assert!(cfg.baseline.is_none());
        let args = parse(&[
            "--url",
            "ws://127.0.0.1:1/ws",
            "--secret",
            "k",
            "--duration",
            "0",
        ])
        .unwrap();
        assert!(config(&args).is_err());
        let args = parse(&["--url", "ws://127.0.0.1:1/ws", "--secret", "k", "--rate=-1"]).unwrap();
        assert!(config(&args).is_err());
    }
}

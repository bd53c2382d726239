//! `signaling-node` binary: `serve` runs this crate's server; `client` and `token` come from
//! `switchboard-client`, `bench` (and the hidden `baseline-relay`) from `switchboard-bench`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use signaling_node::config::{ConfigHandle, LogFormat, ServeArgs};
use signaling_node::metrics::Metrics;
use signaling_node::routing::{SharedOwnership, Standalone};
use signaling_node::server::cluster::serve_cluster;
use signaling_node::server::{Listeners, Node};
use signaling_node::store::{MemoryStore, RoomStore};
use switchboard_bench::cli::{BaselineRelayArgs, BenchArgs, run_baseline_relay, run_bench};
use switchboard_client::cli::{ClientArgs, TokenArgs, run_client, run_token};
use switchboard_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

/// Switchboard signaling node.
#[derive(Debug, Parser)]
#[command(name = "signaling-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the signaling server (standalone unless cluster settings are given).
    Serve(Box<ServeArgs>),
    /// Join a room and print every frame, or play the co-host flow (host / guest / --demo).
    Client(ClientArgs),
    /// Load-test a node: join latency, relay latency, throughput, memory per connection.
    Bench(BenchArgs),
    /// Mint a join token (JWT HS256) for tests and demos.
    Token(TokenArgs),
    /// The bench's baseline relay, run as its own process.
    #[command(hide = true)]
    BaselineRelay(BaselineRelayArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Token(args) => run_token(&args),
        Command::Client(args) => {
            init_tool_tracing();
            runtime.block_on(run_client(args))
        }
        Command::Bench(args) => {
            init_tool_tracing();
            runtime.block_on(run_bench(args))
        }
        Command::BaselineRelay(args) => {
            init_tool_tracing();
            runtime.block_on(run_baseline_relay(args))
        }
    }
}

/// Tools print their own output on stdout; logs (warnings by default) go to stderr.
fn init_tool_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Logs to stdout at `RUST_LOG` (default info); spans to the OTLP collector when `telemetry`
/// exports (each output filters on its own, so exported spans are not logged).
fn init_tracing(format: LogFormat, telemetry: &Telemetry) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: `kubectl logs` of a container shows the escape codes.
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(telemetry.layer())
        .init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ConfigHandle::load(args.settings.clone(), args.config.clone())
        .context("loading settings")?;
    let settings = config.current();
    let telemetry = Telemetry::start(
        &args.trace,
        "switchboard-node",
        &settings.node_name,
        &["signaling_node"],
    )
    .context("starting trace export")?;
    init_tracing(settings.log_format, &telemetry);
    let metrics = Metrics::new();
    telemetry
        .register(metrics.registry())
        .context("registering the trace export metrics")?;
    let mut listeners = Listeners::bind(settings.listen, Some(settings.admin_listen))
        .await
        .with_context(|| format!("binding {} and {}", settings.listen, settings.admin_listen))?;
    #[cfg(feature = "webtransport")]
    if let Some(addr) = settings.webtransport_listen {
        listeners
            .bind_webtransport(addr)
            .with_context(|| format!("binding WebTransport on UDP {addr}"))?;
    }
    if args.demo {
        tracing::warn!(
            admin = %settings.admin_listen,
            "--demo: serving the demo page and a token endpoint that mints tokens for anyone"
        );
        listeners.admin_routes = Some(signaling_node::server::demo::router(config.subscribe()));
    }
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(config.clone().watch_files(
        Duration::from_secs(1),
        metrics.clone(),
        stop.clone().cancelled_owned(),
    ));
    let result = if args.cluster.enabled() {
        serve_cluster(&args.cluster, config, metrics, listeners, shutdown_signal())
            .await
            .context("serving in cluster mode")
    } else {
        // Standalone: this node owns every shard and keeps room state in memory.
        let store: Arc<dyn RoomStore> = Arc::new(MemoryStore::new());
        let ownership: SharedOwnership = Arc::new(Standalone {
            shard_count: settings.shard_count,
        });
        Node::new(config.subscribe(), store, ownership, metrics)
            .serve(listeners, shutdown_signal())
            .await
            .context("serving")
    };
    stop.cancel();
    let _ = watcher.await;
    // The last spans (a drain's handoffs) go out before the process ends.
    telemetry.shutdown(Duration::from_secs(2)).await;
    result
}

/// Resolves on SIGTERM (Kubernetes preStop/termination) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "signaling-node",
            "serve",
            "--listen",
            "127.0.0.1:7001",
            "--heartbeat-interval",
            "10s",
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
            "--cluster",
            "demo",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("`serve` parses as Command::Serve");
        };
        assert_eq!(
            args.settings.listen,
            Some("127.0.0.1:7001".parse().unwrap())
        );
        assert!(args.cluster.enabled());
    }

    #[test]
    fn tool_subcommands_parse() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("signaling-node").chain(args.iter().copied()))
        };
        assert!(matches!(
            parse(&["token", "--secret", "k", "--user", "alice", "--room", "r1"])
                .unwrap()
                .command,
            Command::Token(_)
        ));
        assert!(matches!(
            parse(&["client", "--room", "r", "--demo", "--secret", "k"])
                .unwrap()
                .command,
            Command::Client(_)
        ));
        assert!(matches!(
            parse(&["bench", "--baseline-only", "--connections", "10"])
                .unwrap()
                .command,
            Command::Bench(_)
        ));
        assert!(matches!(
            parse(&["baseline-relay", "--room-size", "2"])
                .unwrap()
                .command,
            Command::BaselineRelay(_)
        ));
        assert!(parse(&["client", "--room", "r", "--token", "t", "--secret", "k"]).is_err());
    }
}

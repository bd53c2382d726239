//! The operator process: command-line flags and the supervised run — startup checks, the
//! admin HTTP server, leader election, the controllers, and shutdown.
//!
//! Lifecycle:
//! 1. Build the rate-limited Kubernetes client, serve `/healthz` and `/metrics`, check that the
//!    CRDs are installed (else fail with "CRDs not installed: kubectl apply -f crds/"), then
//!    report ready on `/readyz`.
//! 2. With `--leader-elect`, wait as a standby until this process holds the Lease.
//! 3. Run the SignalingCluster and ProtocolRollout controllers while leading.
//! 4. SIGTERM/SIGINT: stop the controllers (in-flight reconciles finish, bounded by
//!    `--shutdown-timeout`), then release the Lease, then exit 0. Losing the Lease (or the
//!    election task failing) ends the process at once with [`Outcome::LostLeadership`]
//!    (exit 1), so Kubernetes restarts it as a fresh standby and nothing keeps writing.

use k8s_openapi::api::core::v1::EnvVar;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchboard_telemetry::SpanCounters;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{self, ClientError};
use crate::controller::cluster::reconcile::{self, Context, Services};
use crate::controller::cluster::store::EtcdCleanup;
use crate::controller::{WatchScope, rollout, shards::ShardManagers};
use crate::etcd::EtcdClients;
use crate::http::{self, AdminState};
use crate::leader::{Election, LeaderError, LeaderState, LeaseLock, Timing, run_election};
use crate::metrics::Metrics;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the span fields (cluster namespace/name) included.
    Json,
}

/// Flags of `switchboard-operator`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "switchboard-operator",
    version,
    about = "Kubernetes operator for Switchboard signaling clusters"
)]
pub struct Args {
    /// Run the controllers only while holding the leader Lease (run several replicas as hot
    /// standbys).
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "switchboard-operator")]
    pub leader_election_lease: String,
    /// How long the Lease is valid after its last renewal (whole seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_election_lease_duration: Duration,
    /// The leader stops (and exits) when it could not renew for this long.
    #[arg(long, default_value = "7s", value_parser = parse_duration)]
    pub leader_election_renew_deadline: Duration,
    /// Interval of renewals and of a standby's attempts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_election_retry_period: Duration,
    /// Address of the admin HTTP server (/metrics, /healthz, /readyz).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log filter (tracing EnvFilter syntax, e.g. `info` or
    /// `switchboard_operator=debug,kube=info`).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Kubernetes API requests per second (client-side limit; 0 disables it).
    #[arg(long, default_value_t = 20.0)]
    pub kube_qps: f32,
    /// Kubernetes API requests allowed in a burst above the rate.
    #[arg(long, default_value_t = 40)]
    pub kube_burst: u32,
    /// This process's identity in the leader Lease [default: $POD_NAME, else
    /// `<hostname>-<pid>`].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Timeout of connecting to a cluster's etcd and of each of the operator's etcd requests.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub etcd_timeout: Duration,
    /// How long controllers may take to finish in-flight work on SIGTERM.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Watch and manage only this namespace (the chart's `clusterWide: false`, with Roles in
    /// it instead of ClusterRoles). Default: every namespace.
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Check the flags and print what they resolve to, then exit 0 without connecting to
    /// anything (the chart's check runs it on every rendered argument list).
    #[arg(long)]
    pub check_args: bool,
    /// Span export over OTLP (off unless an endpoint is set); passed on to the node pods.
    #[command(flatten)]
    pub trace: switchboard_telemetry::TraceArgs,
}

impl Args {
    /// The leader election timing from the flags, validated.
    pub fn timing(&self) -> Result<Timing, RuntimeError> {
        let timing = Timing {
            lease_duration: self.leader_election_lease_duration,
            renew_deadline: self.leader_election_renew_deadline,
            retry_period: self.leader_election_retry_period,
        };
        timing.validate().map_err(RuntimeError::Args)?;
        Ok(timing)
    }

    /// The environment every node pod gets unless its cluster's pod template sets it: the
    /// operator's trace export settings, so one chart value traces the whole fleet.
    pub fn node_env(&self) -> Vec<EnvVar> {
        let Some(endpoint) = self
            .trace
            .otlp_endpoint
            .as_deref()
            .filter(|e| !e.is_empty())
        else {
            return Vec::new();
        };
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
            (
                "SWITCHBOARD_TRACE_SAMPLE_RATIO",
                self.trace.trace_sample_ratio.to_string(),
            ),
        ]
        .into_iter()
        .map(|(name, value)| EnvVar {
            name: name.into(),
            value: Some(value),
            value_from: None,
        })
        .collect()
    }

    /// The namespaces the controllers watch.
    pub fn scope(&self) -> WatchScope {
        WatchScope::from_flag(self.watch_namespace.as_deref())
    }

    /// The identity: `--identity` / `$POD_NAME`, else the host name and process id.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|i| !i.trim().is_empty())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "switchboard-operator".into());
                format!("{host}-{}", std::process::id())
            })
    }
}

/// `250ms`, `2s`, `1m` (or a bare number of seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (e.g. 500ms, 2s, 1m)"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        other => return Err(format!("unknown duration unit {other:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Startup failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Flags that cannot work together.
    #[error("invalid arguments: {0}")]
    Args(String),
    /// The Kubernetes client or the CRD check failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The admin address could not be bound.
    #[error("binding the admin server to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Installing the signal handlers failed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request (exit 0).
    Stopped,
    /// Lost the leader Lease or the election failed (exit non-zero).
    LostLeadership,
}

/// Runs the operator until a signal or the loss of leadership.
pub async fn run(args: Args, trace_spans: SpanCounters) -> Result<Outcome, RuntimeError> {
    let timing = args.timing()?;
    let identity = args.identity();
    let client = client::build_client(args.kube_qps, args.kube_burst).await?;
    let metrics = Metrics::new();
    trace_spans
        .register(metrics.registry())
        .map_err(|e| RuntimeError::Args(format!("registering the trace export metrics: {e}")))?;
    let admin = AdminState::new(metrics.clone());
    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| RuntimeError::Bind {
            addr: args.metrics_addr,
            source,
        })?;
    let stop_http = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        listener,
        admin.clone(),
        stop_http.clone().cancelled_owned(),
    ));
    let signals = listen_for_signals()?;

    client::check_crds(&client).await?;
    admin.set_ready(true);
    tracing::info!(%identity, leader_elect = args.leader_elect, metrics_addr = %args.metrics_addr, scope = ?args.scope(), "operator started");

    let mut election = None;
    if args.leader_elect {
        let (state_tx, mut state_rx) = watch::channel(LeaderState::Standby);
        let stop = CancellationToken::new();
        let lock = LeaseLock::new(
            client.clone(),
            &args.leader_election_namespace,
            &args.leader_election_lease,
        );
        let mut task = tokio::spawn(run_election(
            lock,
            Election::new(identity.clone(), timing),
            state_tx,
            metrics.clone(),
            stop.clone(),
        ));
        tracing::info!(lease = %format!("{}/{}", args.leader_election_namespace, args.leader_election_lease), "waiting for leadership");
        tokio::select! {
            () = signals.cancelled() => {
                stop.cancel();
                let _ = task.await;
                stop_http.cancel();
                return Ok(Outcome::Stopped);
            }
            result = &mut task => {
                tracing::error!(?result, "leader election ended before this process led");
                stop_http.cancel();
                return Ok(Outcome::LostLeadership);
            }
            _ = state_rx.wait_for(|s| *s == LeaderState::Leading) => {}
        }
        election = Some((task, stop));
    } else {
        metrics.leader.set(1);
    }

    let outcome = run_controllers(&args, client, metrics, identity, &signals, &mut election).await;
    if let Some((task, stop)) = election
        && outcome == Outcome::Stopped
    {
        // Only now, with every writer stopped, hand the Lease over.
        stop.cancel();
        if let Ok(Err(error)) = task.await {
            tracing::warn!(%error, "leader election ended with an error during shutdown");
        }
    }
    stop_http.cancel();
    let _ = http_task.await;
    tracing::info!(?outcome, "operator stopped");
    Ok(outcome)
}

type ElectionTask = (JoinHandle<Result<(), LeaderError>>, CancellationToken);

async fn run_controllers(
    args: &Args,
    client: kube::Client,
    metrics: Metrics,
    identity: String,
    signals: &CancellationToken,
    election: &mut Option<ElectionTask>,
) -> Outcome {
    let etcd = EtcdClients::new(client.clone(), args.etcd_timeout);
    let services = Services {
        metrics: metrics.clone(),
        etcd: etcd.clone(),
        shards: ShardManagers::new(client.clone(), metrics.registry()),
        cleanup: Arc::new(EtcdCleanup::new(etcd.clone())),
        node_env: args.node_env(),
    };
    let ctx = Arc::new(Context::new(client.clone(), Some(identity), services));
    let stop = CancellationToken::new();
    let scope = args.scope();
    let controllers = async {
        tokio::join!(
            reconcile::run(ctx, scope.clone(), stop.clone().cancelled_owned()),
            rollout::run(client, etcd, &metrics, scope.clone(), stop.cancelled()),
        );
    };
    tokio::pin!(controllers);
    let lost = async {
        match election {
            Some((task, _)) => match task.await {
                Ok(Ok(())) => tracing::error!("leader election stopped unexpectedly"),
                Ok(Err(error)) => tracing::error!(%error, "stopping: leadership lost"),
                Err(error) => tracing::error!(%error, "stopping: leader election task failed"),
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = signals.cancelled() => {
            tracing::info!("shutting down: stopping controllers");
            stop.cancel();
            if tokio::time::timeout(args.shutdown_timeout, &mut controllers).await.is_err() {
                tracing::warn!(timeout = ?args.shutdown_timeout, "controllers did not stop in time");
            }
            Outcome::Stopped
        }
        () = lost => {
            // Someone else may lead already: stop writing now, without a graceful drain.
            stop.cancel();
            Outcome::LostLeadership
        }
        () = &mut controllers => {
            tracing::error!("controllers stopped on their own");
            Outcome::LostLeadership
        }
    }
}

/// A token cancelled on the first SIGTERM or SIGINT.
fn listen_for_signals() -> Result<CancellationToken, RuntimeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).map_err(RuntimeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RuntimeError::Signals)?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "received signal");
        cancel.cancel();
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_match_the_chart_and_validate() {
        let args = Args::try_parse_from(["switchboard-operator"]).unwrap();
        assert!(!args.leader_elect);
        assert_eq!(args.leader_election_lease, "switchboard-operator");
        assert_eq!(args.metrics_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(args.timing().unwrap(), Timing::default());
        assert!(!args.identity().is_empty());

        // The chart's arguments parse.
        let chart = Args::try_parse_from([
            "switchboard-operator",
            "--leader-elect",
            "--leader-election-namespace=switchboard-system",
            "--leader-election-lease=switchboard-operator",
            "--metrics-addr=0.0.0.0:8080",
            "--log-level=info",
            "--log-format=json",
            "--identity=op-0",
        ])
        .unwrap();
        assert!(chart.leader_elect);
        assert_eq!(chart.log_format, LogFormat::Json);
        assert_eq!(chart.identity(), "op-0");
        assert_eq!(chart.leader_election_namespace, "switchboard-system");
    }

    #[test]
    fn watch_namespace_scopes_the_controllers() {
        let args = Args::try_parse_from([
            "switchboard-operator",
            "--watch-namespace=live",
            "--check-args",
        ])
        .unwrap();
        assert_eq!(args.scope(), WatchScope::Namespace("live".into()));
        assert!(args.check_args);
        let args = Args::try_parse_from(["switchboard-operator"]).unwrap();
        assert_eq!(args.scope(), WatchScope::All);
        // A flag the operator does not have is refused (the chart check relies on it).
        assert!(Args::try_parse_from(["switchboard-operator", "--reconcile-backstop=5m"]).is_err());
    }

    #[test]
    fn trace_export_settings_pass_on_to_the_node_pods() {
        let args = Args::try_parse_from([
            "switchboard-operator",
            "--otlp-endpoint=http://otel-collector:4317",
            "--trace-sample-ratio=0.5",
        ])
        .unwrap();
        let env: Vec<(String, Option<String>)> = args
            .node_env()
            .into_iter()
            .map(|e| (e.name, e.value))
            .collect();
        assert_eq!(
            env,
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
                    Some("http://otel-collector:4317".to_string())
                ),
                (
                    "SWITCHBOARD_TRACE_SAMPLE_RATIO".to_string(),
                    Some("0.5".to_string())
                ),
            ]
        );
        let mut off = Args::try_parse_from(["switchboard-operator"]).unwrap();
        off.trace.otlp_endpoint = None;
        assert!(off.node_env().is_empty());
    }

    #[test]
    fn inconsistent_timings_are_refused() {
        let args = Args::try_parse_from([
            "switchboard-operator",
            "--leader-election-lease-duration=5s",
            "--leader-election-renew-deadline=6s",
        ])
        .unwrap();
        assert!(matches!(args.timing(), Err(RuntimeError::Args(_))));
    }
}

//! `switchboard-operator` binary: parses flags, sets up logging and runs
//! [`switchboard_operator::runtime::run`]. Exit status: 0 after a requested stop, 1 when the
//! leader Lease was lost or startup failed (Kubernetes restarts the pod).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use switchboard_operator::runtime::{self, Args, LogFormat, Outcome};
use switchboard_telemetry::Telemetry;
use tracing_subscriber::EnvFilter;

/// Logs to stderr at `--log-level`; spans to the OTLP collector when `telemetry` exports.
fn init_logging(args: &Args, telemetry: &Telemetry) -> anyhow::Result<()> {
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level {:?}", args.log_level))?;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match args.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(telemetry.layer())
        .init();
    Ok(())
}

/// `--check-args`: the flags parsed (clap refused unknown ones already); validate what
/// clap cannot and print the result.
fn check_args(args: &Args) -> ExitCode {
    let checked = args.timing().map_err(anyhow::Error::new).and_then(|_| {
        EnvFilter::try_new(&args.log_level)
            .map(|_| ())
            .with_context(|| format!("invalid --log-level {:?}", args.log_level))
    });
    match checked {
        Ok(()) => {
            println!("switchboard-operator: arguments ok: {args:?}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("switchboard-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_args {
        return check_args(&args);
    }
    let telemetry = match Telemetry::start(
        &args.trace,
        "switchboard-operator",
        &args.identity(),
        &["switchboard_operator"],
    ) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("switchboard-operator: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = init_logging(&args, &telemetry) {
        eprintln!("switchboard-operator: {error:#}");
        return ExitCode::FAILURE;
    }
    let outcome = runtime::run(args, telemetry.counters().clone()).await;
    telemetry.shutdown(std::time::Duration::from_secs(2)).await;
    match outcome {
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(Outcome::LostLeadership) => ExitCode::FAILURE,
        Err(error) => {
            let error = anyhow::Error::new(error);
            tracing::error!(error = %format!("{error:#}"), "operator failed to start");
            eprintln!("switchboard-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! `signaling-node` binary: serve, client, bench and token subcommands.

use clap::{Parser, Subcommand};
use signaling_node::cli;

/// Switchboard signaling node and its tools.
#[derive(Debug, Parser)]
#[command(name = "signaling-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join a room and print every frame, or play the co-host flow (host / guest / --demo).
    Client(cli::ClientArgs),
    /// Load-test a node: join latency, relay latency, throughput, memory per connection.
    Bench(cli::BenchArgs),
    /// Mint a join token (JWT HS256) for tests and demos.
    Token(cli::TokenArgs),
    /// The bench's baseline relay, run as its own process.
    #[command(hide = true)]
    BaselineRelay(cli::BaselineRelayArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Token(args) => cli::run_token(&args),
        command => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async move {
                match command {
                    Command::Client(args) => cli::run_client(args).await,
                    Command::Bench(args) => cli::run_bench(args).await,
                    Command::BaselineRelay(args) => cli::run_baseline_relay(args).await,
                    Command::Token(args) => cli::run_token(&args),
                }
            })
        }
    }
}

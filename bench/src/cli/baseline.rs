//! The hidden `signaling-node baseline-relay` subcommand: runs the bench's baseline relay as
//! its own process (so its CPU and memory are measured like a server's).

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context;

use crate::baseline::{BaselineConfig, RelayTransport, spawn};

/// Arguments of `signaling-node baseline-relay`.
#[derive(Debug, Clone, clap::Args)]
pub struct BaselineRelayArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Members per room.
    #[arg(long, default_value_t = 2)]
    pub room_size: usize,
    /// Speak length-prefixed frames on plain TCP instead of WebSocket (the raw TCP floor).
    #[arg(long)]
    pub tcp: bool,
}

/// Serves until SIGINT / SIGTERM; the first stdout line is `listening on ADDR`.
pub async fn run_baseline_relay(args: BaselineRelayArgs) -> anyhow::Result<()> {
    crate::sys::raise_nofile(65_536).context("raising the open-file limit")?;
    let relay = spawn(
        args.listen,
        BaselineConfig {
            room_size: args.room_size.max(1),
            transport: if args.tcp {
                RelayTransport::Tcp
            } else {
                RelayTransport::WebSocket
            },
            ..BaselineConfig::default()
        },
    )
    .await
    .with_context(|| format!("binding {}", args.listen))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", relay.addr)?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    relay.shutdown.cancel();
    Ok(())
}

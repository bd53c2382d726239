//! `e2e-test-server`: the tiny workload the pod-runner tests run as a pod. It serves
//! `GET /readyz` (200, or 503 while `--not-ready-file` exists), `GET /env` (JSON of the pod
//! identity variables it was given, its arguments and pid), prints one line per lifecycle event
//! to stdout (`listening on …`, `received SIGTERM`) and exits 0 on SIGTERM.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "e2e-test-server", about = "Test workload for the pod runner")]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// While this file exists, /readyz answers 503.
    #[arg(long)]
    not_ready_file: Option<PathBuf>,
}

async fn readyz(State(args): State<Arc<Args>>) -> impl IntoResponse {
    match &args.not_ready_file {
        Some(f) if f.exists() => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => (StatusCode::OK, "ok\n"),
    }
}

async fn env() -> impl IntoResponse {
    let var = |k: &str| std::env::var(k).ok();
    let body = serde_json::json!({
        "POD_NAME": var("POD_NAME"),
        "POD_NAMESPACE": var("POD_NAMESPACE"),
        "POD_IP": var("POD_IP"),
        "NODE_NAME": var("NODE_NAME"),
        "HOSTNAME": var("HOSTNAME"),
        "args": std::env::args().collect::<Vec<_>>(),
        "pid": std::process::id(),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let app = Router::new()
        .route("/readyz", get(readyz))
        .route("/env", get(env))
        .with_state(args);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = axum::serve(listener, app) => r.context("serving")?,
        _ = term.recv() => println!("received SIGTERM"),
    }
    Ok(())
}

//! Trace export from the `signaling-node serve` process (docs/operations.md, "Tracing"): a
//! collector that is down costs the clients nothing and every span it missed is counted; a
//! malformed endpoint stops the node at start with a clear error.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{SECRET, http_get, token};
use switchboard_client::{Client, ConnectOptions};
use switchboard_protocol::traceparent::TraceParent;
use switchboard_testkit::{TempDir, eventually, free_port};

/// A node process; killed when dropped.
struct NodeProcess {
    child: Child,
    ws: String,
    admin: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &TempDir, extra: &[&str]) -> NodeProcess {
    let ws = format!("127.0.0.1:{}", free_port());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = dir.path().join("node.log");
    let out = std::fs::File::create(&log).expect("create the node log");
    let child = Command::new(env!("CARGO_BIN_EXE_signaling-node"))
        .arg("serve")
        .args(["--listen", &ws, "--admin-listen", &admin.to_string()])
        .args(["--jwt-secret", std::str::from_utf8(SECRET).unwrap()])
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone the log"))
        .stderr(out)
        .spawn()
        .expect("spawn signaling-node serve");
    NodeProcess {
        child,
        ws: format!("ws://{ws}/ws"),
        admin,
        log,
    }
}

/// `switchboard_trace_spans_total{outcome="..."}` from the node's /metrics.
async fn spans(node: &NodeProcess, outcome: &str) -> Option<f64> {
    let (status, body) = http_get(node.admin, "/metrics").await;
    if status != 200 {
        return None;
    }
    let prefix = format!("switchboard_trace_spans_total{{outcome=\"{outcome}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_collector_that_is_down_costs_the_clients_nothing_and_is_counted() {
    switchboard_testkit::init_tracing();
    let dir = TempDir::new("sb-tracing").unwrap();
    // A port nobody listens on.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let node = serve(
        &dir,
        &[
            "--otlp-endpoint",
            &dead,
            "--trace-sample-ratio",
            "1",
            "--trace-queue",
            "16",
        ],
    );
    eventually("the node's admin port", || async {
        tokio::net::TcpStream::connect(node.admin).await.is_ok()
    })
    .await;
    assert_eq!(spans(&node, "exported").await, Some(0.0));

    // Clients with and without a trace context join and leave as usual, many more spans than
    // the queue holds.
    for i in 0..40 {
        let user = format!("u{i}");
        // Rooms of 8: members stay suspended after a close, and a room seats 16.
        let room = format!("studio-{}", i / 8);
        let mut options = ConnectOptions::new(token(&user, &[room.as_str()]));
        if i % 2 == 0 {
            options.traceparent = Some(TraceParent::random());
        }
        let client = Client::connect(&node.ws, options)
            .await
            .unwrap_or_else(|e| panic!("{user} connecting while the collector is down: {e}"));
        client
            .join(&room)
            .await
            .unwrap_or_else(|e| panic!("{user} joining while the collector is down: {e}"));
        client.close().await;
    }
    let (dropped, failed) = eventually("spans counted as dropped or failed", || async {
        let (dropped, failed) = (
            spans(&node, "dropped").await?,
            spans(&node, "failed").await?,
        );
        (dropped > 0.0 && failed > 0.0).then_some((dropped, failed))
    })
    .await;
    assert_eq!(spans(&node, "exported").await, Some(0.0));
    eprintln!("collector down: {dropped} spans dropped at the queue, {failed} failed to export");
    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
    assert!(
        log.contains("trace export failed"),
        "the failure is logged: {log}"
    );
}

#[tokio::test]
async fn a_malformed_endpoint_stops_the_node_with_the_reason() {
    let dir = TempDir::new("sb-tracing-bad").unwrap();
    for (args, says) in [
        (
            vec!["--otlp-endpoint", "not a url"],
            "OTLP exporter for not a url",
        ),
        (
            vec![
                "--otlp-endpoint",
                "http://127.0.0.1:4317",
                "--trace-sample-ratio",
                "2",
            ],
            "--trace-sample-ratio 2 is not within 0..=1",
        ),
    ] {
        let mut node = serve(&dir, &args);
        let status = tokio::task::spawn_blocking(move || {
            let status = node.child.wait();
            (status, node)
        });
        let (status, node) = tokio::time::timeout(Duration::from_secs(30), status)
            .await
            .expect("the node exits")
            .unwrap();
        let status = status.unwrap();
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        assert!(!status.success(), "{args:?} must stop the node: {log}");
        assert!(log.contains(says), "{args:?}: the log says why: {log}");
    }
}

//! Measures the server's resident memory per idle connection (a measurement, not a test:
//! ignored by default). It runs `signaling-node serve` as its own process, opens N
//! connections that each say Hello (one small message), and reads the
//! server's VmRSS before and after. Run with
//! `cargo test -p signaling-node --test server_memory -- --ignored --nocapture`
//! (`SB_MEM_CONNECTIONS`, default 2000; `SB_MEM_BUFFER`, the read/write buffer in bytes).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Client, token};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn rss_per_idle_connection() {
    let n: usize = std::env::var("SB_MEM_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let buffer = std::env::var("SB_MEM_BUFFER").unwrap_or_else(|_| "4096".into());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_signaling-node"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--read-buffer", &buffer, "--write-buffer", &buffer])
        .args(["--rate-limit", "100000", "--rate-burst", "100000"])
        .env(
            "SWITCHBOARD_JWT_SECRET",
            String::from_utf8_lossy(common::SECRET).to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm up allocator arenas and runtime threads with a few connections first.
    let mut clients = Vec::new();
    for i in 0..50 {
        let mut c = Client::connect(addr, &["switchboard.v2"]).await;
        c.hello(&token(&format!("warm{i}"), &["*"]), None).await;
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(child.id());
    for i in 0..n {
        let mut c = Client::connect(addr, &["switchboard.v2"]).await;
        c.hello(&token(&format!("u{i}"), &["*"]), None).await;
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(child.id());
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "buffers {buffer} B: {n} idle connections, server RSS {before} KiB -> {after} KiB, {per:.2} KiB per connection"
    );
    child.kill().unwrap();
    let _ = child.wait();
    assert!(after > 0);
}

//! Test harness for cluster-mode integration tests: a real etcd server process on free
//! loopback ports with a temporary data dir, killed (and the dir removed) on drop.
//!
//! The binary is `$SWITCHBOARD_ETCD_BIN`, else `etcd` on `PATH`, else
//! `<repo>/e2e/.tools/bin/etcd` (built by `e2e/scripts/build-tools`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use etcd_client::Client;
use tokio::time::Instant;

/// How long a test waits for something that should happen promptly (a correctness bound,
/// generous for a loaded machine, not a performance assertion).
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A running etcd server owned by one test.
pub struct Etcd {
    bin: PathBuf,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    fsync: bool,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd without fsync (fast; durability across a machine crash is not under test).
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Starts etcd with fsync on every commit, as in production (for benchmarks).
    pub async fn start_durable() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(fsync: bool) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let bin = etcd_bin();
        let dir = std::env::temp_dir().join(format!(
            "switchboard-etcd-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create etcd temp dir");
        let (client_port, peer_port) = free_ports();
        let mut etcd = Self {
            bin,
            dir,
            client_port,
            peer_port,
            fsync,
            child: None,
        };
        etcd.spawn().await;
        etcd
    }

    /// The client URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A client connected to this server.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None)
            .await
            .expect("connect etcd client")
    }

    /// Kills the server (SIGKILL) and waits for it to exit; the data dir is kept.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, like a
    /// network partition.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("etcd running").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts the server again on the same ports and data dir.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("open etcd log");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(&self.bin);
        command
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        if !self.fsync {
            command.arg("--unsafe-no-fsync");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("etcd exited with {status}; log:\n{}", self.log());
            }
            if let Ok(Ok(mut client)) = tokio::time::timeout(
                Duration::from_secs(1),
                Client::connect([self.endpoint()], None),
            )
            .await
                && let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(1), client.status()).await
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("etcd did not become ready; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn etcd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SWITCHBOARD_ETCD_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("etcd");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/.tools/bin/etcd");
    if built.is_file() {
        return built;
    }
    panic!(
        "no etcd binary: set SWITCHBOARD_ETCD_BIN, put etcd on PATH, or run e2e/scripts/build-tools"
    );
}

fn free_ports() -> (u16, u16) {
    // Both listeners are open at once so the two ports differ.
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    let ports = (
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    );
    drop((a, b));
    ports
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after
/// [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of `key`, if present.
pub async fn get(client: &Client, key: &str) -> Option<Vec<u8>> {
    let mut kv = client.kv_client();
    let response = kv.get(key, None).await.expect("etcd get");
    response.kvs().first().map(|kv| kv.value().to_vec())
}

/// The value and lease of `key`, if present.
pub async fn get_with_lease(client: &Client, key: &str) -> Option<(Vec<u8>, i64)> {
    let mut kv = client.kv_client();
    let response = kv.get(key, None).await.expect("etcd get");
    response
        .kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.lease()))
}

/// Puts `value` at `key`.
pub async fn put(client: &Client, key: &str, value: Vec<u8>) {
    let mut kv = client.kv_client();
    kv.put(key, value, None).await.expect("etcd put");
}

/// Deletes `key`.
pub async fn delete(client: &Client, key: &str) {
    let mut kv = client.kv_client();
    kv.delete(key, None).await.expect("etcd delete");
}

/// Sends `tracing` output to the test's captured output (level from `RUST_LOG`, default warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
}

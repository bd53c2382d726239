//! The `signaling-node serve` processes a benchmark runs in cluster mode, each on free
//! loopback ports with its log in the run's private directory, killed when dropped (etcd comes
//! from the test kit).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal};
use switchboard_testkit::free_port;
use tokio::process::{Child, Command};

/// How to start nodes.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The `signaling-node` binary.
    pub bin: PathBuf,
    /// etcd client URL.
    pub etcd: String,
    /// Namespace and cluster of the keyspace.
    pub namespace: String,
    /// Cluster name.
    pub cluster: String,
    /// Shards rooms hash into.
    pub shards: u32,
    /// The JWT secret (also used by the bench to mint tokens).
    pub secret: String,
    /// Where logs go.
    pub dir: PathBuf,
}

/// One `signaling-node serve` process.
pub struct NodeProcess {
    /// Its pod name.
    pub name: String,
    /// Its WebSocket address.
    pub ws: SocketAddr,
    /// Its admin (metrics) address.
    pub admin: SocketAddr,
    child: Child,
}

impl NodeProcess {
    /// Starts node `name`.
    pub fn spawn(spec: &NodeSpec, name: &str) -> Result<Self> {
        let ws: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let log = std::fs::File::create(spec.dir.join(format!("{name}.log")))
            .context("creating a node log")?;
        let child = Command::new(&spec.bin)
            .arg("serve")
            .args(["--listen", &ws.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--node-name", name])
            .args(["--advertise-url", &format!("ws://{ws}/ws")])
            .args(["--shard-count", &spec.shards.to_string()])
            .args(["--jwt-secret", &spec.secret])
            .args(["--etcd-endpoints", &spec.etcd])
            .args(["--namespace", &spec.namespace, "--cluster", &spec.cluster])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", spec.bin.display()))?;
        Ok(Self {
            name: name.into(),
            ws,
            admin,
            child,
        })
    }

    /// The URL it advertises.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let raw = self.child.id().context("process already reaped")?;
        let pid = Pid::from_raw(i32::try_from(raw)?).context("pid 0")?;
        rustix::process::kill_process(pid, signal).context("kill")?;
        Ok(())
    }

    /// Waits until the process exited (reaps it).
    pub async fn wait(&mut self) -> Result<()> {
        self.child.wait().await?;
        Ok(())
    }

    /// The sum and count of a histogram (`name_sum`, `name_count`) from `/metrics`.
    pub async fn histogram(&self, name: &str) -> Result<(f64, f64)> {
        let body = http_get(self.admin, "/metrics").await?;
        let value = |suffix: &str| {
            let prefix = format!("{name}{suffix} ");
            body.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((value("_sum"), value("_count")))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A minimal HTTP/1.1 GET returning the body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

//! The processes a benchmark runs: one etcd server and `signaling-node serve` nodes in cluster
//! mode, each on free loopback ports with its log in the run's private directory; every one
//! is killed when dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A free loopback port (closed again; the caller binds it soon after).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("binding a free port")?
        .local_addr()?
        .port())
}

/// A running etcd server.
pub struct EtcdProcess {
    child: Child,
    endpoint: String,
}

impl EtcdProcess {
    /// Starts `bin` with its data in `dir/etcd`; `fsync` false adds `--unsafe-no-fsync`.
    pub async fn start(bin: &Path, dir: &Path, fsync: bool) -> Result<Self> {
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).context("creating etcd.log")?;
        let mut command = Command::new(bin);
        command
            .arg("--name=bench")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=bench={peer_url}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if !fsync {
            command.arg("--unsafe-no-fsync");
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let etcd = Self { child, endpoint };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok(mut client)) = tokio::time::timeout(
                Duration::from_secs(1),
                etcd_client::Client::connect([etcd.endpoint.clone()], None),
            )
            .await
                && let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(1), client.status()).await
            {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not become ready; see {}",
                    dir.join("etcd.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The client URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client of this server.
    pub async fn client(&self) -> Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect([self.endpoint.clone()], None).await?)
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

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
        let ws: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
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

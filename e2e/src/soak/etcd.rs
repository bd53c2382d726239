//! The fleet's etcd as a process the soak can restart with its data intact (the
//! `e2e/scripts/fleet-etcd` script wipes the data on stop, which would be a new etcd, not a
//! restart), and a fault-injecting TCP proxy in front of it that can blackhole one node.
//!
//! Nodes get `--etcd-endpoints http://0.0.0.0:<proxy port>`; the pod runner rewrites `0.0.0.0:`
//! to the pod's own loopback IP, so each node reaches the proxy at its own address and the
//! proxy tells nodes apart by the local address of the accepted connection. The proxy listens
//! on the wildcard address for that reason and closes every connection that did not arrive on
//! a loopback address.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::SoakError;

/// One etcd member on loopback with a persistent data directory.
pub struct FleetEtcd {
    bin: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// Next start must join the existing data (`--initial-cluster-state` only matters once).
    started_once: bool,
}

fn free_port() -> Result<u16, SoakError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(SoakError::io("a free port"))?;
    Ok(l.local_addr().map_err(SoakError::io("a free port"))?.port())
}

impl FleetEtcd {
    /// Starts etcd `bin` with data and log under `dir`; waits until it answers.
    pub async fn start(bin: PathBuf, dir: PathBuf) -> Result<Self, SoakError> {
        std::fs::create_dir_all(&dir).map_err(SoakError::io(dir.display().to_string()))?;
        let mut etcd = Self {
            bin,
            data_dir: dir.join("fleet-etcd"),
            log: dir.join("fleet-etcd.log"),
            client_port: free_port()?,
            peer_port: free_port()?,
            child: None,
            started_once: false,
        };
        etcd.spawn().await?;
        Ok(etcd)
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    async fn spawn(&mut self) -> Result<(), SoakError> {
        let url = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(SoakError::io(self.log.display().to_string()))?;
        let err = log.try_clone().map_err(SoakError::io("etcd log"))?;
        let child = Command::new(&self.bin)
            .arg("--name=fleet")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=fleet={peer}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(SoakError::io(format!("starting {}", self.bin.display())))?;
        self.child = Some(child);
        self.started_once = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                etcd_client::Client::connect([url.as_str()], None),
            )
            .await
                && tokio::time::timeout(Duration::from_secs(1), c.status())
                    .await
                    .is_ok_and(|s| s.is_ok())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(SoakError::Timeout {
            what: format!("fleet etcd at {url}"),
            timeout: Duration::from_secs(30),
        })
    }

    /// Kills etcd (SIGKILL) if it runs.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills etcd (SIGKILL), keeps it down for `down`, starts it again on the same data.
    pub async fn restart(&mut self, down: Duration) -> Result<(), SoakError> {
        self.stop();
        tokio::time::sleep(down).await;
        debug_assert!(self.started_once);
        self.spawn().await
    }
}

impl Drop for FleetEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy to etcd that can blackhole the nodes on chosen loopback IPs: their open
/// connections stop moving bytes (held open, like a dead network), new ones are accepted and
/// never forwarded; on heal the held connections are closed so the node reconnects.
pub struct EtcdProxy {
    port: u16,
    blackholed: watch::Sender<BTreeSet<IpAddr>>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<u64>>,
}

impl EtcdProxy {
    /// Listens on the wildcard address (see the module docs) on a free port.
    pub async fn start(upstream: SocketAddr) -> Result<Self, SoakError> {
        let listener = TcpListener::bind("0.0.0.0:0")
            .await
            .map_err(SoakError::io("binding the etcd proxy"))?;
        let port = listener
            .local_addr()
            .map_err(SoakError::io("etcd proxy address"))?
            .port();
        let (blackholed, rx) = watch::channel(BTreeSet::new());
        let conns = Arc::new(Mutex::new(0));
        let counter = conns.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(local) = client.local_addr() else {
                    continue;
                };
                if !local.ip().is_loopback() {
                    drop(client);
                    continue;
                }
                if let Ok(mut n) = counter.lock() {
                    *n += 1;
                }
                tokio::spawn(pipe(client, upstream, local.ip(), rx.clone()));
            }
        });
        Ok(Self {
            port,
            blackholed,
            accept,
            conns,
        })
    }

    /// What nodes get as their etcd endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://0.0.0.0:{}", self.port)
    }

    /// The proxy's loopback URL (for the operator and tools).
    pub fn loopback_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts `ip` off from etcd.
    pub fn blackhole(&self, ip: IpAddr) {
        self.blackholed.send_modify(|set| {
            set.insert(ip);
        });
    }

    /// Lets `ip` reach etcd again.
    pub fn heal(&self, ip: IpAddr) {
        self.blackholed.send_modify(|set| {
            set.remove(&ip);
        });
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.conns.lock().map(|n| *n).unwrap_or(0)
    }
}

impl Drop for EtcdProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards one connection while `ip` is not blackholed.
async fn pipe(
    mut client: TcpStream,
    upstream: SocketAddr,
    ip: IpAddr,
    mut rx: watch::Receiver<BTreeSet<IpAddr>>,
) {
    let cut = |rx: &watch::Receiver<BTreeSet<IpAddr>>| rx.borrow().contains(&ip);
    if cut(&rx) {
        // Accepted, never answered; closed when healed.
        let _ = rx.wait_for(|set| !set.contains(&ip)).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut a = [0u8; 16 * 1024];
    let mut b = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                if cut(&rx) {
                    // Hold both sockets silent until healed, then drop them.
                    let _ = rx.wait_for(|set| !set.contains(&ip)).await;
                    return;
                }
            }
            n = cr.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&a[..n]).await.is_err() { return },
            },
            n = sr.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&b[..n]).await.is_err() { return },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server standing in for etcd.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream) -> bool {
        if s.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await,
            Ok(Ok(4))
        )
    }

    #[tokio::test]
    async fn a_blackholed_ip_is_silent_and_others_are_not() {
        let proxy = EtcdProxy::start(echo().await).await.expect("proxy");
        let cut: IpAddr = [127, 0, 0, 7].into();
        let mut a = TcpStream::connect((cut, proxy.port)).await.expect("a");
        let mut b = TcpStream::connect(("127.0.0.1", proxy.port))
            .await
            .expect("b");
        assert!(roundtrip(&mut a).await && roundtrip(&mut b).await);
        proxy.blackhole(cut);
        assert!(
            !roundtrip(&mut a).await,
            "the cut node's open connection is silent"
        );
        assert!(roundtrip(&mut b).await, "other nodes still reach etcd");
        let mut c = TcpStream::connect((cut, proxy.port)).await.expect("c");
        assert!(
            !roundtrip(&mut c).await,
            "a new connection from the cut node is silent"
        );
        proxy.heal(cut);
        let mut d = TcpStream::connect((cut, proxy.port)).await.expect("d");
        assert!(roundtrip(&mut d).await, "healed");
        assert!(proxy.connections() >= 4);
    }
}

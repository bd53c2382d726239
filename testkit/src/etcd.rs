//! A real etcd server process on free loopback ports, and small key-value helpers for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Certificate, Client, ConnectOptions, Identity, TlsOptions,
};
use tokio::time::Instant;

use crate::dirs::TempDir;
use crate::error::{Error, io, log_tail};
use crate::net::free_ports;
use crate::pki::Pki;
use crate::tools;
use crate::wait::patience;

/// How to run an [`Etcd`].
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// fsync every commit, as in production (benchmarks); off: `--unsafe-no-fsync`, since
    /// durability across a machine crash is not what tests check.
    pub fsync: bool,
    /// Serve clients over TLS and require client certificates ([`Pki`] made in its directory).
    pub tls: bool,
    /// Keep data and log in this directory (it is not removed); default: a [`TempDir`].
    pub dir: Option<PathBuf>,
    /// The etcd binary; default: where [`tools::etcd_bin`] finds it.
    pub bin: Option<PathBuf>,
}

enum Dir {
    Temp(TempDir),
    Given(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(dir) => dir.path(),
            Dir::Given(path) => path,
        }
    }
}

/// A running etcd server, killed on drop.
pub struct Etcd {
    bin: PathBuf,
    dir: Dir,
    client_port: u16,
    peer_port: u16,
    fsync: bool,
    tls: Option<Pki>,
    child: Option<Child>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoint", &self.endpoint())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Starts etcd without fsync; panics if it cannot (tests).
    pub async fn start() -> Self {
        Self::start_with(EtcdOptions::default()).await
    }

    /// Starts etcd with fsync on every commit, as in production; panics if it cannot.
    pub async fn start_durable() -> Self {
        Self::start_with(EtcdOptions {
            fsync: true,
            ..EtcdOptions::default()
        })
        .await
    }

    /// Starts etcd serving clients over TLS with client certificates; panics if it cannot.
    pub async fn start_tls() -> Self {
        Self::start_with(EtcdOptions {
            tls: true,
            ..EtcdOptions::default()
        })
        .await
    }

    /// Starts etcd as `options` say; panics if it cannot.
    pub async fn start_with(options: EtcdOptions) -> Self {
        Self::try_start(options)
            .await
            .unwrap_or_else(|e| panic!("starting etcd: {e}"))
    }

    /// Starts etcd as `options` say and waits until it answers.
    pub async fn try_start(options: EtcdOptions) -> Result<Self, Error> {
        let bin = match options.bin {
            Some(bin) => bin,
            None => tools::etcd_bin()?,
        };
        let dir = match options.dir {
            Some(path) => {
                std::fs::create_dir_all(&path)
                    .map_err(io(format!("creating {}", path.display())))?;
                Dir::Given(path)
            }
            None => Dir::Temp(TempDir::new("etcd")?),
        };
        let [client_port, peer_port] = free_ports::<2>();
        let tls = if options.tls {
            Some(Pki::generate(dir.path())?)
        } else {
            None
        };
        let mut etcd = Self {
            bin,
            dir,
            client_port,
            peer_port,
            fsync: options.fsync,
            tls,
            child: None,
        };
        etcd.spawn().await?;
        Ok(etcd)
    }

    /// The certificates of a TLS server.
    pub fn tls(&self) -> Option<&Pki> {
        self.tls.as_ref()
    }

    /// The client URL (`http://127.0.0.1:<port>`, `https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The directory holding its data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connect options for this server (its CA and the client certificate with TLS).
    pub fn connect_options(&self) -> Option<ConnectOptions> {
        self.tls.as_ref().map(|tls| {
            let read = |p: &Path| std::fs::read(p).unwrap_or_default();
            ConnectOptions::new().with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(read(&tls.ca)))
                    .identity(Identity::from_pem(
                        read(&tls.client_cert),
                        read(&tls.client_key),
                    )),
            )
        })
    }

    /// A client connected to this server; panics if it cannot connect.
    pub async fn client(&self) -> Client {
        self.try_client()
            .await
            .unwrap_or_else(|e| panic!("connecting to etcd: {e}"))
    }

    /// A client connected to this server.
    pub async fn try_client(&self) -> Result<Client, Error> {
        Client::connect([self.endpoint()], self.connect_options())
            .await
            .map_err(|e| Error::Client {
                what: "etcd client",
                detail: e.to_string(),
            })
    }

    /// Kills the server (SIGKILL) and waits for it to exit; the data is kept.
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
        let pid = self.child.as_ref().expect("etcd is running").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Raises (`true`) or disarms (`false`) the NOSPACE alarm, the alarm etcd raises itself
    /// when its space quota is full: while it is up every write is refused with "mvcc:
    /// database space exceeded". Panics if etcd does not take it.
    pub async fn set_space_full(&self, full: bool) {
        let action = if full {
            AlarmAction::Activate
        } else {
            AlarmAction::Deactivate
        };
        let mut maintenance = self.client().await.maintenance_client();
        let status = maintenance.status().await.expect("etcd status");
        let mut options = AlarmOptions::new();
        options.with_member(status.header().expect("a response header").member_id());
        maintenance
            .alarm(action, AlarmType::Nospace, Some(options))
            .await
            .unwrap_or_else(|e| panic!("etcd alarm {action:?}: {e}"));
    }

    /// Starts the server again on the same ports and data; panics if it cannot.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn().await {
            panic!("restarting etcd: {e}");
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    async fn spawn(&mut self) -> Result<(), Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io("opening etcd.log"))?;
        let log_err = log.try_clone().map_err(io("opening etcd.log"))?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(&self.bin);
        command
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if !self.fsync {
            command.arg("--unsafe-no-fsync");
        }
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .spawn()
            .map_err(io(format!("starting {}", self.bin.display())))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + patience();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::Exited {
                    name: "etcd",
                    status,
                    path: self.log_path(),
                    log: log_tail(&self.log_path(), 4000),
                });
            }
            if let Ok(Ok(mut client)) =
                tokio::time::timeout(Duration::from_secs(1), self.try_client()).await
                && let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(1), client.status()).await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    name: "etcd",
                    after: patience(),
                    path: self.log_path(),
                    log: log_tail(&self.log_path(), 4000),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
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

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

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
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
    tls: Option<TlsFiles>,
    child: Option<Child>,
}

/// PEM files of a throwaway PKI: a CA, an etcd server certificate for 127.0.0.1 and a client
/// certificate, all signed by the CA.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate and key.
    pub server_cert: PathBuf,
    /// The server key.
    pub server_key: PathBuf,
    /// The client certificate.
    pub client_cert: PathBuf,
    /// The client key.
    pub client_key: PathBuf,
}

/// Generates [`TlsFiles`] in `dir` with the `openssl` command.
pub fn generate_tls(dir: &Path) -> TlsFiles {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (installed by e2e/scripts/install-deps)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_args = [
        &["req", "-x509"][..],
        &key,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=switchboard-test-ca",
        ],
    ]
    .concat();
    openssl(&ca_args);
    for (name, usage) in [
        ("server", "serverAuth,clientAuth"),
        ("client", "clientAuth"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"),
        )
        .expect("write extension file");
        let subject = format!("/CN={name}");
        let (key_file, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let req = [
            &["req"][..],
            &key,
            &["-keyout", &key_file, "-out", &csr, "-subj", &subject],
        ]
        .concat();
        openssl(&req);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
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

    /// Starts etcd serving clients over TLS and requiring client certificates.
    pub async fn start_tls() -> Self {
        Self::start_inner(false, true).await
    }

    /// The PKI of a TLS server.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    async fn start_with(fsync: bool) -> Self {
        Self::start_inner(fsync, false).await
    }

    async fn start_inner(fsync: bool, tls: bool) -> Self {
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
        let tls = tls.then(|| generate_tls(&dir));
        let mut etcd = Self {
            bin,
            dir,
            client_port,
            peer_port,
            fsync,
            tls,
            child: None,
        };
        etcd.spawn().await;
        etcd
    }

    /// The client URL (`http://127.0.0.1:<port>`, `https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Connect options for this server (its CA and client certificate with TLS).
    pub fn connect_options(&self) -> Option<ConnectOptions> {
        self.tls.as_ref().map(|tls| {
            let read = |p: &Path| std::fs::read(p).expect("read PEM");
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

    /// A client connected to this server.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], self.connect_options())
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
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
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
                Client::connect([self.endpoint()], self.connect_options()),
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
    // Run-time manifest dir first: a cached test binary may come from another checkout.
    let built = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../e2e/.tools/bin/etcd");
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

//! Clients outside the cluster, for the outside-access scenarios and `outside-bench`: the
//! certificates clients check, the `spec.clientAccess` of the sample fleet in its two modes
//! (node ports with TLS on the nodes; Traefik with TLS at the proxy), the `outside-client`
//! pair as a process in the client network namespace, and probes run from that namespace
//! (is an address reachable, which certificate does a handshake get).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use switchboard_testkit::{Pki, ServerCert, TempDir};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::real_node::RealCluster;

/// The name outside clients use for the node's external address (`e2e/scripts/node`).
pub const EXTERNAL_HOST: &str = "signal.switchboard.test";
/// The entry Service's node port in the node-port mode.
pub const ENTRY_NODE_PORT: u16 = 30700;
/// Traefik's node port (`e2e/manifests/traefik.yaml`).
pub const INGRESS_NODE_PORT: u16 = 30443;

/// Wall-clock milliseconds since the Unix epoch (what `outside-client` stamps its lines with).
pub fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A CA and the server certificates issued from it, in a private directory.
pub struct Certificates {
    dir: TempDir,
    /// The CA certificate clients trust.
    pub ca: PathBuf,
}

impl Certificates {
    /// A fresh CA.
    pub fn new() -> Result<Self, String> {
        let dir = TempDir::new("outside-pki").map_err(|e| e.to_string())?;
        let pki = Pki::generate(dir.path()).map_err(|e| e.to_string())?;
        Ok(Self { ca: pki.ca, dir })
    }

    /// A server certificate for `sans` (openssl syntax, e.g. `DNS:signal.switchboard.test`).
    pub fn issue(&self, name: &str, sans: &str) -> Result<ServerCert, String> {
        Pki::issue_server(self.dir.path(), name, sans).map_err(|e| e.to_string())
    }

    /// A file in the directory (for a join-token key the outside processes read).
    pub fn file(&self, name: &str, contents: &[u8]) -> Result<PathBuf, String> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// A `kubernetes.io/tls` Secret manifest holding `cert`.
pub fn tls_secret(name: &str, namespace: &str, cert: &ServerCert) -> Result<Value, String> {
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()));
    Ok(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"tls.crt": read(&cert.cert)?, "tls.key": read(&cert.key)?},
    }))
}

/// Node-port mode: the entry Service on [`ENTRY_NODE_PORT`], one NodePort Service per node,
/// the nodes serving `wss://` with the certificate of Secret `secret`.
pub fn node_port_access(secret: &str) -> Value {
    json!({
        "entryUrl": format!("wss://{EXTERNAL_HOST}:{ENTRY_NODE_PORT}/ws"),
        "nodeUrlTemplate": format!("wss://{EXTERNAL_HOST}:{{nodePort}}/ws"),
        "entryService": {"type": "NodePort", "nodePort": ENTRY_NODE_PORT},
        "nodeServices": {"type": "NodePort"},
        "tls": {"secretName": secret},
    })
}

/// Ingress mode: one host, a path per node, Traefik (class `traefik`) ending TLS with the
/// certificate of Secret `secret`.
pub fn ingress_access(secret: &str) -> Value {
    json!({
        "entryUrl": format!("wss://{EXTERNAL_HOST}:{INGRESS_NODE_PORT}/ws"),
        "nodeUrlTemplate": format!("wss://{EXTERNAL_HOST}:{INGRESS_NODE_PORT}/nodes/{{pod}}/ws"),
        "ingress": {"className": "traefik"},
        "tls": {"secretName": secret, "termination": "Ingress"},
    })
}

/// Runs `program args` in the client namespace; its stdout, or why it failed.
pub fn run_outside(cluster: &RealCluster, program: &str, args: &[&str]) -> Result<String, String> {
    let out = cluster
        .outside(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip netns exec {program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{program} {} failed ({}):\n{stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Opens a TCP connection to `addr:port` from the client namespace (3 s at most): `Ok(())`
/// when it connected, `Err` with the shell's error otherwise.
pub fn tcp_from_outside(cluster: &RealCluster, addr: &str, port: u16) -> Result<(), String> {
    let script = format!("exec 3<>/dev/tcp/{addr}/{port}");
    run_outside(cluster, "timeout", &["3", "bash", "-c", &script]).map(|_| ())
}

/// The SHA-256 fingerprint of the certificate a TLS handshake with `host:port` (SNI `host`)
/// gets from the client namespace.
pub fn served_fingerprint(cluster: &RealCluster, host: &str, port: u16) -> Result<String, String> {
    let script = format!(
        "openssl s_client -connect {host}:{port} -servername {host} </dev/null 2>/dev/null \
         | openssl x509 -noout -fingerprint -sha256"
    );
    run_outside(cluster, "timeout", &["10", "sh", "-c", &script]).map(|s| s.trim().to_string())
}

/// The SHA-256 fingerprint of a PEM certificate file, as [`served_fingerprint`] prints it.
pub fn file_fingerprint(cert: &Path) -> Result<String, String> {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `outside-client` co-host pair, running in the client namespace.
pub struct Pair {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line read so far.
    pub seen: Vec<Value>,
}

impl Pair {
    /// Starts `bin` (the `outside-client` binary) for `room` at `url`.
    pub fn spawn(
        cluster: &RealCluster,
        bin: &Path,
        url: &str,
        room: &str,
        secret_file: &Path,
        ca: &Path,
    ) -> Result<Self, String> {
        let mut command = tokio::process::Command::from(cluster.outside(bin));
        command
            .args(["--url", url, "--room", room, "--jwt-secret-file"])
            .arg(secret_file)
            .arg("--ca-file")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
        })
    }

    /// The next line (within `timeout`).
    pub async fn next(&mut self, timeout: Duration) -> Result<Value, String> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| format!("outside-client said nothing for {timeout:?}"))?
            .map_err(|e| format!("reading outside-client: {e}"))?
            .ok_or("outside-client exited")?;
        let value: Value = serde_json::from_str(&line)
            .map_err(|e| format!("outside-client line {line:?}: {e}"))?;
        self.seen.push(value.clone());
        if value["event"] == "failed" {
            return Err(format!("outside-client failed: {}", value["error"]));
        }
        Ok(value)
    }

    /// Reads lines until `pick` accepts one (within `timeout` overall).
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(format!("no {what} within {timeout:?}; saw {:?}", self.seen));
            }
            let line = self
                .next(left)
                .await
                .map_err(|e| format!("waiting for {what}: {e}"))?;
            if pick(&line) {
                return Ok(line);
            }
        }
    }

    /// Ends the call; the final report (`{"event": "ended", "problems": [...]}`).
    pub async fn hangup(mut self, timeout: Duration) -> Result<Value, String> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin
                .write_all(b"hangup\n")
                .await
                .map_err(|e| format!("telling outside-client to hang up: {e}"))?;
        }
        let ended = self
            .wait_for("the call's end", timeout, |l| l["event"] == "ended")
            .await?;
        let _ = tokio::time::timeout(timeout, self.child.wait()).await;
        Ok(ended)
    }
}

/// `user`'s Welcomes after `t0_ms` (a resume or move), from a pair's lines.
pub fn welcomes_after<'a>(seen: &'a [Value], user: &str, t0_ms: u128) -> Vec<&'a Value> {
    seen.iter()
        .filter(|l| l["event"] == "welcome" && l["user"] == user)
        .filter(|l| {
            l["at_ms"]
                .as_u64()
                .is_some_and(|at| u128::from(at) >= t0_ms)
        })
        .collect()
}

//! Runner configuration (what the `pod-runner run` flags become) and the file layout under the
//! run directory.
//!
//! Layout of `<run dir>` (`$SWITCHBOARD_RUN_DIR`, default `e2e/.run`):
//! - `pod-runner.ctl`: the control endpoint's address (`127.0.0.1:PORT`), written at start-up;
//! - `pods/<ns>_<pod>.log`: stdout and stderr of the pod's process, every restart appended
//!   after a `--- pod-runner:` banner line;
//! - `pods/<ns>_<pod>.pid`: pid (= process group) of the running process;
//! - `pods/<ns>_<pod>-<uid prefix>/`: the pod's directory: `volumes/<name>/`, `kubeconfig`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::addr::PodNetwork;
use super::image::ImageMap;
use super::lifecycle::BackoffPolicy;

/// Errors in configuration values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A duration is not `<number><unit>` with unit ms, s or m.
    #[error("duration {0:?} is not a number followed by ms, s or m (e.g. 500ms, 2s, 1m)")]
    BadDuration(String),
}

/// Parses `500ms`, `2s`, `1.5s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::BadDuration(s.to_string());
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(bad());
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 || value * scale > 86_400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Everything the runner needs to know.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Number of nodes to register.
    pub nodes: usize,
    /// Node name prefix (`runner` → `runner-0`, `runner-1`, …).
    pub node_prefix: String,
    /// Loopback network for nodes and pods.
    pub network: PodNetwork,
    /// Image → program map.
    pub images: ImageMap,
    /// Run directory.
    pub run_dir: PathBuf,
    /// Address of the control endpoint (port 0 picks a free one).
    pub control_listen: SocketAddr,
    /// Node lease renewal period.
    pub heartbeat: Duration,
    /// Node status period.
    pub node_status_every: Duration,
    /// Restart back-off.
    pub backoff: BackoffPolicy,
    /// Upper bound of readiness probe periods.
    pub max_probe_period: Duration,
    /// Node CPU capacity.
    pub cpu: String,
    /// Node memory capacity.
    pub memory: String,
    /// Node pod capacity.
    pub max_pods: String,
    /// How long the runner waits after SIGTERM to its pods before SIGKILL when it exits.
    pub shutdown_grace: Duration,
}

impl RunnerConfig {
    /// Name of node `index`.
    pub fn node_name(&self, index: usize) -> String {
        format!("{}-{index}", self.node_prefix)
    }

    /// Directory of pod logs, pid files and pod directories.
    pub fn pods_dir(&self) -> PathBuf {
        self.run_dir.join("pods")
    }

    /// File holding the control endpoint's address.
    pub fn control_file(&self) -> PathBuf {
        control_file(&self.run_dir)
    }
}

/// File holding the control endpoint's address in `run_dir`.
pub fn control_file(run_dir: &Path) -> PathBuf {
    run_dir.join("pod-runner.ctl")
}

/// File names of one pod under the pods directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPaths {
    /// Process output.
    pub log: PathBuf,
    /// Pid file.
    pub pid: PathBuf,
    /// The pod's own directory.
    pub dir: PathBuf,
}

impl PodPaths {
    /// Paths of pod `namespace/name` with `uid`.
    pub fn new(pods_dir: &Path, namespace: &str, name: &str, uid: &str) -> Self {
        let base = format!("{namespace}_{name}");
        let short: String = uid.chars().take(8).collect();
        Self {
            log: pods_dir.join(format!("{base}.log")),
            pid: pods_dir.join(format!("{base}.pid")),
            dir: pods_dir.join(format!("{base}-{short}")),
        }
    }

    /// Directory the pod's volumes are materialised in.
    pub fn volumes(&self) -> PathBuf {
        self.dir.join("volumes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "5", "s", "-1s", "1h", "NaNs", "1e9s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pod_paths() {
        let p = PodPaths::new(Path::new("/r/pods"), "live", "sig-0", "0123456789abcdef");
        assert_eq!(p.log, Path::new("/r/pods/live_sig-0.log"));
        assert_eq!(p.pid, Path::new("/r/pods/live_sig-0.pid"));
        assert_eq!(
            p.volumes(),
            Path::new("/r/pods/live_sig-0-01234567/volumes")
        );
    }
}

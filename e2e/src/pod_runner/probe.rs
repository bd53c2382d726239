//! Readiness probes: the probe's spec resolved against the container (named ports, defaults),
//! the pure success/failure threshold tracker, and the network checks (`httpGet` on the pod's
//! address, `tcpSocket`). `exec` and `grpc` probes are not supported and never succeed (the
//! runner logs why), so a pod using them stays not ready rather than pretending.
//!
//! The period is the probe's `periodSeconds`, capped by the runner's `--max-probe-period`
//! (tests want readiness within a second, not the API default of ten).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::http;

/// Errors resolving a probe spec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// The probe names a port the container does not declare.
    #[error("probe port {0:?} is not a container port name")]
    UnknownPort(String),
    /// The port number is out of range.
    #[error("probe port {0} is not in 1..=65535")]
    BadPort(i32),
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// HTTP GET; success is a status in 200..400.
    Http {
        /// Host to connect to; the pod IP when absent.
        host: Option<String>,
        /// Port.
        port: u16,
        /// Request path.
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
        /// `HTTPS` is not supported (the probe fails).
        https: bool,
    },
    /// TCP connect; success is an accepted connection.
    Tcp {
        /// Host to connect to; the pod IP when absent.
        host: Option<String>,
        /// Port.
        port: u16,
    },
    /// A probe kind the runner does not implement.
    Unsupported(&'static str),
}

/// A resolved readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The check.
    pub action: ProbeAction,
    /// Delay after start before the first check.
    pub initial_delay: Duration,
    /// Time between checks.
    pub period: Duration,
    /// Time a single check may take.
    pub timeout: Duration,
    /// Consecutive successes to become ready.
    pub success_threshold: u32,
    /// Consecutive failures to become not ready.
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default)).unwrap_or(0))
}

fn threshold(v: Option<i32>, default: i32) -> u32 {
    u32::try_from(v.unwrap_or(default)).unwrap_or(1).max(1)
}

fn resolve_port(container: &Container, port: &IntOrString) -> Result<u16, ProbeError> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<i32>() {
                n
            } else {
                container
                    .ports
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| p.container_port)
                    .ok_or_else(|| ProbeError::UnknownPort(name.clone()))?
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(ProbeError::BadPort(number))
}

/// The container's readiness probe, if it has one.
pub fn readiness_spec(
    container: &Container,
    max_period: Duration,
) -> Result<Option<ProbeSpec>, ProbeError> {
    let Some(probe) = container.readiness_probe.as_ref() else {
        return Ok(None);
    };
    spec(container, probe, max_period).map(Some)
}

fn spec(
    container: &Container,
    probe: &Probe,
    max_period: Duration,
) -> Result<ProbeSpec, ProbeError> {
    let action = if let Some(h) = &probe.http_get {
        ProbeAction::Http {
            host: h.host.clone().filter(|s| !s.is_empty()),
            port: resolve_port(container, &h.port)?,
            path: h
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
            headers: h
                .http_headers
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            https: h.scheme.as_deref() == Some("HTTPS"),
        }
    } else if let Some(t) = &probe.tcp_socket {
        ProbeAction::Tcp {
            host: t.host.clone().filter(|s| !s.is_empty()),
            port: resolve_port(container, &t.port)?,
        }
    } else if probe.exec.is_some() {
        ProbeAction::Unsupported("exec")
    } else {
        ProbeAction::Unsupported("grpc")
    };
    Ok(ProbeSpec {
        action,
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10)
            .min(max_period)
            .max(Duration::from_millis(100)),
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_millis(100)),
        success_threshold: threshold(probe.success_threshold, 1),
        failure_threshold: threshold(probe.failure_threshold, 3),
    })
}

/// Consecutive-result tracking; starts not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    ready: bool,
    successes: u32,
    failures: u32,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Readiness {
    /// A tracker with the probe's thresholds.
    pub fn new(success_threshold: u32, failure_threshold: u32) -> Self {
        Self {
            ready: false,
            successes: 0,
            failures: 0,
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
        }
    }

    /// Records a probe result; returns whether readiness changed.
    pub fn record(&mut self, ok: bool) -> bool {
        let before = self.ready;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.success_threshold {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.failure_threshold {
                self.ready = false;
            }
        }
        before != self.ready
    }

    /// Current readiness.
    pub fn is_ready(&self) -> bool {
        self.ready
    }
}

async fn target(host: Option<&str>, pod_ip: Ipv4Addr, port: u16) -> Option<SocketAddr> {
    match host {
        None => Some(SocketAddr::from((pod_ip, port))),
        Some(h) => tokio::net::lookup_host((h, port)).await.ok()?.next(),
    }
}

/// Runs one check; `Err` carries a short reason for the log.
pub async fn check(
    action: &ProbeAction,
    pod_ip: Ipv4Addr,
    timeout: Duration,
) -> Result<(), String> {
    match action {
        ProbeAction::Http {
            host,
            port,
            path,
            headers,
            https,
        } => {
            if *https {
                return Err("HTTPS probes are not supported by the pod runner".into());
            }
            let addr = target(host.as_deref(), pod_ip, *port)
                .await
                .ok_or_else(|| format!("cannot resolve probe host {host:?}"))?;
            let mut headers = headers.clone();
            headers.push(("X-Probe".into(), "readiness".into()));
            let r = http::request(addr, "GET", path, &headers, b"", timeout)
                .await
                .map_err(|e| e.to_string())?;
            if (200..400).contains(&r.status) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with status {}", r.status))
            }
        }
        ProbeAction::Tcp { host, port } => {
            let addr = target(host.as_deref(), pod_ip, *port)
                .await
                .ok_or_else(|| format!("cannot resolve probe host {host:?}"))?;
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| format!("TCP probe to {addr} timed out"))?
                .map(drop)
                .map_err(|e| format!("TCP probe to {addr}: {e}"))
        }
        ProbeAction::Unsupported(kind) => {
            Err(format!("{kind} probes are not supported by the pod runner"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Container {
        serde_yaml::from_str(yaml).expect("test container parses")
    }

    #[test]
    fn resolves_named_ports_defaults_and_period_cap() {
        let c = container(
            "{name: c, ports: [{name: admin, containerPort: 9100}], readinessProbe: {httpGet: {port: admin, path: /readyz}, periodSeconds: 10}}",
        );
        let spec = readiness_spec(&c, Duration::from_secs(1)).unwrap().unwrap();
        assert_eq!(
            spec.action,
            ProbeAction::Http {
                host: None,
                port: 9100,
                path: "/readyz".into(),
                headers: vec![],
                https: false
            }
        );
        assert_eq!(spec.period, Duration::from_secs(1));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));
        let c = container(
            "{name: c, readinessProbe: {tcpSocket: {port: 7000}, periodSeconds: 2, failureThreshold: 1}}",
        );
        let spec = readiness_spec(&c, Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(
            spec.action,
            ProbeAction::Tcp {
                host: None,
                port: 7000
            }
        );
        assert_eq!(
            (spec.period, spec.failure_threshold),
            (Duration::from_secs(2), 1)
        );
        assert_eq!(
            readiness_spec(&container("{name: c}"), Duration::from_secs(1)),
            Ok(None)
        );
    }

    #[test]
    fn bad_ports_are_errors() {
        let c = container("{name: c, readinessProbe: {httpGet: {port: nope}}}");
        assert_eq!(
            readiness_spec(&c, Duration::from_secs(1)),
            Err(ProbeError::UnknownPort("nope".into()))
        );
        let c = container("{name: c, readinessProbe: {httpGet: {port: 70000}}}");
        assert_eq!(
            readiness_spec(&c, Duration::from_secs(1)),
            Err(ProbeError::BadPort(70000))
        );
    }

    #[test]
    fn readiness_follows_thresholds() {
        let mut r = Readiness::new(2, 2);
        assert!(!r.record(true));
        assert!(r.record(true));
        assert!(r.is_ready());
        assert!(!r.record(false));
        assert!(!r.record(true), "a success resets the failure count");
        assert!(!r.record(false));
        assert!(r.record(false));
        assert!(!r.is_ready());
    }

    #[tokio::test]
    async fn checks_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = ProbeAction::Tcp { host: None, port };
        assert!(
            check(&tcp, Ipv4Addr::LOCALHOST, Duration::from_secs(1))
                .await
                .is_ok()
        );
        drop(listener);
        assert!(
            check(&tcp, Ipv4Addr::LOCALHOST, Duration::from_secs(1))
                .await
                .is_err()
        );
        let exec = ProbeAction::Unsupported("exec");
        assert!(
            check(&exec, Ipv4Addr::LOCALHOST, Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}

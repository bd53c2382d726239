//! The failure-simulation control surface: a small HTTP endpoint on loopback, and its client
//! (what `pod-runner ctl` calls).
//!
//! - `GET /state` → JSON: nodes (name, host IP, dark) and pods (namespace, name, uid, node, IP,
//!   pid, phase, ready, restarts, frozen).
//! - `POST /ctl/{action}?target=T[&processes=freeze|kill|keep]` where `T` is a node name,
//!   `namespace/pod` or a unique pod name:
//!   - `dark` (node): stop lease renewals, node status and pod status updates, and ignore API
//!     changes for the node's pods; its processes are frozen (SIGSTOP, the default), killed
//!     (SIGKILL: a crashed machine) or kept running (`keep`: a control-plane partition);
//!   - `resume` (node or pod): heartbeats and reports resume, processes are thawed (SIGCONT),
//!     killed ones restart per their restart policy, and the node catches up with the API;
//!   - `freeze` (node or pod): SIGSTOP only, heartbeats continue (a hung process: its
//!     readiness probe fails and the pod turns not ready);
//!   - `kill` (node or pod): SIGKILL the processes (a crash; the restart policy applies).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::http;
use super::registry::{PodCommand, Registry, State, Target};

/// Errors of the control surface and its client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Binding the endpoint failed.
    #[error("binding control endpoint {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The request failed on the network.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// The runner refused the request.
    #[error("pod-runner answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The `/state` answer is not the expected JSON.
    #[error("bad /state answer: {0}")]
    BadState(#[from] serde_json::Error),
}

/// Control actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Node goes dark.
    Dark,
    /// Node or pod resumes.
    Resume,
    /// SIGSTOP.
    Freeze,
    /// SIGKILL.
    Kill,
}

impl Action {
    /// Parses the URL spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dark" => Some(Self::Dark),
            "resume" => Some(Self::Resume),
            "freeze" => Some(Self::Freeze),
            "kill" => Some(Self::Kill),
            _ => None,
        }
    }

    /// The URL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dark => "dark",
            Self::Resume => "resume",
            Self::Freeze => "freeze",
            Self::Kill => "kill",
        }
    }
}

/// What a dark node does with its processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DarkProcesses {
    /// SIGSTOP them (default).
    #[default]
    Freeze,
    /// SIGKILL them.
    Kill,
    /// Leave them running.
    Keep,
}

impl DarkProcesses {
    /// Parses the query spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "freeze" => Some(Self::Freeze),
            "kill" => Some(Self::Kill),
            "keep" => Some(Self::Keep),
            _ => None,
        }
    }

    /// The query spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Freeze => "freeze",
            Self::Kill => "kill",
            Self::Keep => "keep",
        }
    }
}

#[derive(Debug, Deserialize)]
struct CtlQuery {
    target: String,
    processes: Option<String>,
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body + "\n",
    )
        .into_response()
}

/// Carries out `action` on `target`; returns a one-line summary.
pub fn perform(
    registry: &Registry,
    action: Action,
    target: &str,
    processes: DarkProcesses,
) -> Result<String, (StatusCode, String)> {
    let resolved = registry
        .resolve(target)
        .map_err(|e| (StatusCode::NOT_FOUND, e.to_string()))?;
    let command = match (action, &resolved) {
        (Action::Dark, Target::Pod(_)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("dark applies to nodes; {target:?} is a pod (use freeze or kill)"),
            ));
        }
        (Action::Dark, Target::Node(node)) => {
            registry.set_dark(node, true);
            match processes {
                DarkProcesses::Freeze => Some(PodCommand::Freeze),
                DarkProcesses::Kill => Some(PodCommand::Kill),
                DarkProcesses::Keep => None,
            }
        }
        (Action::Resume, Target::Node(node)) => {
            registry.set_dark(node, false);
            Some(PodCommand::Thaw)
        }
        (Action::Resume, Target::Pod(_)) => Some(PodCommand::Thaw),
        (Action::Freeze, _) => Some(PodCommand::Freeze),
        (Action::Kill, _) => Some(PodCommand::Kill),
    };
    let mut sent = 0;
    if let Some(cmd) = command {
        for tx in registry.senders(&resolved) {
            tx.try_send(cmd).map_err(|e| {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("pod worker busy: {e}"),
                )
            })?;
            sent += 1;
        }
    }
    Ok(match action {
        Action::Dark => format!("{target} is dark ({} {sent} pod(s))", processes.as_str()),
        _ => format!("{} {target}: {sent} pod(s)", action.as_str()),
    })
}

async fn ctl(
    AxumState(registry): AxumState<Arc<Registry>>,
    Path(action): Path<String>,
    Query(q): Query<CtlQuery>,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("unknown action {action:?} (dark, resume, freeze, kill)"),
        );
    };
    let processes = match q.processes.as_deref().map(DarkProcesses::parse) {
        None => DarkProcesses::default(),
        Some(Some(p)) => p,
        Some(None) => {
            return text(
                StatusCode::BAD_REQUEST,
                "processes must be freeze, kill or keep".into(),
            );
        }
    };
    match perform(&registry, action, &q.target, processes) {
        Ok(summary) => {
            tracing::info!(%summary, "control");
            text(StatusCode::OK, summary)
        }
        Err((status, message)) => text(status, message),
    }
}

async fn state(AxumState(registry): AxumState<Arc<Registry>>) -> Response {
    match serde_json::to_string(&registry.state()) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Binds the control endpoint; returns its address and the server future.
pub async fn bind(
    addr: SocketAddr,
    registry: Arc<Registry>,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = std::io::Result<()>>,
    ),
    ControlError,
> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ControlError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ControlError::Bind { addr, source })?;
    let app = Router::new()
        .route("/state", get(state))
        .route("/ctl/{action}", post(ctl))
        .with_state(registry);
    Ok((local, async move { axum::serve(listener, app).await }))
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Client: performs `action` on `target` at the runner listening on `addr`.
pub async fn request(
    addr: SocketAddr,
    action: Action,
    target: &str,
    processes: Option<DarkProcesses>,
) -> Result<String, ControlError> {
    let mut path = format!("/ctl/{}?target={}", action.as_str(), encode(target));
    if let Some(p) = processes {
        path.push_str(&format!("&processes={}", p.as_str()));
    }
    let r = http::request(addr, "POST", &path, &[], b"", CLIENT_TIMEOUT).await?;
    let message = String::from_utf8_lossy(&r.body).trim().to_string();
    if r.status == 200 {
        Ok(message)
    } else {
        Err(ControlError::Refused {
            status: r.status,
            message,
        })
    }
}

/// Client: the runner's `/state`.
pub async fn fetch_state(addr: SocketAddr) -> Result<State, ControlError> {
    let r = http::request(addr, "GET", "/state", &[], b"", CLIENT_TIMEOUT).await?;
    if r.status != 200 {
        return Err(ControlError::Refused {
            status: r.status,
            message: String::from_utf8_lossy(&r.body).trim().to_string(),
        });
    }
    Ok(serde_json::from_slice(&r.body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_runner::registry::PodInfo;
    use std::net::Ipv4Addr;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn endpoint_drives_the_registry() {
        let registry = Arc::new(Registry::default());
        let mut dark = registry.add_node("runner-0", Ipv4Addr::new(127, 0, 1, 1));
        let (tx, mut rx) = mpsc::channel(8);
        registry.add_pod(
            PodInfo {
                namespace: "live".into(),
                name: "sig-0".into(),
                uid: "u1".into(),
                node: "runner-0".into(),
                ..Default::default()
            },
            tx,
        );
        let (addr, server) = bind("127.0.0.1:0".parse().unwrap(), registry.clone())
            .await
            .unwrap();
        let server = tokio::spawn(server);

        let msg = request(addr, Action::Dark, "runner-0", Some(DarkProcesses::Kill))
            .await
            .unwrap();
        assert!(msg.contains("dark"), "{msg}");
        assert!(*dark.borrow_and_update());
        assert_eq!(rx.recv().await, Some(PodCommand::Kill));

        request(addr, Action::Resume, "runner-0", None)
            .await
            .unwrap();
        assert!(!*dark.borrow_and_update());
        assert_eq!(rx.recv().await, Some(PodCommand::Thaw));

        request(addr, Action::Freeze, "live/sig-0", None)
            .await
            .unwrap();
        assert_eq!(rx.recv().await, Some(PodCommand::Freeze));

        let err = request(addr, Action::Dark, "sig-0", None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ControlError::Refused { status: 400, .. }),
            "{err}"
        );
        let err = request(addr, Action::Kill, "nope", None).await.unwrap_err();
        assert!(
            matches!(err, ControlError::Refused { status: 404, .. }),
            "{err}"
        );

        let state = fetch_state(addr).await.unwrap();
        assert_eq!(state.nodes[0].name, "runner-0");
        assert_eq!(state.pods[0].name, "sig-0");
        server.abort();
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode("live/sig-0"), "live%2Fsig-0");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}

//! The container lifecycle of one pod as a pure state machine: what the pod's phase is, what
//! the container state and last state are, and whether and when an exited process restarts.
//!
//! Inputs are events with their wall-clock time (`started`, `exited`, `cannot_start`,
//! `delete_requested`); outputs are [`Decision`]s and the values the status report shows. No I/O
//! and no clock: the worker passes the time in, tests pass fixed timestamps.
//!
//! Rules (those of a kubelet): `restartPolicy` Always restarts every exit, OnFailure restarts
//! non-zero exits, Never restarts nothing. Restarts back off exponentially: the first one is
//! immediate, then `initial`, `2 × initial`, … up to `max`; a container that ran for at least
//! `reset_after` starts the sequence again. A restart increments `restartCount` when the new
//! process starts. Phase: Pending until the first start; Running while a container runs or will
//! restart; Succeeded / Failed once it exited for good (exit code 0 / not 0). A deletion stops
//! restarts; the final exit decides Succeeded or Failed.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart every exit (the default).
    Always,
    /// Restart exits with a non-zero code.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses the pod spec value; absent or unknown means Always (the API default).
    pub fn from_spec(value: Option<&str>) -> Self {
        match value {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }
}

/// Restart back-off parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay before the second restart (the first one is immediate).
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// A run at least this long resets the back-off sequence.
    pub reset_after: Duration,
}

impl BackoffPolicy {
    /// Delay before a restart after `streak` earlier quick exits.
    pub fn delay(&self, streak: u32) -> Duration {
        if streak == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(streak - 1).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// One finished run of the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Exit code; `128 + signal` when a signal ended the process (as container runtimes report).
    pub exit_code: i32,
    /// The signal that ended the process, if any.
    pub signal: Option<i32>,
    /// When the run started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
}

impl Termination {
    /// `Completed` for exit code 0, `Error` otherwise (the runtime's reasons).
    pub fn reason(&self) -> &'static str {
        if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// The container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not running: being prepared, unable to start, or backing off.
    Waiting {
        /// Machine-readable reason (`ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`…).
        reason: String,
        /// Human-readable detail.
        message: Option<String>,
    },
    /// The process runs.
    Running {
        /// When it started.
        started_at: Timestamp,
    },
    /// The process exited.
    Terminated(Termination),
}

/// `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, not started yet.
    Pending,
    /// Running or restarting.
    Running,
    /// Exited 0 for good.
    Succeeded,
    /// Exited non-zero for good.
    Failed,
}

impl Phase {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// Whether the pod will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// What the worker does after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the process again after this delay.
    Restart {
        /// Back-off delay.
        after: Duration,
    },
    /// The container is done.
    Done,
}

/// The lifecycle of the pod's container.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    policy: RestartPolicy,
    backoff: BackoffPolicy,
    state: ContainerState,
    latest_exit: Option<Termination>,
    previous_exit: Option<Termination>,
    restart_count: i32,
    streak: u32,
    phase: Phase,
    deleting: bool,
    restart_pending: bool,
}

impl Lifecycle {
    /// A pod just accepted by the node.
    pub fn new(policy: RestartPolicy, backoff: BackoffPolicy) -> Self {
        Self {
            policy,
            backoff,
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            latest_exit: None,
            previous_exit: None,
            restart_count: 0,
            streak: 0,
            phase: Phase::Pending,
            deleting: false,
            restart_pending: false,
        }
    }

    /// The container could not be started (image not mapped, missing Secret…); the worker
    /// retries later. The phase does not change.
    pub fn cannot_start(&mut self, reason: &str, message: String) {
        if !self.phase.is_terminal() {
            self.state = ContainerState::Waiting {
                reason: reason.to_string(),
                message: Some(message),
            };
        }
    }

    /// The process started at `at`.
    pub fn started(&mut self, at: Timestamp) {
        if self.restart_pending {
            self.restart_count += 1;
            self.restart_pending = false;
        }
        self.state = ContainerState::Running { started_at: at };
        self.phase = Phase::Running;
    }

    /// The process exited with `exit_code` (or was killed by `signal`) at `at`.
    pub fn exited(&mut self, exit_code: i32, signal: Option<i32>, at: Timestamp) -> Decision {
        let started_at = match &self.state {
            ContainerState::Running { started_at } => *started_at,
            _ => at,
        };
        let exit_code = signal.map_or(exit_code, |s| 128 + s);
        let termination = Termination {
            exit_code,
            signal,
            started_at,
            finished_at: at,
        };
        self.previous_exit = self.latest_exit.replace(termination.clone());
        let wants_restart = match self.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        };
        if self.deleting || !wants_restart {
            self.finish(termination);
            return Decision::Done;
        }
        let ran = Duration::try_from(at.duration_since(started_at)).unwrap_or_default();
        if ran >= self.backoff.reset_after {
            self.streak = 0;
        }
        let after = self.backoff.delay(self.streak);
        self.streak = self.streak.saturating_add(1);
        self.restart_pending = true;
        self.state = if after.is_zero() {
            ContainerState::Terminated(termination)
        } else {
            ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container",
                    after.as_secs_f64()
                )),
            }
        };
        Decision::Restart { after }
    }

    fn finish(&mut self, termination: Termination) {
        self.restart_pending = false;
        self.phase = if termination.exit_code == 0 {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
        self.state = ContainerState::Terminated(termination);
    }

    /// The pod is being deleted: no more restarts. Returns whether a process is running (and
    /// must be told to stop).
    pub fn delete_requested(&mut self) -> bool {
        self.deleting = true;
        if self.restart_pending
            && let Some(t) = self.latest_exit.clone()
        {
            // Waiting for a restart that will not come: the last exit is final.
            self.previous_exit = None;
            self.finish(t);
        }
        self.is_running()
    }

    /// Whether a restart is due (the worker has a timer for it).
    pub fn restart_pending(&self) -> bool {
        self.restart_pending && !self.deleting
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    /// Whether deletion was requested.
    pub fn is_deleting(&self) -> bool {
        self.deleting
    }

    /// `status.phase`.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// `containerStatuses[0].state`.
    pub fn state(&self) -> &ContainerState {
        &self.state
    }

    /// `containerStatuses[0].lastState`: the run before the current state.
    pub fn last_state(&self) -> Option<&Termination> {
        match self.state {
            ContainerState::Terminated(_) => self.previous_exit.as_ref(),
            _ => self.latest_exit.as_ref(),
        }
    }

    /// `containerStatuses[0].restartCount`.
    pub fn restart_count(&self) -> i32 {
        self.restart_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sec: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + sec).unwrap()
    }

    fn backoff() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = backoff();
        let delays: Vec<u64> = (0..7).map(|s| b.delay(s).as_secs()).collect();
        assert_eq!(delays, vec![0, 1, 2, 4, 8, 8, 8]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn always_restarts_with_backoff_and_counts_restarts() {
        let mut l = Lifecycle::new(RestartPolicy::Always, backoff());
        assert_eq!(l.phase(), Phase::Pending);
        l.started(t(0));
        assert_eq!(l.phase(), Phase::Running);
        // kill -9 after one second: immediate restart, state shows the exit.
        assert_eq!(
            l.exited(0, Some(9), t(1)),
            Decision::Restart {
                after: Duration::ZERO
            }
        );
        assert!(
            matches!(l.state(), ContainerState::Terminated(x) if x.exit_code == 137 && x.signal == Some(9))
        );
        assert_eq!(l.phase(), Phase::Running);
        assert_eq!(l.restart_count(), 0);
        assert!(l.restart_pending());
        l.started(t(1));
        assert_eq!(l.restart_count(), 1);
        assert_eq!(l.last_state().map(|x| x.exit_code), Some(137));
        // Quick crashes back off.
        assert_eq!(
            l.exited(1, None, t(2)),
            Decision::Restart {
                after: Duration::from_secs(1)
            }
        );
        assert!(
            matches!(l.state(), ContainerState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
        );
        assert_eq!(l.last_state().map(|x| x.exit_code), Some(1));
        l.started(t(3));
        assert_eq!(
            l.exited(1, None, t(3)),
            Decision::Restart {
                after: Duration::from_secs(2)
            }
        );
        l.started(t(5));
        assert_eq!(l.restart_count(), 3);
        // A long run resets the sequence.
        assert_eq!(
            l.exited(0, None, t(100)),
            Decision::Restart {
                after: Duration::ZERO
            }
        );
    }

    #[test]
    fn never_and_on_failure_end_in_terminal_phases() {
        let mut l = Lifecycle::new(RestartPolicy::Never, backoff());
        l.started(t(0));
        assert_eq!(l.exited(3, None, t(1)), Decision::Done);
        assert_eq!(l.phase(), Phase::Failed);
        assert!(!l.restart_pending());

        let mut l = Lifecycle::new(RestartPolicy::Never, backoff());
        l.started(t(0));
        assert_eq!(l.exited(0, None, t(1)), Decision::Done);
        assert_eq!(l.phase(), Phase::Succeeded);
        assert!(matches!(l.state(), ContainerState::Terminated(x) if x.reason() == "Completed"));

        let mut l = Lifecycle::new(RestartPolicy::OnFailure, backoff());
        l.started(t(0));
        assert!(matches!(l.exited(2, None, t(1)), Decision::Restart { .. }));
        l.started(t(1));
        assert_eq!(l.exited(0, None, t(2)), Decision::Done);
        assert_eq!(l.phase(), Phase::Succeeded);
        assert_eq!(l.restart_count(), 1);
    }

    #[test]
    fn deletion_stops_restarts() {
        let mut l = Lifecycle::new(RestartPolicy::Always, backoff());
        l.started(t(0));
        assert!(l.delete_requested(), "a running process must be signalled");
        assert_eq!(l.exited(0, Some(15), t(1)), Decision::Done);
        assert_eq!(l.phase(), Phase::Failed);
        assert!(!l.restart_pending());

        // Deleted while backing off: the last exit becomes final, nothing to signal.
        let mut l = Lifecycle::new(RestartPolicy::Always, backoff());
        l.started(t(0));
        l.exited(1, None, t(1));
        l.started(t(1));
        l.exited(1, None, t(1));
        assert!(l.restart_pending());
        assert!(!l.delete_requested());
        assert!(!l.restart_pending());
        assert_eq!(l.phase(), Phase::Failed);

        // Deleted before it ever ran.
        let mut l = Lifecycle::new(RestartPolicy::Always, backoff());
        assert!(!l.delete_requested());
        assert_eq!(l.phase(), Phase::Pending);
        assert!(l.is_deleting());
    }

    #[test]
    fn cannot_start_keeps_the_phase() {
        let mut l = Lifecycle::new(RestartPolicy::Always, backoff());
        l.cannot_start("ErrImagePull", "no mapping".into());
        assert_eq!(l.phase(), Phase::Pending);
        assert!(
            matches!(l.state(), ContainerState::Waiting { reason, .. } if reason == "ErrImagePull")
        );
        l.started(t(0));
        assert_eq!(l.phase(), Phase::Running);
    }
}

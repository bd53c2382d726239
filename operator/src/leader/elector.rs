//! The Lease I/O of leader election: read the Lease, create or replace it with optimistic
//! concurrency as [`Election`] decides, publish the state through a watch channel, and release
//! the Lease when asked to stop.
//!
//! Supervision contract: [`run_election`] returns `Err(LeaderError::Lost)` the moment this
//! process stops being the leader (renew deadline passed, or the Lease names someone else);
//! the caller must then stop every writer and exit non-zero. Every API call is bounded by a
//! timeout, and while leading the whole loop is bounded by the renew deadline, so a hung
//! request cannot keep a deposed leader writing.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use super::{Election, LeaseRecord, Step};
use crate::metrics::Metrics;

/// Where this process stands in the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderState {
    /// Not the leader (yet): controllers must not run.
    Standby,
    /// Holds the Lease: controllers may write.
    Leading,
    /// Was the leader and lost the Lease: stop writing and exit.
    Lost,
}

/// Why the election ended other than by a requested stop.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// This process was the leader and is no longer.
    #[error("lost the leader Lease {lease}: {reason}")]
    Lost {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What happened.
        reason: String,
    },
}

/// The Lease object one election runs on.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
}

impl LeaseLock {
    /// The Lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// `namespace/name`.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reads the Lease (`None` when it does not exist).
    pub async fn get(&self) -> Result<Option<Lease>, kube::Error> {
        self.api.get_opt(&self.name).await
    }

    async fn create(&self, record: &LeaseRecord) -> Result<Lease, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec_of(record, None)),
        };
        self.api.create(&PostParams::default(), &lease).await
    }

    /// Replaces `base` (its resourceVersion guards against concurrent writers).
    async fn replace(&self, base: &Lease, record: &LeaseRecord) -> Result<Lease, kube::Error> {
        let mut lease = base.clone();
        lease.spec = Some(spec_of(record, base.spec.as_ref()));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
    }
}

/// The election fields of a Lease.
pub fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
        acquire_time: spec.acquire_time.map(|t| t.0),
        renew_time: spec.renew_time.map(|t| t.0),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

fn spec_of(record: &LeaseRecord, base: Option<&LeaseSpec>) -> LeaseSpec {
    LeaseSpec {
        // An empty holder is how client-go spells "released"; keep it readable for kubectl.
        holder_identity: Some(record.holder.clone().unwrap_or_default()),
        lease_duration_seconds: Some(record.lease_duration_seconds),
        acquire_time: record.acquire_time.map(MicroTime),
        renew_time: record.renew_time.map(MicroTime),
        lease_transitions: Some(record.transitions),
        ..base.cloned().unwrap_or_default()
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

struct Loop {
    lock: LeaseLock,
    election: Election,
    // The Lease as last read or written (its resourceVersion is the next write's guard).
    current: Option<Lease>,
    call_timeout: Duration,
    last_holder: Option<String>,
}

impl Loop {
    /// One read-decide-write round; returns how long to wait before the next.
    async fn attempt(&mut self) -> Duration {
        let timing = self.election.timing();
        let now = Instant::now();
        // The leader renews from the object it wrote last; everyone else reads first.
        if !(self.election.is_leader(now) && self.current.is_some()) {
            match timeout(self.call_timeout, self.lock.get()).await {
                Ok(Ok(lease)) => {
                    self.election
                        .observe(lease.as_ref().map(record_of), Instant::now());
                    self.current = lease;
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.lock.describe(), %error, "could not read the leader Lease");
                    return timing.retry_period;
                }
                Err(_) => {
                    tracing::warn!(lease = %self.lock.describe(), "reading the leader Lease timed out");
                    return timing.retry_period;
                }
            }
        }
        let now = Instant::now();
        let (record, result) = match self.election.next_step(now, Timestamp::now()) {
            Step::Wait { holder, retry_in } => {
                if self.last_holder.as_deref() != Some(holder.as_str()) {
                    tracing::info!(lease = %self.lock.describe(), %holder, "standing by: another operator leads");
                    self.last_holder = Some(holder);
                }
                return retry_in.max(Duration::from_millis(10));
            }
            Step::Create(record) => {
                let result = timeout(self.call_timeout, self.lock.create(&record)).await;
                (record, result)
            }
            Step::Update(record) => {
                let Some(base) = self.current.clone() else {
                    return timing.retry_period;
                };
                let result = timeout(self.call_timeout, self.lock.replace(&base, &record)).await;
                (record, result)
            }
        };
        match result {
            Ok(Ok(lease)) => {
                self.election.written(record, now);
                self.current = Some(lease);
            }
            Ok(Err(error)) if is_conflict(&error) => {
                // Someone else wrote first: read again at once.
                tracing::debug!(lease = %self.lock.describe(), "lost a race for the leader Lease");
                self.current = None;
                return Duration::from_millis(10);
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.lock.describe(), %error, "could not write the leader Lease");
                self.current = None;
            }
            Err(_) => {
                tracing::warn!(lease = %self.lock.describe(), "writing the leader Lease timed out");
                self.current = None;
            }
        }
        timing.retry_period
    }

    async fn release(&mut self) {
        let Some(record) = self.election.release(Timestamp::now()) else {
            return;
        };
        let Some(base) = self.current.clone() else {
            return;
        };
        match timeout(self.call_timeout, self.lock.replace(&base, &record)).await {
            Ok(Ok(lease)) => {
                tracing::info!(lease = %self.lock.describe(), version = ?lease.resource_version(), "released the leader Lease");
            }
            Ok(Err(error)) => {
                tracing::warn!(lease = %self.lock.describe(), %error, "could not release the leader Lease; it expires on its own");
            }
            Err(_) => {
                tracing::warn!(lease = %self.lock.describe(), "releasing the leader Lease timed out; it expires on its own");
            }
        }
    }
}

/// Runs the election until `stop` is cancelled (then releases the Lease if held and returns
/// `Ok`) or leadership is lost (returns `Err`). The state is published on `state`.
pub async fn run_election(
    lock: LeaseLock,
    election: Election,
    state: watch::Sender<LeaderState>,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<(), LeaderError> {
    let timing = election.timing();
    let mut run = Loop {
        lock,
        election,
        current: None,
        call_timeout: (timing.renew_deadline / 2).max(timing.retry_period),
        last_holder: None,
    };
    let mut leading = false;
    let lost = |run: &Loop, reason: &str| {
        metrics.leader.set(0);
        state.send_replace(LeaderState::Lost);
        tracing::error!(lease = %run.lock.describe(), identity = run.election.identity(), reason, "lost leadership");
        LeaderError::Lost {
            lease: run.lock.describe(),
            reason: reason.to_string(),
        }
    };
    loop {
        // While leading, nothing may run past the renew deadline.
        let deadline = run
            .election
            .leader_until()
            .filter(|_| leading)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let wait = tokio::select! {
            _ = stop.cancelled() => None,
            result = timeout_at(deadline, run.attempt()) => match result {
                Ok(wait) => Some(wait),
                Err(_) => return Err(lost(&run, "could not renew within the renew deadline")),
            },
        };
        let Some(wait) = wait else { break };
        let now = Instant::now();
        let is_leader = run.election.is_leader(now);
        if leading && !is_leader {
            let reason = match run.current.as_ref().map(record_of).and_then(|r| r.holder) {
                Some(holder) if holder != run.election.identity() => {
                    format!("the Lease is now held by {holder}")
                }
                _ => "could not renew within the renew deadline".to_string(),
            };
            return Err(lost(&run, &reason));
        }
        if is_leader && !leading {
            leading = true;
            tracing::info!(lease = %run.lock.describe(), identity = run.election.identity(), "became the leader");
            metrics.leader.set(1);
            metrics.leader_acquisitions.inc();
            state.send_replace(LeaderState::Leading);
        }
        let until = if leading {
            (now + wait).min(deadline_after(&run.election, now))
        } else {
            now + wait
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until(until) => {}
        }
    }
    if leading {
        run.release().await;
    }
    metrics.leader.set(0);
    state.send_replace(LeaderState::Standby);
    Ok(())
}

fn deadline_after(election: &Election, now: Instant) -> Instant {
    election.leader_until().unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    #[test]
    fn lease_fields_round_trip_through_the_record() {
        let at = Timestamp::from_second(1_750_000_000).unwrap();
        let record = LeaseRecord {
            holder: Some("op-1".into()),
            lease_duration_seconds: 10,
            acquire_time: Some(at),
            renew_time: Some(at),
            transitions: 4,
        };
        let base = LeaseSpec {
            strategy: Some("OldestEmulationVersion".into()),
            ..Default::default()
        };
        let spec = spec_of(&record, Some(&base));
        assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
        assert_eq!(spec.renew_time, Some(MicroTime(at)));
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(spec),
        };
        assert_eq!(record_of(&lease), record);
    }

    #[test]
    fn a_released_lease_reads_as_holderless() {
        let record = LeaseRecord {
            holder: None,
            lease_duration_seconds: 1,
            acquire_time: None,
            renew_time: None,
            transitions: 2,
        };
        let spec = spec_of(&record, None);
        assert_eq!(spec.holder_identity.as_deref(), Some(""));
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(spec),
        };
        assert_eq!(record_of(&lease).holder, None);
        assert_eq!(record_of(&Lease::default()).lease_duration_seconds, 0);
    }
}

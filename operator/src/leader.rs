//! Leader election through a `coordination.k8s.io/v1` Lease: the pure state machine here,
//! the Lease I/O loop in [`elector`].
//!
//! Rules (those of client-go's `leaderelection`, so `kubectl get lease` reads as usual):
//! - A candidate creates the Lease when there is none, and takes it over when its holder is
//!   empty (released on shutdown) or when the record has not changed for the lease duration
//!   **as measured by this candidate's own clock** since it first saw that record. Comparing
//!   `renewTime` with the local wall clock would make the election depend on clock skew
//!   between machines; observing changes locally does not.
//! - The holder renews every retry period. If it cannot renew for the renew deadline (shorter
//!   than the lease duration) it stops being the leader *before* anyone else may take over.
//! - `leaseTransitions` counts changes of holder; `acquireTime` is the start of the current
//!   holder's term.
//! - Writes go through optimistic concurrency (the Lease's resourceVersion), so two
//!   candidates racing for an expired Lease cannot both win.

pub mod elector;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

pub use elector::{LeaderError, LeaderState, LeaseLock, run_election};

/// Durations of the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease is valid after its last change (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// The holder gives up leadership when it could not renew for this long.
    pub renew_deadline: Duration,
    /// Interval between renewals (holder) and acquisition attempts (candidates).
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(7),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// Checks `0 < retry period < renew deadline < lease duration` and whole seconds for the
    /// lease duration (the Lease stores seconds).
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("the retry period must be positive".into());
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "the retry period ({:?}) must be shorter than the renew deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.lease_duration.subsec_nanos() != 0 || self.lease_duration.as_secs() > 3600 {
            return Err("the lease duration must be whole seconds, at most 1h".into());
        }
        Ok(())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// The Lease fields the election reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `holderIdentity`; `None` (or empty in the API) when released.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// `acquireTime`: when the current holder took the Lease.
    pub acquire_time: Option<Timestamp>,
    /// `renewTime`: the holder's last renewal.
    pub renew_time: Option<Timestamp>,
    /// `leaseTransitions`: number of holder changes.
    pub transitions: i32,
}

impl LeaseRecord {
    fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }

    fn duration(&self, fallback: Duration) -> Duration {
        u64::try_from(self.lease_duration_seconds)
            .ok()
            .filter(|s| *s > 0)
            .map_or(fallback, Duration::from_secs)
    }
}

/// What the candidate does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// There is no Lease: create it with this record.
    Create(LeaseRecord),
    /// Replace the observed record with this one (a renewal or a takeover).
    Update(LeaseRecord),
    /// Someone else holds a valid Lease: look again after `retry_in`.
    Wait {
        /// The current holder.
        holder: String,
        /// When to look again (at most the retry period, earlier when the Lease expires
        /// sooner).
        retry_in: Duration,
    },
}

#[derive(Debug, Clone)]
struct Observed {
    record: Option<LeaseRecord>,
    changed_at: Instant,
}

/// The election state of one candidate: what it last saw of the Lease and when it last
/// renewed it. Time comes in as arguments, so every decision is testable without a clock.
#[derive(Debug, Clone)]
pub struct Election {
    identity: String,
    timing: Timing,
    observed: Option<Observed>,
    last_renewed: Option<Instant>,
}

impl Election {
    /// A candidate named `identity` (its `holderIdentity`).
    pub fn new(identity: impl Into<String>, timing: Timing) -> Self {
        Self {
            identity: identity.into(),
            timing,
            observed: None,
            last_renewed: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timing this election runs with.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Records the Lease as read at `now` (`None`: it does not exist). The local change time
    /// moves only when the record differs from the last one seen; a record naming someone
    /// else ends this candidate's leadership at once.
    pub fn observe(&mut self, record: Option<LeaseRecord>, now: Instant) {
        let changed = self.observed.as_ref().is_none_or(|o| o.record != record);
        if record.as_ref().and_then(LeaseRecord::holder) != Some(self.identity.as_str()) {
            self.last_renewed = None;
        }
        if changed {
            self.observed = Some(Observed {
                record,
                changed_at: now,
            });
        }
    }

    /// Records a successful write of `record` at `now` (after [`Step::Create`] or
    /// [`Step::Update`]).
    pub fn written(&mut self, record: LeaseRecord, now: Instant) {
        if record.holder() == Some(self.identity.as_str()) {
            self.last_renewed = Some(now);
        }
        self.observed = Some(Observed {
            record: Some(record),
            changed_at: now,
        });
    }

    /// What to do at `now` (`wall` is written into the record's times).
    pub fn next_step(&self, now: Instant, wall: Timestamp) -> Step {
        let Some(record) = self.observed.as_ref().and_then(|o| o.record.as_ref()) else {
            return Step::Create(LeaseRecord {
                holder: Some(self.identity.clone()),
                lease_duration_seconds: self.timing.lease_seconds(),
                acquire_time: Some(wall),
                renew_time: Some(wall),
                transitions: 0,
            });
        };
        match record.holder() {
            Some(holder) if holder == self.identity => Step::Update(LeaseRecord {
                lease_duration_seconds: self.timing.lease_seconds(),
                renew_time: Some(wall),
                acquire_time: record.acquire_time.or(Some(wall)),
                ..record.clone()
            }),
            Some(holder) if !self.expired(now) => {
                let remaining = self.expires_at().saturating_duration_since(now);
                Step::Wait {
                    holder: holder.to_string(),
                    retry_in: remaining.min(self.timing.retry_period),
                }
            }
            _ => Step::Update(LeaseRecord {
                holder: Some(self.identity.clone()),
                lease_duration_seconds: self.timing.lease_seconds(),
                acquire_time: Some(wall),
                renew_time: Some(wall),
                transitions: record.transitions.saturating_add(1),
            }),
        }
    }

    /// Whether this candidate leads at `now`: the Lease names it and its last renewal is
    /// younger than the renew deadline.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.last_renewed
            .is_some_and(|at| now.saturating_duration_since(at) < self.timing.renew_deadline)
    }

    /// Until when this candidate leads unless it renews again (`None`: not leading).
    pub fn leader_until(&self) -> Option<Instant> {
        self.last_renewed.map(|at| at + self.timing.renew_deadline)
    }

    /// The record that releases the Lease (empty holder, 1 s duration), if this candidate
    /// holds it; the next candidate takes over at its next attempt.
    pub fn release(&self, wall: Timestamp) -> Option<LeaseRecord> {
        let record = self.observed.as_ref()?.record.as_ref()?;
        (record.holder() == Some(self.identity.as_str())).then_some(LeaseRecord {
            holder: None,
            lease_duration_seconds: 1,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            transitions: record.transitions,
        })
    }

    fn expires_at(&self) -> Instant {
        match &self.observed {
            Some(Observed {
                record: Some(record),
                changed_at,
            }) => *changed_at + record.duration(self.timing.lease_duration),
            Some(Observed { changed_at, .. }) => *changed_at,
            None => Instant::now(),
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now >= self.expires_at()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_750_000_000;

    fn wall(second: i64) -> Timestamp {
        Timestamp::from_second(T0 + second).unwrap()
    }

    fn held_by(holder: &str, transitions: i32) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            lease_duration_seconds: 10,
            acquire_time: Some(wall(0)),
            renew_time: Some(wall(0)),
            transitions,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_timing_is_valid_and_bad_timings_are_refused() {
        assert_eq!(Timing::default().validate(), Ok(()));
        let t = |lease, renew, retry| Timing {
            lease_duration: secs(lease),
            renew_deadline: secs(renew),
            retry_period: secs(retry),
        };
        assert!(t(10, 10, 2).validate().is_err());
        assert!(t(10, 7, 7).validate().is_err());
        assert!(t(10, 7, 0).validate().is_err());
        let fractional = Timing {
            lease_duration: Duration::from_millis(10_500),
            ..Timing::default()
        };
        assert!(fractional.validate().is_err());
    }

    #[test]
    fn a_missing_lease_is_created_naming_us() {
        let now = Instant::now();
        let mut e = Election::new("a", Timing::default());
        e.observe(None, now);
        match e.next_step(now, wall(0)) {
            Step::Create(r) => {
                assert_eq!(r.holder.as_deref(), Some("a"));
                assert_eq!(r.lease_duration_seconds, 10);
                assert_eq!(r.transitions, 0);
                assert_eq!(r.acquire_time, Some(wall(0)));
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.is_leader(now));
    }

    #[test]
    fn a_held_lease_is_waited_for_until_it_expires_locally() {
        let t0 = Instant::now();
        let mut e = Election::new("b", Timing::default());
        e.observe(Some(held_by("a", 3)), t0);
        assert_eq!(
            e.next_step(t0 + secs(1), wall(1)),
            Step::Wait {
                holder: "a".into(),
                retry_in: secs(2)
            }
        );
        // Close to expiry the next look is scheduled at the expiry itself.
        assert_eq!(
            e.next_step(t0 + secs(9), wall(9)),
            Step::Wait {
                holder: "a".into(),
                retry_in: secs(1)
            }
        );
        // The same record seen again does not restart the clock …
        e.observe(Some(held_by("a", 3)), t0 + secs(5));
        match e.next_step(t0 + secs(10), wall(10)) {
            Step::Update(r) => {
                assert_eq!(r.holder.as_deref(), Some("b"));
                assert_eq!(r.transitions, 4);
                assert_eq!(r.acquire_time, Some(wall(10)));
                assert_eq!(r.renew_time, Some(wall(10)));
            }
            other => panic!("{other:?}"),
        }
        // … but a renewal does.
        let mut renewed = held_by("a", 3);
        renewed.renew_time = Some(wall(8));
        e.observe(Some(renewed), t0 + secs(8));
        assert!(matches!(
            e.next_step(t0 + secs(10), wall(10)),
            Step::Wait { .. }
        ));
        assert!(matches!(
            e.next_step(t0 + secs(18), wall(18)),
            Step::Update(_)
        ));
    }

    #[test]
    fn expiry_ignores_the_holders_wall_clock() {
        // The holder's renewTime is far in the past by our clock (skew): still wait the full
        // duration from when we saw it.
        let t0 = Instant::now();
        let mut e = Election::new("b", Timing::default());
        let mut record = held_by("a", 0);
        record.renew_time = Some(wall(-3600));
        e.observe(Some(record), t0);
        assert!(matches!(
            e.next_step(t0 + secs(9), wall(0)),
            Step::Wait { .. }
        ));
        assert!(matches!(
            e.next_step(t0 + secs(10), wall(0)),
            Step::Update(_)
        ));
    }

    #[test]
    fn the_records_duration_wins_over_ours() {
        let t0 = Instant::now();
        let mut e = Election::new("b", Timing::default());
        let mut record = held_by("a", 0);
        record.lease_duration_seconds = 30;
        e.observe(Some(record), t0);
        assert!(matches!(
            e.next_step(t0 + secs(29), wall(29)),
            Step::Wait { .. }
        ));
        assert!(matches!(
            e.next_step(t0 + secs(30), wall(30)),
            Step::Update(_)
        ));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let mut e = Election::new("b", Timing::default());
        let mut released = held_by("a", 5);
        released.holder = Some(String::new());
        released.lease_duration_seconds = 1;
        e.observe(Some(released), t0);
        match e.next_step(t0, wall(0)) {
            Step::Update(r) => {
                assert_eq!(r.holder.as_deref(), Some("b"));
                assert_eq!(r.transitions, 6);
                assert_eq!(r.lease_duration_seconds, 10);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_holder_renews_and_leads_until_the_renew_deadline() {
        let t0 = Instant::now();
        let mut e = Election::new("a", Timing::default());
        e.observe(None, t0);
        let Step::Create(record) = e.next_step(t0, wall(0)) else {
            panic!("expected create")
        };
        e.written(record, t0);
        assert!(e.is_leader(t0));
        match e.next_step(t0 + secs(2), wall(2)) {
            Step::Update(r) => {
                assert_eq!(r.holder.as_deref(), Some("a"));
                assert_eq!(r.acquire_time, Some(wall(0)), "the term keeps its start");
                assert_eq!(r.renew_time, Some(wall(2)));
                assert_eq!(r.transitions, 0);
            }
            other => panic!("{other:?}"),
        }
        // No successful renewal for the renew deadline: no longer leader, well before the
        // lease expires for others (7 s < 10 s).
        assert!(e.is_leader(t0 + Duration::from_millis(6_999)));
        assert!(!e.is_leader(t0 + secs(7)));
    }

    #[test]
    fn seeing_another_holder_ends_leadership_at_once() {
        let t0 = Instant::now();
        let mut e = Election::new("a", Timing::default());
        e.written(held_by("a", 0), t0);
        assert!(e.is_leader(t0 + secs(1)));
        e.observe(Some(held_by("b", 1)), t0 + secs(1));
        assert!(!e.is_leader(t0 + secs(1)));
        assert!(matches!(
            e.next_step(t0 + secs(1), wall(1)),
            Step::Wait { .. }
        ));
    }

    #[test]
    fn release_only_what_we_hold() {
        let t0 = Instant::now();
        let mut e = Election::new("a", Timing::default());
        assert_eq!(e.release(wall(0)), None);
        e.written(held_by("a", 2), t0);
        let released = e.release(wall(5)).unwrap();
        assert_eq!(released.holder, None);
        assert_eq!(released.lease_duration_seconds, 1);
        assert_eq!(released.transitions, 2);
        e.observe(Some(held_by("b", 3)), t0);
        assert_eq!(e.release(wall(5)), None);
    }

    #[test]
    fn two_candidates_never_both_lead_on_one_record() {
        // Both see the same expired record; both decide to take over. The API server accepts
        // only the first write (resourceVersion); the loser observes the winner's record.
        let t0 = Instant::now();
        let mut a = Election::new("a", Timing::default());
        let mut b = Election::new("b", Timing::default());
        a.observe(Some(held_by("old", 0)), t0);
        b.observe(Some(held_by("old", 0)), t0);
        let later = t0 + secs(11);
        let (Step::Update(ra), Step::Update(_)) =
            (a.next_step(later, wall(11)), b.next_step(later, wall(11)))
        else {
            panic!("both should try")
        };
        a.written(ra.clone(), later);
        b.observe(Some(ra), later);
        assert!(a.is_leader(later));
        assert!(!b.is_leader(later));
        assert!(matches!(b.next_step(later, wall(11)), Step::Wait { .. }));
    }
}

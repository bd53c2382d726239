//! The next step of a handoff in flight (pure). The two-phase handoff
//! (docs/architecture.md, "Handoff"):
//!
//! 1. the operator writes `{node: old, epoch, handoff_to: Some(new)}` (see [`super::core`]);
//! 2. the old owner flushes, migrates its clients and reports `acks/<old>.released[shard] =
//!    epoch`;
//! 3. the operator writes `{node: new, epoch + 1, handoff_to: None}` — at once on the release,
//!    or when the deadline (5 s) passes without it: the epoch bump fences the old owner, so a
//!    hung owner cannot stall a drain or a rollout.
//!
//! A handoff, once started, always completes: the old owner may already have told its
//! clients to migrate. When the target stops being eligible before the release, the handoff
//! is pointed at the plan's new choice; if that choice is the old owner itself (nothing else
//! can take the shard) the operator waits for the release or the deadline and then gives the
//! shard back to it with `epoch + 1`, which it reloads like any new owner.

/// What to do with a handoff in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet (waiting for the release, the deadline or an eligible target).
    Wait,
    /// Phase 3: make `to` the owner with `epoch + 1`.
    Finish {
        /// The new owner.
        to: String,
    },
    /// Point the handoff at another target (same epoch).
    Retarget {
        /// The new target.
        to: String,
    },
}

/// The facts about one handoff in flight.
#[derive(Debug, Clone, Copy)]
pub struct InFlight<'a> {
    /// The current (old) owner; alive, else the shard fails over instead.
    pub owner: &'a str,
    /// The `handoff_to` target.
    pub target: &'a str,
    /// The target may receive shards.
    pub target_eligible: bool,
    /// The owner reported the release of this epoch.
    pub released: bool,
    /// The deadline passed.
    pub expired: bool,
    /// The plan's choice for the shard now (`None`: no eligible node in its pool).
    pub desired: Option<&'a str>,
}

/// Decides the next step of one handoff.
pub fn step(h: InFlight<'_>) -> Step {
    let done = h.released || h.expired;
    if h.target_eligible {
        return if done {
            Step::Finish {
                to: h.target.to_string(),
            }
        } else {
            Step::Wait
        };
    }
    match h.desired {
        None => Step::Wait,
        Some(to) if done => Step::Finish { to: to.to_string() },
        Some(to) if to != h.owner && to != h.target => Step::Retarget { to: to.to_string() },
        Some(_) => Step::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> InFlight<'static> {
        InFlight {
            owner: "a",
            target: "b",
            target_eligible: true,
            released: false,
            expired: false,
            desired: Some("b"),
        }
    }

    #[test]
    fn waits_for_the_release_then_finishes() {
        assert_eq!(step(facts()), Step::Wait);
        let released = InFlight {
            released: true,
            ..facts()
        };
        assert_eq!(step(released), Step::Finish { to: "b".into() });
    }

    #[test]
    fn the_deadline_finishes_without_a_release() {
        let expired = InFlight {
            expired: true,
            ..facts()
        };
        assert_eq!(step(expired), Step::Finish { to: "b".into() });
    }

    #[test]
    fn a_lost_target_is_replaced() {
        let lost = InFlight {
            target_eligible: false,
            desired: Some("c"),
            ..facts()
        };
        assert_eq!(step(lost), Step::Retarget { to: "c".into() });
        let lost_released = InFlight {
            released: true,
            ..lost
        };
        assert_eq!(step(lost_released), Step::Finish { to: "c".into() });
    }

    #[test]
    fn with_nowhere_to_go_the_owner_takes_it_back_only_after_the_release() {
        let back = InFlight {
            target_eligible: false,
            desired: Some("a"),
            ..facts()
        };
        assert_eq!(step(back), Step::Wait);
        let released = InFlight {
            released: true,
            ..back
        };
        assert_eq!(step(released), Step::Finish { to: "a".into() });
        let nowhere = InFlight {
            target_eligible: false,
            desired: None,
            expired: true,
            ..facts()
        };
        assert_eq!(step(nowhere), Step::Wait);
    }
}

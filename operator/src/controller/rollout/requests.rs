//! Rollout requests (pure): pause, resume, promote and abort asked for through the annotation
//! `switchboard.dev/rollout-request` and answered in `status.lastRequest`, their effect held
//! in `status.control` until the spec changes. Requests are annotations and their effects
//! live in status, so a Git controller that owns the spec (Argo CD self-heal, Flux) reverts
//! neither, as with Argo Rollouts' promote and abort.
//!
//! | request | accepted when | rejected (the answer says why) |
//! |---|---|---|
//! | pause | progressing | already paused; completed, rolled back or aborted: nothing moves |
//! | resume | paused by a request | paused by `spec.paused` (change the manifest); not paused |
//! | promote [V] | V exists and does not hold all weight yet, not paused | paused: resume first; unknown V; V already has all weight |
//! | abort | progressing or paused, with last stable weights | completed (the weights are the stable ones); already aborted or rolled back; no stable weights |

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::controller::labels::ROLLOUT_REQUEST;
use crate::crd::{
    ProtocolRollout, RequestAction, RequestOutcome, RequestStatus, RolloutControl, RolloutPhase,
    RolloutRequest,
};

/// Longest annotation value read (a request is a few dozen bytes).
const MAX_REQUEST_LEN: usize = 1024;

/// The request on `rollout` that has not been answered yet, parsed; `Err` carries the answer
/// to an annotation that does not parse.
pub fn pending(rollout: &ProtocolRollout) -> Option<Result<RolloutRequest, RequestStatus>> {
    let text = rollout
        .metadata
        .annotations
        .as_ref()?
        .get(ROLLOUT_REQUEST)?;
    let answered = rollout
        .status
        .as_ref()
        .and_then(|s| s.last_request.as_ref());
    if text.len() > MAX_REQUEST_LEN {
        let id = format!("invalid-{}", text.len());
        if answered.is_some_and(|a| a.id == id) {
            return None;
        }
        return Some(Err(rejection(
            &id,
            "invalid",
            format!(
                "{ROLLOUT_REQUEST} is {} bytes; at most {MAX_REQUEST_LEN}",
                text.len()
            ),
        )));
    }
    match serde_json::from_str::<RolloutRequest>(text) {
        Ok(request) if answered.is_some_and(|a| a.id == request.id) => None,
        Ok(request) if request.id.is_empty() || request.id.len() > 128 => Some(Err(rejection(
            "invalid",
            request.action.as_str(),
            "the request id must be 1..=128 bytes".into(),
        ))),
        Ok(request) => Some(Ok(request)),
        Err(error) => {
            // No id to answer by: the text itself identifies the request.
            let id: String = format!("invalid-{:016x}", fnv(text.as_bytes()));
            if answered.is_some_and(|a| a.id == id) {
                return None;
            }
            Some(Err(rejection(
                &id,
                "invalid",
                format!(
                    "{ROLLOUT_REQUEST} must be JSON like {{\"id\":\"1\",\"action\":\"pause\"}} with action pause, resume, promote or abort: {error}"
                ),
            )))
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn rejection(id: &str, action: &str, message: String) -> RequestStatus {
    RequestStatus {
        id: id.to_string(),
        action: action.to_string(),
        outcome: RequestOutcome::Rejected,
        message,
        time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

/// The state a request is judged against.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    /// The phase before this pass.
    pub phase: RolloutPhase,
    /// `spec.paused`.
    pub spec_paused: bool,
    /// The requests in force for this generation.
    pub control: &'a RolloutControl,
    /// The versions in spec order.
    pub versions: Vec<String>,
    /// The target weights before this pass (spec or a promote).
    pub target: Vec<(String, u32)>,
    /// `status.lastStableWeights`, rendered (`v1=90,v2=10`), empty when none.
    pub stable: String,
}

/// Judges `request` in `situation`: the answer and the control in force afterwards.
pub fn decide(
    request: &RolloutRequest,
    situation: &Situation<'_>,
    now: &Time,
) -> (RequestStatus, RolloutControl) {
    let mut control = situation.control.clone();
    let paused = situation.spec_paused || control.paused;
    let finished = |what: &str| match situation.phase {
        RolloutPhase::Completed => Some(format!("the rollout is Completed: {what}")),
        RolloutPhase::RolledBack => Some(format!(
            "the rollout was rolled back automatically: {what}; edit the weights to start again"
        )),
        RolloutPhase::Aborted => Some(format!(
            "the rollout is Aborted: {what}; edit the weights to start again"
        )),
        _ => None,
    };
    let result: Result<String, String> = match request.action {
        RequestAction::Pause => {
            if paused {
                Err("the rollout is already paused".to_string())
            } else if let Some(why) = finished("no shard is moving, nothing to pause") {
                Err(why)
            } else {
                control.paused = true;
                Ok("paused: no shard moves between versions until a resume request or a spec change".to_string())
            }
        }
        RequestAction::Resume => {
            if control.paused {
                control.paused = false;
                if situation.spec_paused {
                    Err("spec.paused is true in the manifest; the pause request is cleared but the rollout stays paused until the manifest (Git) changes".to_string())
                } else {
                    Ok("resumed: shards move toward the target weights again".to_string())
                }
            } else if situation.spec_paused {
                Err("the rollout is paused by spec.paused in the manifest; change it there (Git), a request cannot override it".to_string())
            } else {
                Err("the rollout is not paused".to_string())
            }
        }
        RequestAction::Promote => {
            let version = request
                .version
                .clone()
                .or_else(|| situation.versions.last().cloned())
                .unwrap_or_default();
            if !situation.versions.contains(&version) {
                Err(format!(
                    "unknown version {version:?}; the rollout has {}",
                    situation.versions.join(", ")
                ))
            } else if paused {
                Err("the rollout is paused: resume it first, then promote".to_string())
            } else if situation
                .target
                .iter()
                .all(|(name, w)| (*name == version) == (*w == 100))
                && !control.aborted
                && situation.phase != RolloutPhase::RolledBack
            {
                Err(format!("{version} already has all the weight"))
            } else {
                control.promoted = Some(version.clone());
                control.aborted = false;
                Ok(format!(
                    "promoted: all weight to {version} until the spec changes; commit weights {version}=100 to Git to keep it"
                ))
            }
        }
        RequestAction::Abort => {
            if situation.phase == RolloutPhase::Completed {
                Err(format!(
                    "the rollout is Completed: its weights ({}) are the last stable ones, nothing to abort",
                    situation.stable
                ))
            } else if matches!(
                situation.phase,
                RolloutPhase::Aborted | RolloutPhase::RolledBack
            ) {
                Err(finished("the weights are already the last stable ones").unwrap_or_default())
            } else if situation.stable.is_empty() {
                Err("the rollout has no last stable weights to return to yet".to_string())
            } else {
                control.aborted = true;
                control.promoted = None;
                Ok(format!(
                    "aborted: weights back to the last stable {} until the spec changes",
                    situation.stable
                ))
            }
        }
    };
    let (outcome, message) = match result {
        Ok(message) => (RequestOutcome::Accepted, message),
        Err(message) => (RequestOutcome::Rejected, message),
    };
    let answer = RequestStatus {
        id: request.id.clone(),
        action: request.action.as_str().to_string(),
        outcome,
        message,
        time: now.clone(),
    };
    (answer, control)
}

/// Stamps a rejection built by [`pending`] with the time it is answered.
pub fn answered_at(mut answer: RequestStatus, now: &Time) -> RequestStatus {
    answer.time = now.clone();
    answer
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::crd::{ProtocolRolloutSpec, ProtocolRolloutStatus};

    fn now() -> Time {
        Time(Timestamp::from_second(1_750_000_000).unwrap())
    }

    fn situation(phase: RolloutPhase, control: &RolloutControl) -> Situation<'_> {
        Situation {
            phase,
            spec_paused: false,
            control,
            versions: vec!["v1".into(), "v2".into()],
            target: vec![("v1".into(), 50), ("v2".into(), 50)],
            stable: "v1=90,v2=10".into(),
        }
    }

    fn request(action: RequestAction) -> RolloutRequest {
        RolloutRequest {
            id: "r1".into(),
            action,
            version: None,
        }
    }

    fn answer(
        action: RequestAction,
        s: &Situation<'_>,
    ) -> (RequestOutcome, String, RolloutControl) {
        let (a, c) = decide(&request(action), s, &now());
        (a.outcome, a.message, c)
    }

    #[test]
    fn requests_on_a_progressing_rollout_take_effect() {
        let none = RolloutControl::default();
        let s = situation(RolloutPhase::Progressing, &none);
        let (o, _, c) = answer(RequestAction::Pause, &s);
        assert_eq!((o, c.paused), (RequestOutcome::Accepted, true));
        let (o, m, c) = answer(RequestAction::Promote, &s);
        assert_eq!(o, RequestOutcome::Accepted, "{m}");
        assert_eq!(c.promoted.as_deref(), Some("v2"));
        let (o, m, c) = answer(RequestAction::Abort, &s);
        assert_eq!((o, c.aborted), (RequestOutcome::Accepted, true));
        assert!(m.contains("v1=90,v2=10"), "{m}");
        let (o, m, _) = answer(RequestAction::Resume, &s);
        assert_eq!(
            (o, m.as_str()),
            (RequestOutcome::Rejected, "the rollout is not paused")
        );
    }

    #[test]
    fn requests_on_paused_and_completed_rollouts_get_clear_answers() {
        let paused = RolloutControl {
            paused: true,
            ..Default::default()
        };
        let s = situation(RolloutPhase::Paused, &paused);
        let (o, m, _) = answer(RequestAction::Pause, &s);
        assert_eq!(
            (o, m.as_str()),
            (RequestOutcome::Rejected, "the rollout is already paused")
        );
        let (o, m, _) = answer(RequestAction::Promote, &s);
        assert_eq!(o, RequestOutcome::Rejected);
        assert!(m.contains("resume it first"), "{m}");
        let (o, _, c) = answer(RequestAction::Resume, &s);
        assert_eq!((o, c.paused), (RequestOutcome::Accepted, false));
        // Abort of a paused rollout is allowed: it returns to the stable weights.
        let (o, _, c) = answer(RequestAction::Abort, &s);
        assert_eq!((o, c.aborted), (RequestOutcome::Accepted, true));

        let none = RolloutControl::default();
        let mut spec_paused = situation(RolloutPhase::Paused, &none);
        spec_paused.spec_paused = true;
        let (o, m, _) = answer(RequestAction::Resume, &spec_paused);
        assert_eq!(o, RequestOutcome::Rejected);
        assert!(m.contains("spec.paused"), "{m}");

        let done = situation(RolloutPhase::Completed, &none);
        let (o, m, _) = answer(RequestAction::Pause, &done);
        assert_eq!(o, RequestOutcome::Rejected);
        assert!(
            m.contains("Completed") && m.contains("nothing to pause"),
            "{m}"
        );
        let (o, m, _) = answer(RequestAction::Abort, &done);
        assert_eq!(o, RequestOutcome::Rejected);
        assert!(m.contains("nothing to abort"), "{m}");
        // Promoting a completed 50/50 to v2 is a real step.
        assert_eq!(
            answer(RequestAction::Promote, &done).0,
            RequestOutcome::Accepted
        );
        let mut full = situation(RolloutPhase::Completed, &none);
        full.target = vec![("v1".into(), 0), ("v2".into(), 100)];
        let (o, m, _) = answer(RequestAction::Promote, &full);
        assert_eq!(
            (o, m.as_str()),
            (RequestOutcome::Rejected, "v2 already has all the weight")
        );

        let rolled = situation(RolloutPhase::RolledBack, &none);
        let (o, m, _) = answer(RequestAction::Abort, &rolled);
        assert_eq!(o, RequestOutcome::Rejected);
        assert!(m.contains("rolled back automatically"), "{m}");
    }

    #[test]
    fn the_annotation_is_read_once_and_bad_text_is_answered() {
        let mut r = ProtocolRollout::new(
            "demo",
            ProtocolRolloutSpec {
                cluster_ref: "demo".into(),
                versions: vec![],
                strategy: Default::default(),
                paused: false,
            },
        );
        assert!(pending(&r).is_none());
        r.metadata.annotations = Some(BTreeMap::from([(
            ROLLOUT_REQUEST.to_string(),
            r#"{"id":"7","action":"promote","version":"v2"}"#.to_string(),
        )]));
        let request = pending(&r).unwrap().unwrap();
        assert_eq!(request.version.as_deref(), Some("v2"));
        r.status = Some(ProtocolRolloutStatus {
            last_request: Some(RequestStatus {
                id: "7".into(),
                action: "promote".into(),
                outcome: RequestOutcome::Accepted,
                message: String::new(),
                time: now(),
            }),
            ..Default::default()
        });
        assert!(
            pending(&r).is_none(),
            "answered requests are not read again"
        );

        r.metadata.annotations = Some(BTreeMap::from([(
            ROLLOUT_REQUEST.to_string(),
            r#"{"id":"8","action":"rollback"}"#.to_string(),
        )]));
        let rejected = pending(&r).unwrap().unwrap_err();
        assert_eq!(rejected.outcome, RequestOutcome::Rejected);
        assert!(
            rejected.message.contains("pause, resume, promote or abort"),
            "{}",
            rejected.message
        );
        r.status.as_mut().unwrap().last_request = Some(rejected);
        assert!(pending(&r).is_none(), "a bad annotation is answered once");
    }
}

//! The detector's verdicts on plain event sequences with injected time, including the bad
//! input of issue 15: a flapping connection, a stall shorter than the window, a partition
//! between the operator and a node, a stepped clock, a common cause.

use super::*;

const MS: Duration = Duration::from_millis(1);
const TICK: Duration = Duration::from_millis(25);

/// A detector watching `nodes` (incarnation = index + 1), every stream open and beating.
fn fleet(nodes: &[&str]) -> (Detector, Instant) {
    let t0 = Instant::now();
    let mut d = Detector::new(Timing::default());
    for (i, node) in nodes.iter().enumerate() {
        let incarnation = i as u64 + 1;
        d.watch(node, incarnation, 7, t0);
        d.observe(node, Event::Connected(incarnation), t0);
    }
    d.tick(t0);
    (d, t0)
}

/// Ticks every 25 ms up to `until`, every node but `silent` beating; returns the probes asked.
fn run(d: &mut Detector, from: Instant, until: Instant, silent: &[&str]) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut t = from;
    while t < until {
        t += TICK;
        let names: Vec<String> = d.watched().map(|(n, _)| n.to_string()).collect();
        for node in names {
            if !silent.contains(&node.as_str()) {
                d.observe(&node, Event::Heard, t);
            }
        }
        d.tick(t);
        actions.extend(d.take_actions());
    }
    actions
}

#[test]
fn a_frozen_process_that_registers_again_is_watched_afresh() {
    // SIGSTOP, declared unresponsive, lease revoked; SIGCONT: the same process (incarnation)
    // finds its lease gone, fences itself and registers under a new lease.
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    run(&mut d, t0, t0 + 300 * MS, &["a"]);
    for by in [
        Prober::Operator,
        Prober::Peer("b".into()),
        Prober::Peer("c".into()),
    ] {
        d.observe(
            "a",
            Event::Probe(by, ProbeOutcome::Unreachable),
            t0 + 560 * MS,
        );
    }
    run(&mut d, t0 + 300 * MS, t0 + 600 * MS, &["a"]);
    assert_eq!(d.dead("a"), Some((1, Cause::Unresponsive)));
    d.watch("a", 1, 9, t0 + 2000 * MS);
    assert_eq!(d.dead("a"), None);
    d.observe("a", Event::Heard, t0 + 2010 * MS);
    run(&mut d, t0 + 2000 * MS, t0 + 4000 * MS, &[]);
    assert_eq!(d.dead("a"), None);
}

fn deaths(d: &mut Detector) -> Vec<(String, Cause)> {
    d.take_findings()
        .into_iter()
        .filter_map(|f| match f {
            Finding::Dead { node, cause, .. } => Some((node, cause)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stream_that_ends_and_a_port_that_refuses_everyone_is_a_crash() {
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    d.observe("a", Event::Closed, t0 + MS);
    assert_eq!(d.dead("a"), None, "a closed stream alone proves nothing");
    d.observe("a", Event::Refused, t0 + 2 * MS);
    assert_eq!(
        d.take_actions(),
        vec![Action::Probe {
            node: "a".into(),
            via: vec!["b".into(), "c".into()],
            own: false
        }],
        "the other nodes are asked whether it refuses them too"
    );
    d.observe(
        "a",
        Event::Probe(Prober::Peer("b".into()), ProbeOutcome::Refused),
        t0 + 4 * MS,
    );
    assert_eq!(d.dead("a"), None, "one peer has not answered yet");
    d.observe(
        "a",
        Event::Probe(Prober::Peer("c".into()), ProbeOutcome::Unreachable),
        t0 + 5 * MS,
    );
    assert_eq!(d.dead("a"), Some((1, Cause::Crashed)));
    assert_eq!(deaths(&mut d), vec![("a".to_string(), Cause::Crashed)]);
}

#[test]
fn resets_and_refusals_on_the_operators_path_alone_are_vetoed() {
    // A middlebox between the operator and a node that resets the stream and refuses new
    // connections (iptables REJECT --reject-with tcp-reset): the node's peers reach it.
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    let mut t = t0;
    for _ in 0..10 {
        // Everyone beats (the peers that will probe are fresh) until the next reset.
        let next = t + 500 * MS;
        run(&mut d, t, next, &[]);
        t = next;
        d.observe("a", Event::Closed, t);
        d.observe("a", Event::Refused, t + MS);
        for action in d.take_actions() {
            let Action::Probe { via, .. } = action;
            for peer in via {
                d.observe(
                    "a",
                    Event::Probe(Prober::Peer(peer), ProbeOutcome::Reachable(1)),
                    t + 3 * MS,
                );
            }
        }
        d.observe("a", Event::Connected(1), t + 10 * MS);
        d.observe("a", Event::Heard, t + 20 * MS);
    }
    assert_eq!(d.dead("a"), None);
    assert!(
        d.take_findings()
            .iter()
            .any(|f| matches!(f, Finding::Vetoed { .. }))
    );
}

#[test]
fn another_incarnation_answering_is_a_crash_of_the_registered_one() {
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    d.observe("a", Event::Closed, t0 + MS);
    d.observe("a", Event::Connected(99), t0 + 2 * MS);
    assert_eq!(d.dead("a"), Some((1, Cause::Crashed)));
    // Its registration follows: watched afresh.
    d.watch("a", 99, 8, t0 + 3 * MS);
    assert_eq!(d.dead("a"), None);
}

#[test]
fn a_flapping_connection_to_a_live_node_moves_nothing() {
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    let mut t = t0;
    for _ in 0..40 {
        t += 50 * MS;
        d.observe("a", Event::Closed, t);
        d.observe("a", Event::Connected(1), t + MS);
        d.observe("a", Event::Heard, t + 2 * MS);
        d.tick(t + 2 * MS);
    }
    assert_eq!(d.dead("a"), None);
    let findings = d.take_findings();
    assert!(findings.iter().all(|f| !matches!(f, Finding::Dead { .. })));
    assert_eq!(
        findings
            .iter()
            .filter(|f| matches!(f, Finding::Flapped { .. }))
            .count(),
        40
    );
}

#[test]
fn a_dark_node_is_declared_unresponsive_once_every_probe_failed() {
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    let actions = run(&mut d, t0, t0 + 300 * MS, &["a"]);
    assert_eq!(
        actions,
        vec![Action::Probe {
            node: "a".into(),
            via: vec!["b".into(), "c".into()],
            own: true
        }]
    );
    assert!(d.suspected("a"));
    let t = t0 + 320 * MS;
    d.observe(
        "a",
        Event::Probe(Prober::Operator, ProbeOutcome::Unreachable),
        t,
    );
    d.observe(
        "a",
        Event::Probe(Prober::Peer("b".into()), ProbeOutcome::Unreachable),
        t,
    );
    run(&mut d, t0 + 300 * MS, t0 + 525 * MS, &["a"]);
    assert_eq!(d.dead("a"), None, "one peer has not answered yet");
    d.observe(
        "a",
        Event::Probe(Prober::Peer("c".into()), ProbeOutcome::Unreachable),
        t0 + 530 * MS,
    );
    assert_eq!(d.dead("a"), None, "not silent for the whole window yet");
    run(&mut d, t0 + 525 * MS, t0 + 575 * MS, &["a"]);
    assert_eq!(d.dead("a"), Some((1, Cause::Unresponsive)));
}

#[test]
fn a_stall_shorter_than_the_window_moves_nothing() {
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    run(&mut d, t0, t0 + 450 * MS, &["a"]);
    assert!(d.suspected("a"));
    // A GC-like pause ends before the verdict: the stream speaks, the probes come back late.
    d.observe("a", Event::Heard, t0 + 460 * MS);
    d.observe(
        "a",
        Event::Probe(Prober::Operator, ProbeOutcome::Unreachable),
        t0 + 470 * MS,
    );
    run(&mut d, t0 + 450 * MS, t0 + 2000 * MS, &[]);
    assert_eq!(d.dead("a"), None);
    assert!(!d.suspected("a"));
}

#[test]
fn a_partition_between_the_operator_and_a_node_is_vetoed_by_its_peers() {
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    run(&mut d, t0, t0 + 300 * MS, &["a"]);
    let t = t0 + 320 * MS;
    d.observe(
        "a",
        Event::Probe(Prober::Operator, ProbeOutcome::Unreachable),
        t,
    );
    d.observe(
        "a",
        Event::Probe(Prober::Peer("b".into()), ProbeOutcome::Reachable(1)),
        t,
    );
    assert!(!d.suspected("a"));
    let findings = d.take_findings();
    assert!(
        findings.contains(&Finding::Vetoed {
            node: "a".into(),
            by: Prober::Peer("b".into())
        }),
        "{findings:?}"
    );
    // Still cut off from the operator: suspected again after the hold, vetoed again, never dead.
    let mut t = t;
    for _ in 0..5 {
        let actions = run(&mut d, t, t + 3000 * MS, &["a"]);
        assert_eq!(actions.len(), 1, "probed again after the hold");
        t += 3000 * MS;
        d.observe(
            "a",
            Event::Probe(Prober::Peer("c".into()), ProbeOutcome::Reachable(1)),
            t,
        );
    }
    assert_eq!(d.dead("a"), None);
}

#[test]
fn a_starved_detector_or_a_stepped_clock_accuses_nobody() {
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    run(&mut d, t0, t0 + 100 * MS, &[]);
    // The detector did not run for two seconds (a paused process, a jump of the clock): every
    // stream looks silent, none is.
    let late = t0 + 2100 * MS;
    d.tick(late);
    assert!(d.take_actions().is_empty());
    assert!(
        d.take_findings()
            .iter()
            .any(|f| matches!(f, Finding::Starved { .. }))
    );
    for node in ["a", "b", "c"] {
        assert!(!d.suspected(node), "{node}");
    }
    run(&mut d, late, late + 1000 * MS, &[]);
    assert!(deaths(&mut d).is_empty());
}

#[test]
fn half_the_fleet_silent_together_is_a_common_cause() {
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    let actions = run(&mut d, t0, t0 + 2000 * MS, &["a", "b"]);
    assert!(actions.is_empty(), "{actions:?}");
    assert!(!d.suspected("a") && !d.suspected("b"));
    assert!(deaths(&mut d).is_empty());
}

#[test]
fn a_goodbye_makes_the_end_of_the_stream_no_crash() {
    let (mut d, t0) = fleet(&["a", "b", "c"]);
    d.observe("a", Event::Bye, t0 + MS);
    d.observe("a", Event::Closed, t0 + 2 * MS);
    d.observe("a", Event::Refused, t0 + 3 * MS);
    run(&mut d, t0, t0 + 2000 * MS, &["a"]);
    assert_eq!(d.dead("a"), None);
}

#[test]
fn a_refused_connection_before_the_stream_ever_opened_proves_nothing() {
    let t0 = Instant::now();
    let mut d = Detector::new(Timing::default());
    d.watch("a", 1, 7, t0);
    d.observe("a", Event::Refused, t0 + MS);
    run(&mut d, t0, t0 + 2000 * MS, &["a"]);
    assert_eq!(d.dead("a"), None);
}

#[test]
fn with_no_peer_to_ask_the_operators_own_probe_decides() {
    let (mut d, t0) = fleet(&["a"]);
    let actions = run(&mut d, t0, t0 + 300 * MS, &["a"]);
    assert_eq!(
        actions,
        vec![Action::Probe {
            node: "a".into(),
            via: vec![],
            own: true
        }]
    );
    d.observe(
        "a",
        Event::Probe(Prober::Operator, ProbeOutcome::Unreachable),
        t0 + 550 * MS,
    );
    run(&mut d, t0 + 300 * MS, t0 + 600 * MS, &["a"]);
    assert_eq!(d.dead("a"), Some((1, Cause::Unresponsive)));
}

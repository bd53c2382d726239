//! Unit and property tests of the placement math.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn node(name: &str) -> NodeState {
    NodeState {
        name: name.into(),
        version: "v1".into(),
        ready: true,
        draining: false,
        load: 0,
    }
}

fn nodes(names: &[&str]) -> Vec<NodeState> {
    names.iter().map(|n| node(n)).collect()
}

fn weights(list: &[(&str, u32)]) -> Vec<VersionWeight> {
    list.iter()
        .map(|(name, weight)| VersionWeight::new(*name, *weight))
        .collect()
}

fn counts_by_owner(result: &BTreeMap<ShardId, Option<String>>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for owner in result.values().flatten() {
        *counts.entry(owner.clone()).or_insert(0) += 1;
    }
    counts
}

fn owners(result: &BTreeMap<ShardId, Option<String>>) -> BTreeMap<ShardId, String> {
    result
        .iter()
        .filter_map(|(s, o)| o.clone().map(|o| (*s, o)))
        .collect()
}

fn count_of(versions: &[String], name: &str) -> usize {
    versions.iter().filter(|v| *v == name).count()
}

// ---------- weight math ----------

#[test]
fn largest_remainder_concrete_cases() {
    assert_eq!(largest_remainder(10, &[1, 1, 1]), [4, 3, 3]);
    assert_eq!(largest_remainder(16, &[90, 10]), [14, 2]);
    assert_eq!(largest_remainder(16, &[50, 50]), [8, 8]);
    assert_eq!(largest_remainder(100, &[33, 33, 34]), [33, 33, 34]);
    assert_eq!(largest_remainder(2, &[1, 1, 1]), [1, 1, 0]);
    assert_eq!(largest_remainder(7, &[0, 100]), [0, 7]);
    assert_eq!(largest_remainder(0, &[60, 40]), [0, 0]);
    assert_eq!(largest_remainder(5, &[0, 0]), [0, 0]);
    assert_eq!(largest_remainder(5, &[]), Vec::<u32>::new());
    assert_eq!(
        largest_remainder(u32::MAX, &[u32::MAX, u32::MAX])
            .iter()
            .map(|c| u64::from(*c))
            .sum::<u64>(),
        u64::from(u32::MAX)
    );
}

#[test]
fn pool_sizes_give_every_weighted_version_a_node_when_possible() {
    assert_eq!(pool_sizes(3, &[90, 10]), [2, 1]);
    assert_eq!(pool_sizes(10, &[99, 1]), [9, 1]);
    assert_eq!(pool_sizes(3, &[98, 1, 1]), [1, 1, 1]);
    // Fewer nodes than weighted versions: plain largest remainder.
    assert_eq!(pool_sizes(1, &[90, 10]), [1, 0]);
    assert_eq!(pool_sizes(2, &[34, 33, 33]), [1, 1, 0]);
    // A zero weight never gets a node.
    assert_eq!(pool_sizes(4, &[100, 0]), [4, 0]);
    assert_eq!(pool_sizes(0, &[50, 50]), [0, 0]);
    // Ties for the donor go to the later version.
    assert_eq!(pool_sizes(4, &[49, 49, 2]), [2, 1, 1]);
}

#[test]
fn shard_counts_follow_weights() {
    assert_eq!(shard_counts(16, &[90, 10]), [14, 2]);
    assert_eq!(shard_counts(64, &[99, 1]), [63, 1]);
    assert_eq!(shard_counts(4096, &[25, 25, 50]), [1024, 1024, 2048]);
}

proptest! {
    #[test]
    fn apportion_sums_and_stays_near_the_exact_share(
        total in 0u32..5000,
        ws in proptest::collection::vec(0u32..=100, 1..8),
    ) {
        let raw = largest_remainder(total, &ws);
        let adjusted = apportion(total, &ws);
        let sum: u64 = ws.iter().map(|w| u64::from(*w)).sum();
        if sum == 0 {
            prop_assert!(adjusted.iter().all(|c| *c == 0));
            return Ok(());
        }
        prop_assert_eq!(raw.iter().sum::<u32>(), total);
        prop_assert_eq!(adjusted.iter().sum::<u32>(), total);
        let positive = ws.iter().filter(|w| **w > 0).count();
        for (i, w) in ws.iter().enumerate() {
            let exact = u64::from(total) * u64::from(*w);
            let floor = exact / sum;
            prop_assert!(u64::from(raw[i]) == floor || u64::from(raw[i]) == floor + 1);
            if *w == 0 {
                prop_assert_eq!(adjusted[i], 0);
            } else if total as usize >= positive {
                prop_assert!(adjusted[i] >= 1);
            }
        }
    }
}

// ---------- versions ----------

#[test]
fn initial_versions_match_targets() {
    let versions = weights(&[("v1", 90), ("v2", 10)]);
    let result = assign_versions(16, &versions, &[]).unwrap();
    assert_eq!(result.len(), 16);
    assert_eq!(count_of(&result, "v1"), 14);
    assert_eq!(count_of(&result, "v2"), 2);
}

#[test]
fn weight_edit_90_10_to_50_50_moves_exactly_the_difference() {
    let before = assign_versions(16, &weights(&[("v1", 90), ("v2", 10)]), &[]).unwrap();
    let current: Vec<Option<String>> = before.iter().cloned().map(Some).collect();
    let after = assign_versions(16, &weights(&[("v1", 50), ("v2", 50)]), &current).unwrap();
    assert_eq!(count_of(&after, "v2"), 8);
    let moved: Vec<usize> = (0..16).filter(|&i| before[i] != after[i]).collect();
    assert_eq!(moved.len(), 6);
    // Only v1 shards moved, all to v2; v2 kept its two.
    assert!(moved.iter().all(|&i| before[i] == "v1" && after[i] == "v2"));

    // And back: exactly six return.
    let current: Vec<Option<String>> = after.iter().cloned().map(Some).collect();
    let back = assign_versions(16, &weights(&[("v1", 90), ("v2", 10)]), &current).unwrap();
    assert_eq!((0..16).filter(|&i| back[i] != after[i]).count(), 6);
}

#[test]
fn unchanged_weights_move_nothing_and_unknown_versions_are_reassigned() {
    let versions = weights(&[("v1", 50), ("v2", 50)]);
    let first = assign_versions(8, &versions, &[]).unwrap();
    let current: Vec<Option<String>> = first.iter().cloned().map(Some).collect();
    assert_eq!(assign_versions(8, &versions, &current).unwrap(), first);

    let mut stale = current.clone();
    stale[0] = Some("v0".into());
    stale[1] = None;
    let fixed = assign_versions(8, &versions, &stale).unwrap();
    assert_eq!(count_of(&fixed, "v1"), 4);
    assert!(fixed.iter().all(|v| v == "v1" || v == "v2"));
}

#[test]
fn retiring_a_version_moves_only_its_shards() {
    let three = weights(&[("a", 40), ("b", 30), ("c", 30)]);
    let before = assign_versions(10, &three, &[]).unwrap();
    let current: Vec<Option<String>> = before.iter().cloned().map(Some).collect();
    let two = weights(&[("a", 50), ("b", 50), ("c", 0)]);
    let after = assign_versions(10, &two, &current).unwrap();
    assert_eq!(count_of(&after, "c"), 0);
    for i in 0..10 {
        if before[i] != "c" {
            assert_eq!(
                before[i], after[i],
                "shard {i} moved although its version stayed"
            );
        }
    }
}

#[test]
fn bad_version_lists_are_errors() {
    assert_eq!(
        assign_versions(4, &weights(&[("a", 0), ("b", 0)]), &[]),
        Err(PlacementError::NoWeight)
    );
    assert_eq!(assign_versions(4, &[], &[]), Err(PlacementError::NoWeight));
    assert_eq!(
        assign_versions(4, &weights(&[("a", 50), ("a", 50)]), &[]),
        Err(PlacementError::DuplicateVersion("a".into()))
    );
    assert_eq!(
        assign_versions(MAX_SHARDS + 1, &weights(&[("a", 100)]), &[]),
        Err(PlacementError::TooManyShards(MAX_SHARDS + 1))
    );
    assert!(place(u32::MAX, &weights(&[("a", 100)]), &[], &[]).is_err());
}

fn weight_lists() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(0u32..=100, 1..5)
        .prop_filter("some weight", |ws| ws.iter().any(|w| *w > 0))
}

fn named(ws: &[u32]) -> Vec<VersionWeight> {
    ws.iter()
        .enumerate()
        .map(|(i, w)| VersionWeight::new(format!("v{i}"), *w))
        .collect()
}

proptest! {
    #[test]
    fn weight_changes_move_only_the_surplus(
        shards in 1u32..300,
        old in weight_lists(),
        new in weight_lists(),
    ) {
        let len = old.len().min(new.len());
        let (old, new) = (named(&old[..len]), named(&new[..len]));
        prop_assume!(old.iter().any(|v| v.weight > 0) && new.iter().any(|v| v.weight > 0));
        let before = assign_versions(shards, &old, &[]).unwrap();
        let current: Vec<Option<String>> = before.iter().cloned().map(Some).collect();
        let after = assign_versions(shards, &new, &current).unwrap();
        prop_assert_eq!(&after, &assign_versions(shards, &new, &current).unwrap());

        let targets = shard_counts(shards, &new.iter().map(|v| v.weight).collect::<Vec<_>>());
        let mut surplus = 0usize;
        for (i, version) in new.iter().enumerate() {
            prop_assert_eq!(count_of(&after, &version.name), targets[i] as usize);
            surplus += count_of(&before, &version.name).saturating_sub(targets[i] as usize);
        }
        let moved = (0..shards as usize).filter(|&i| before[i] != after[i]).count();
        prop_assert_eq!(moved, surplus);
        // No shard leaves a version that is not over its target.
        for i in 0..shards as usize {
            if before[i] != after[i] {
                let v = new.iter().position(|v| v.name == before[i]).unwrap();
                prop_assert!(count_of(&before, &before[i]) > targets[v] as usize);
            }
        }
    }
}

// ---------- nodes ----------

#[test]
fn shards_spread_evenly_and_ties_break_by_name() {
    let shards: Vec<ShardId> = (0..8).collect();
    let result = assign_nodes(&shards, &nodes(&["c", "a", "b"]), &BTreeMap::new());
    let counts = counts_by_owner(&result);
    assert_eq!(
        counts,
        BTreeMap::from([("a".into(), 3), ("b".into(), 3), ("c".into(), 2)])
    );
    // Same input in another order: same answer.
    assert_eq!(
        result,
        assign_nodes(&shards, &nodes(&["b", "c", "a"]), &BTreeMap::new())
    );
}

#[test]
fn never_places_on_unready_or_draining_nodes() {
    let mut pool = nodes(&["a", "b", "c"]);
    pool[0].ready = false;
    pool[1].draining = true;
    let shards: Vec<ShardId> = (0..5).collect();
    let current = BTreeMap::from([(0, "a".to_string()), (1, "b".to_string())]);
    let result = assign_nodes(&shards, &pool, &current);
    assert!(result.values().all(|o| o.as_deref() == Some("c")));

    pool[2].ready = false;
    let result = assign_nodes(&shards, &pool, &current);
    assert!(result.values().all(Option::is_none));
    assert_eq!(result.len(), 5);
}

#[test]
fn removing_a_node_moves_only_its_shards_to_the_least_loaded() {
    let shards: Vec<ShardId> = (0..9).collect();
    let before = owners(&assign_nodes(
        &shards,
        &nodes(&["a", "b", "c"]),
        &BTreeMap::new(),
    ));
    let mut pool = nodes(&["a", "b", "c"]);
    pool[1].ready = false;
    let after = owners(&assign_nodes(&shards, &pool, &before));
    for (shard, owner) in &before {
        if owner != "b" {
            assert_eq!(&after[shard], owner);
        }
    }
    let mut counts: Vec<usize> =
        counts_by_owner(&after.iter().map(|(s, o)| (*s, Some(o.clone()))).collect())
            .into_values()
            .collect();
    counts.sort_unstable();
    assert_eq!(counts, [4, 5]);
}

#[test]
fn load_breaks_ties_for_the_larger_share() {
    // 7 shards over 2 nodes: one gets 4. With equal current counts, the less loaded one does.
    let mut pool = nodes(&["a", "b"]);
    pool[0].load = 500;
    pool[1].load = 10;
    let shards: Vec<ShardId> = (0..7).collect();
    let counts = counts_by_owner(&assign_nodes(&shards, &pool, &BTreeMap::new()));
    assert_eq!(counts["b"], 4);
    assert_eq!(counts["a"], 3);
}

#[test]
fn adding_a_node_moves_only_to_the_new_node() {
    let shards: Vec<ShardId> = (0..12).collect();
    let before = owners(&assign_nodes(
        &shards,
        &nodes(&["a", "b", "c"]),
        &BTreeMap::new(),
    ));
    let after = owners(&assign_nodes(
        &shards,
        &nodes(&["a", "b", "c", "d"]),
        &before,
    ));
    let moved: Vec<_> = shards.iter().filter(|s| before[s] != after[s]).collect();
    assert_eq!(moved.len(), 3);
    assert!(moved.iter().all(|s| after[s] == "d"));
}

fn pool_strategy() -> impl Strategy<Value = Vec<NodeState>> {
    proptest::collection::vec((any::<bool>(), any::<bool>(), 0u64..4), 1..12).prop_map(|flags| {
        flags
            .into_iter()
            .enumerate()
            .map(|(i, (ready, draining, load))| NodeState {
                name: format!("n{i:02}"),
                version: "v1".into(),
                ready: ready || i == 0,
                draining: draining && i != 0,
                load,
            })
            .collect()
    })
}

fn current_strategy() -> impl Strategy<Value = BTreeMap<ShardId, String>> {
    proptest::collection::btree_map(0u32..200, 0usize..14, 0..200).prop_map(|m| {
        m.into_iter()
            .map(|(s, n)| (s, format!("n{n:02}")))
            .collect()
    })
}

proptest! {
    #[test]
    fn node_assignment_is_balanced_stable_and_deterministic(
        shard_count in 0u32..200,
        pool in pool_strategy(),
        current in current_strategy(),
    ) {
        let shards: Vec<ShardId> = (0..shard_count).collect();
        let result = assign_nodes(&shards, &pool, &current);
        let mut reversed = pool.clone();
        reversed.reverse();
        prop_assert_eq!(&result, &assign_nodes(&shards, &reversed, &current));
        prop_assert_eq!(result.len(), shards.len());

        let eligible: BTreeSet<&str> = pool.iter().filter(|n| n.eligible()).map(|n| n.name.as_str()).collect();
        let counts = counts_by_owner(&result);
        // Every shard placed, only on eligible nodes.
        prop_assert!(result.values().all(|o| o.as_deref().is_some_and(|o| eligible.contains(o))));
        // Balanced over all eligible nodes (including ones with zero shards).
        let per_node: Vec<usize> = eligible.iter().map(|n| counts.get(*n).copied().unwrap_or(0)).collect();
        let (max, min) = (per_node.iter().max().unwrap(), per_node.iter().min().unwrap());
        prop_assert!(max - min <= 1, "unbalanced {:?}", per_node);
        // Stable: each node keeps min(kept, final) of the shards it had.
        for node in &eligible {
            let had: BTreeSet<ShardId> = current.iter()
                .filter(|(s, o)| o.as_str() == *node && **s < shard_count)
                .map(|(s, _)| *s).collect();
            let has: BTreeSet<ShardId> = result.iter()
                .filter(|(_, o)| o.as_deref() == Some(*node)).map(|(s, _)| *s).collect();
            let kept = had.intersection(&has).count();
            prop_assert_eq!(kept, had.len().min(has.len()), "node {} gave shards away while receiving", node);
        }
        // Minimal: a node that gave shards up ends at the larger share, unless every
        // larger-share node held at least as many shards as it did.
        let ceil = *max;
        for node in &eligible {
            let had = current.iter().filter(|(s, o)| o.as_str() == *node && **s < shard_count).count();
            let has = counts.get(*node).copied().unwrap_or(0);
            if had > has && has < ceil {
                for other in &eligible {
                    if counts.get(*other).copied().unwrap_or(0) == ceil {
                        let other_had = current.iter().filter(|(s, o)| o.as_str() == *other && **s < shard_count).count();
                        prop_assert!(other_had >= had.min(ceil), "{} should have kept the larger share", node);
                    }
                }
            }
        }
    }

    #[test]
    fn removing_or_adding_a_node_moves_the_fewest_shards(
        shard_count in 1u32..300,
        size in 1usize..10,
        victim in 0usize..10,
    ) {
        let names: Vec<String> = (0..size).map(|i| format!("n{i}")).collect();
        let pool: Vec<NodeState> = names.iter().map(|n| node(n)).collect();
        let shards: Vec<ShardId> = (0..shard_count).collect();
        let before = owners(&assign_nodes(&shards, &pool, &BTreeMap::new()));

        // Remove one node (when more than one): only its shards move.
        if size > 1 {
            let gone = &names[victim % size];
            let rest: Vec<NodeState> = pool.iter().filter(|n| &n.name != gone).cloned().collect();
            let after = owners(&assign_nodes(&shards, &rest, &before));
            for s in &shards {
                if &before[s] != gone {
                    prop_assert_eq!(&after[s], &before[s]);
                } else {
                    prop_assert_ne!(&after[s], gone);
                }
            }
        }

        // Add one node: every moved shard goes to it, and it takes only the smaller share.
        let mut grown = pool.clone();
        grown.push(node("zz"));
        let after = owners(&assign_nodes(&shards, &grown, &before));
        let moved: Vec<&ShardId> = shards.iter().filter(|s| before[s] != after[s]).collect();
        prop_assert!(moved.iter().all(|s| after[s] == "zz"));
        prop_assert_eq!(moved.len(), shard_count as usize / (size + 1));
    }
}

// ---------- combined placement and moves ----------

#[test]
fn place_puts_each_version_on_its_own_pool() {
    let versions = weights(&[("v1", 75), ("v2", 25)]);
    let mut pool = nodes(&["v1-0", "v1-1", "v1-2"]);
    pool.push(NodeState {
        version: "v2".into(),
        ..node("v2-0")
    });
    let result = place(16, &versions, &pool, &[]).unwrap();
    for p in &result {
        let owner = p.node.as_deref().expect("every pool has a node");
        assert!(
            owner.starts_with(&p.version),
            "{owner} serves {}",
            p.version
        );
    }
    assert_eq!(result.iter().filter(|p| p.version == "v2").count(), 4);
}

#[test]
fn a_version_without_ready_nodes_leaves_its_shards_unowned() {
    let versions = weights(&[("v1", 50), ("v2", 50)]);
    let pool = nodes(&["v1-0"]);
    let result = place(4, &versions, &pool, &[]).unwrap();
    assert!(
        result
            .iter()
            .filter(|p| p.version == "v2")
            .all(|p| p.node.is_none())
    );
    assert!(
        result
            .iter()
            .filter(|p| p.version == "v1")
            .all(|p| p.node.as_deref() == Some("v1-0"))
    );
}

#[test]
fn plan_moves_throttles_only_rebalancing() {
    let some = |s: &str| Some(s.to_string());
    let current = vec![None, some("a"), some("a"), some("a"), some("b"), some("c")];
    let desired = vec![some("b"), some("b"), some("c"), some("a"), some("c"), None];
    let leaving = BTreeSet::from(["b".to_string()]);
    let moves = plan_moves(&current, &desired, 1, &leaving);
    let summary: Vec<_> = moves.iter().map(|m| (m.shard, m.kind)).collect();
    assert_eq!(
        summary,
        [
            (0, MoveKind::Place),
            (1, MoveKind::Rebalance),
            (4, MoveKind::Evacuate)
        ]
    );
    assert_eq!(moves[2].from.as_deref(), Some("b"));
    assert_eq!(moves[2].to, "c");
    // No budget: only placements and evacuations.
    assert_eq!(plan_moves(&current, &desired, 0, &leaving).len(), 2);
}

proptest! {
    #[test]
    fn throttled_moves_converge_to_the_plan(
        shard_count in 1u32..80,
        size in 1usize..6,
        extra in 1usize..4,
        max_moving in 1usize..4,
    ) {
        let shards: Vec<ShardId> = (0..shard_count).collect();
        let pool: Vec<NodeState> = (0..size).map(|i| node(&format!("n{i}"))).collect();
        let mut owners_now = owners(&assign_nodes(&shards, &pool, &BTreeMap::new()));
        let mut grown = pool.clone();
        grown.extend((0..extra).map(|i| node(&format!("m{i}"))));
        let start = owners_now.clone();
        let target = owners(&assign_nodes(&shards, &grown, &owners_now));
        let one_shot = shards.iter().filter(|s| start[s] != target[s]).count();
        let mut steps = 0;
        let mut total_moves = 0;
        loop {
            let desired = assign_nodes(&shards, &grown, &owners_now);
            let current: Vec<Option<String>> = shards.iter().map(|s| owners_now.get(s).cloned()).collect();
            let wanted: Vec<Option<String>> = shards.iter().map(|s| desired[s].clone()).collect();
            let moves = plan_moves(&current, &wanted, max_moving, &BTreeSet::new());
            prop_assert!(moves.len() <= max_moving);
            if moves.is_empty() {
                break;
            }
            total_moves += moves.len();
            for m in moves {
                owners_now.insert(m.shard, m.to);
            }
            steps += 1;
            prop_assert!(steps <= shard_count as usize, "did not converge");
        }
        // Step by step moves as many shards as the one-shot plan, none of them twice (which
        // node keeps the one larger share may differ; both are balanced).
        let changed = shards.iter().filter(|s| start[s] != owners_now[s]).count();
        prop_assert_eq!(total_moves, one_shot);
        prop_assert_eq!(changed, one_shot);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for owner in owners_now.values() {
            *counts.entry(owner.as_str()).or_insert(0) += 1;
        }
        prop_assert_eq!(counts.len(), grown.len().min(shard_count as usize));
        prop_assert!(counts.values().max().unwrap() - counts.values().min().unwrap() <= 1);
    }
}

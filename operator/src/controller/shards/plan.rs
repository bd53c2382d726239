//! Where every shard should be and which moves get it there (pure): version pools from the
//! rollout's shard → version map, owners from [`placement::assign_nodes`] per pool, moves from
//! [`placement::plan_moves`], each move classified as failover, initial placement, evacuation
//! (handoff off a leaving node) or rebalancing (handoff, throttled).
//!
//! Pools: with a `rollout` key, a pool is the set of nodes registered with one version and a
//! shard belongs to the pool its `shard_versions` entry names. Without one every node is in a
//! single pool ([`ANY_POOL`]), whatever version it runs.
//!
//! A shard whose owner is dead or leaving stays in its current version pool when that pool has
//! an eligible node (failover stays in the shard's version pool); only when it has none
//! does it go straight to the pool the rollout wants. A shard in the middle of a handoff counts
//! as already on its target (when the target can still take it), so the plan does not fight
//! the handoff; the handoff itself is driven by [`super::handoff`].

use std::collections::{BTreeMap, BTreeSet};

use switchboard_contract::keys::Assignment;

use super::health::Health;
use crate::placement::{self, MoveKind, ShardId};

/// The single pool of a cluster without a `rollout` key.
pub const ANY_POOL: &str = "*";

/// A node as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The version it registered with.
    pub version: String,
    /// The health verdict.
    pub health: Health,
    /// Open connections (tie-break between equally loaded nodes).
    pub load: u64,
}

/// Why a shard moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its owner is dead: reassign at once with `epoch + 1`.
    Failover,
    /// It never had an owner.
    Place,
    /// Its owner is leaving (draining, terminating): hand it off, not throttled.
    Evacuate,
    /// Its owner is fine but it belongs elsewhere (new node, version move): hand it off,
    /// throttled by `maxShardsMoving`.
    Rebalance,
}

/// One move the plan wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    /// The shard.
    pub shard: ShardId,
    /// Its current owner, if any (dead owners included).
    pub from: Option<String>,
    /// Its new owner.
    pub to: String,
    /// Why.
    pub cause: Cause,
}

/// Inputs of [`plan`].
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// Shards `0..shard_count` exist.
    pub shard_count: u32,
    /// Current assignments.
    pub assignments: &'a BTreeMap<ShardId, Assignment>,
    /// Every node known (registered, or named by an assignment); a missing node is dead.
    pub nodes: &'a BTreeMap<String, NodeView>,
    /// The rollout's shard → version map; `None` when there is no rollout (one pool).
    pub shard_versions: Option<&'a BTreeMap<ShardId, String>>,
    /// Pools where never-assigned shards may be placed now.
    pub open_pools: &'a BTreeSet<String>,
    /// Rebalancing handoffs that may start now (limit minus those in flight).
    pub rebalance_budget: usize,
    /// Pools with more eligible nodes than they should run (scale-down under way): no
    /// rebalancing inside them, their surplus nodes are about to drain.
    pub surplus_pools: &'a BTreeSet<String>,
    /// Shards an operator moved on request: never rebalanced inside their pool (failover,
    /// evacuation and version moves still apply).
    pub pinned: &'a BTreeSet<ShardId>,
    /// Nodes eligible for less than the settle time: no rebalancing handoff inside a pool goes
    /// to them yet (a node restarted after a crash does not pull shards back while their
    /// clients are still resuming on the failover owner). Placement, failover, evacuation and
    /// version moves still may.
    pub settling: &'a BTreeSet<String>,
}

/// The result of [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Moves to make now.
    pub moves: Vec<PlannedMove>,
    /// Desired owner of every shard with a pool (`None`: its pool has no eligible node).
    pub desired: BTreeMap<ShardId, Option<String>>,
}

impl PlanInput<'_> {
    fn health(&self, node: &str) -> Health {
        self.nodes
            .get(node)
            .map(|n| n.health)
            .unwrap_or(Health::Dead(super::health::Reason::LeaseExpired))
    }

    /// The pool of a node running `version`.
    pub fn pool_of(&self, version: &str) -> String {
        if self.shard_versions.is_some() {
            version.to_string()
        } else {
            ANY_POOL.to_string()
        }
    }

    /// The pool the rollout wants `shard` in (its current version when the map lacks it).
    fn wanted_pool(&self, shard: ShardId, current: Option<&Assignment>) -> Option<String> {
        match self.shard_versions {
            None => Some(ANY_POOL.to_string()),
            Some(map) => map
                .get(&shard)
                .cloned()
                .or_else(|| current.map(|a| a.version.clone())),
        }
    }
}

/// Eligible node count per pool.
pub fn eligible_per_pool(input: &PlanInput<'_>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in input.nodes.values() {
        if node.health == Health::Eligible {
            *counts.entry(input.pool_of(&node.version)).or_insert(0) += 1;
        }
    }
    counts
}

/// Computes desired owners and the moves to make now.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let eligible = eligible_per_pool(input);
    let has_eligible = |pool: &str| eligible.get(pool).is_some_and(|c| *c > 0);

    // Pool membership and the owner each shard counts as having for balancing.
    let mut pool_shards: BTreeMap<String, Vec<ShardId>> = BTreeMap::new();
    let mut current_owner: BTreeMap<ShardId, String> = BTreeMap::new();
    let mut in_flight: BTreeSet<ShardId> = BTreeSet::new();
    for shard in 0..input.shard_count {
        let assignment = input.assignments.get(&shard);
        let owner_health = assignment.map(|a| input.health(&a.node));
        let owner_alive = owner_health.is_some_and(Health::alive);
        let target = assignment
            .and_then(|a| a.handoff_to.as_deref())
            .filter(|_| owner_alive);
        let target_view = target.and_then(|t| input.nodes.get(t));
        if target.is_some() {
            in_flight.insert(shard);
        }
        let pool = match (assignment, target_view) {
            (Some(_), Some(view)) if view.health.alive() => Some(input.pool_of(&view.version)),
            (Some(a), _) if !owner_alive || owner_health == Some(Health::Leaving) => {
                let current = input.pool_of(&a.version);
                if has_eligible(&current) {
                    Some(current)
                } else {
                    input.wanted_pool(shard, assignment)
                }
            }
            _ => input.wanted_pool(shard, assignment),
        };
        let Some(pool) = pool else { continue };
        pool_shards.entry(pool).or_default().push(shard);
        let counted = match (target, target_view) {
            (Some(t), Some(view)) if view.health == Health::Eligible => Some(t.to_string()),
            _ => assignment.filter(|_| owner_alive).map(|a| a.node.clone()),
        };
        if let Some(owner) = counted {
            current_owner.insert(shard, owner);
        }
    }

    let mut desired: BTreeMap<ShardId, Option<String>> = BTreeMap::new();
    for (pool, shards) in &pool_shards {
        let nodes: Vec<placement::NodeState> = input
            .nodes
            .iter()
            .filter(|(_, n)| n.health.alive() && input.pool_of(&n.version) == *pool)
            .map(|(name, n)| placement::NodeState {
                name: name.clone(),
                version: n.version.clone(),
                ready: n.health == Health::Eligible,
                draining: false,
                load: n.load,
            })
            .collect();
        desired.extend(placement::assign_nodes(shards, &nodes, &current_owner));
    }

    // Balancing inside a pool waits while shards change version (the rollout's moves come
    // first, and the pools are resized when they are done) and while a pool has surplus
    // nodes: a weight change then moves exactly the shards whose version changes.
    let version_moves_pending = (0..input.shard_count).any(|shard| {
        let Some(a) = input.assignments.get(&shard) else {
            return false;
        };
        let moving_to = a
            .handoff_to
            .as_deref()
            .and_then(|t| input.nodes.get(t))
            .map(|t| input.pool_of(&t.version));
        let here = moving_to.unwrap_or_else(|| input.pool_of(&a.version));
        input
            .wanted_pool(shard, Some(a))
            .is_some_and(|wanted| wanted != here)
    });
    let pool_of_node = |node: &str| input.nodes.get(node).map(|n| input.pool_of(&n.version));

    // plan_moves over every shard not in a handoff.
    let len = input.shard_count as usize;
    let mut current: Vec<Option<String>> = vec![None; len];
    let mut wanted: Vec<Option<String>> = vec![None; len];
    for shard in 0..input.shard_count {
        if in_flight.contains(&shard) {
            continue;
        }
        let index = shard as usize;
        current[index] = input
            .assignments
            .get(&shard)
            .filter(|a| input.health(&a.node).alive())
            .map(|a| a.node.clone());
        wanted[index] = desired.get(&shard).cloned().flatten();
        // A held owner keeps what it has (its Node unreachable, a common-cause NotReady, a
        // start): moving its shards would turn a pause of the kubelet into churn.
        if current[index]
            .as_deref()
            .is_some_and(|from| input.health(from) == Health::Held)
        {
            wanted[index] = current[index].clone();
            continue;
        }
        if let (Some(from), Some(to)) = (&current[index], &wanted[index]) {
            let within = pool_of_node(from).is_some() && pool_of_node(from) == pool_of_node(to);
            let staying = input.health(from) != Health::Leaving;
            let pool = pool_of_node(to).unwrap_or_default();
            if from != to
                && within
                && staying
                && (version_moves_pending
                    || input.surplus_pools.contains(&pool)
                    || input.pinned.contains(&shard)
                    || input.settling.contains(to))
            {
                wanted[index] = None;
            }
        }
    }
    let leaving: BTreeSet<String> = input
        .nodes
        .iter()
        .filter(|(_, n)| n.health == Health::Leaving)
        .map(|(name, _)| name.clone())
        .collect();
    let moves = placement::plan_moves(&current, &wanted, input.rebalance_budget, &leaving)
        .into_iter()
        .filter_map(|m| {
            let assignment = input.assignments.get(&m.shard);
            let cause = match (m.kind, assignment) {
                (MoveKind::Place, Some(_)) => Cause::Failover,
                (MoveKind::Place, None) => {
                    let pool = input.wanted_pool(m.shard, None)?;
                    if !input.open_pools.contains(&pool) {
                        return None;
                    }
                    Cause::Place
                }
                (MoveKind::Evacuate, _) => Cause::Evacuate,
                (MoveKind::Rebalance, _) => Cause::Rebalance,
            };
            Some(PlannedMove {
                shard: m.shard,
                from: assignment.map(|a| a.node.clone()),
                to: m.to,
                cause,
            })
        })
        .collect();
    Plan { moves, desired }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::shards::health::Reason;

    fn view(version: &str, health: Health) -> NodeView {
        NodeView {
            version: version.into(),
            health,
            load: 0,
        }
    }

    fn owned(node: &str, version: &str) -> Assignment {
        Assignment {
            node: node.into(),
            epoch: 3,
            version: version.into(),
            handoff_to: None,
        }
    }

    /// No names or shards: what the tests' inputs borrow for the sets they leave empty.
    const NO_POOLS: &BTreeSet<String> = &BTreeSet::new();
    const NO_SHARDS: &BTreeSet<ShardId> = &BTreeSet::new();

    /// An input with no rollout, no open pool and nothing surplus, pinned or settling; each
    /// test overrides only the fields it is about.
    fn base_input<'a>(
        shard_count: u32,
        assignments: &'a BTreeMap<ShardId, Assignment>,
        nodes: &'a BTreeMap<String, NodeView>,
        rebalance_budget: usize,
    ) -> PlanInput<'a> {
        PlanInput {
            shard_count,
            assignments,
            nodes,
            shard_versions: None,
            open_pools: NO_POOLS,
            rebalance_budget,
            surplus_pools: NO_POOLS,
            pinned: NO_SHARDS,
            settling: NO_POOLS,
        }
    }

    fn causes(plan: &Plan) -> Vec<(ShardId, Option<&str>, &str, Cause)> {
        plan.moves
            .iter()
            .map(|m| (m.shard, m.from.as_deref(), m.to.as_str(), m.cause))
            .collect()
    }

    #[test]
    fn everything_is_placed_evenly_when_the_pool_is_open() {
        let nodes = BTreeMap::from([
            ("a".to_string(), view("v1", Health::Eligible)),
            ("b".to_string(), view("v1", Health::Eligible)),
        ]);
        let assignments = BTreeMap::new();
        let open = BTreeSet::from([ANY_POOL.to_string()]);
        let input = PlanInput {
            open_pools: &open,
            ..base_input(6, &assignments, &nodes, 0)
        };
        let plan = plan(&input);
        assert_eq!(plan.moves.len(), 6);
        assert!(plan.moves.iter().all(|m| m.cause == Cause::Place));
        let on_a = plan.moves.iter().filter(|m| m.to == "a").count();
        assert_eq!(on_a, 3);

        let closed = BTreeSet::new();
        let input = PlanInput {
            open_pools: &closed,
            ..input
        };
        assert!(super::plan(&input).moves.is_empty());
    }

    #[test]
    fn a_dead_owner_fails_over_within_its_version_pool() {
        let nodes = BTreeMap::from([
            (
                "a".to_string(),
                view("v1", Health::Dead(Reason::LeaseExpired)),
            ),
            ("b".to_string(), view("v1", Health::Eligible)),
            ("c".to_string(), view("v2", Health::Eligible)),
        ]);
        let assignments = BTreeMap::from([
            (0, owned("a", "v1")),
            (1, owned("b", "v1")),
            (2, owned("c", "v2")),
        ]);
        let versions = BTreeMap::from([
            (0, "v1".to_string()),
            (1, "v1".to_string()),
            (2, "v2".to_string()),
        ]);
        let input = PlanInput {
            shard_versions: Some(&versions),
            ..base_input(3, &assignments, &nodes, 0)
        };
        assert_eq!(
            causes(&plan(&input)),
            vec![(0, Some("a"), "b", Cause::Failover)]
        );
    }

    #[test]
    fn draining_evacuates_without_budget_and_rebalancing_waits_for_it() {
        let nodes = BTreeMap::from([
            ("a".to_string(), view("v1", Health::Leaving)),
            ("b".to_string(), view("v1", Health::Eligible)),
            ("c".to_string(), view("v1", Health::Eligible)),
        ]);
        let assignments: BTreeMap<ShardId, Assignment> = (0..4)
            .map(|s| (s, owned(if s < 2 { "a" } else { "b" }, "v1")))
            .collect();
        let input = base_input(4, &assignments, &nodes, 0);
        let plan = plan(&input);
        let evacuated: Vec<_> = plan
            .moves
            .iter()
            .filter(|m| m.cause == Cause::Evacuate)
            .map(|m| m.shard)
            .collect();
        assert_eq!(evacuated, vec![0, 1]);
        // b keeps two, c gets both of a's: no rebalancing needed, none allowed anyway.
        assert!(plan.moves.iter().all(|m| m.cause == Cause::Evacuate));
        assert!(plan.moves.iter().all(|m| m.to == "c"));
    }

    #[test]
    fn version_moves_are_throttled_and_only_go_to_eligible_nodes() {
        let assignments: BTreeMap<ShardId, Assignment> =
            (0..4).map(|s| (s, owned("a", "v1"))).collect();
        let versions: BTreeMap<ShardId, String> = (0..4)
            .map(|s| (s, if s < 2 { "v1" } else { "v2" }.to_string()))
            .collect();
        let run = |v2: Health| {
            let nodes = BTreeMap::from([
                ("a".to_string(), view("v1", Health::Eligible)),
                ("b".to_string(), view("v2", v2)),
            ]);
            let input = PlanInput {
                shard_versions: Some(&versions),
                ..base_input(4, &assignments, &nodes, 1)
            };
            plan(&input)
        };
        // The v2 pool is not ready: nothing moves.
        assert!(run(Health::Held).moves.is_empty());
        assert_eq!(
            causes(&run(Health::Eligible)),
            vec![(2, Some("a"), "b", Cause::Rebalance)]
        );
    }

    #[test]
    fn no_balancing_inside_a_pool_during_version_moves_or_with_surplus_nodes() {
        let nodes = BTreeMap::from([
            ("a".to_string(), view("v1", Health::Eligible)),
            ("b".to_string(), view("v1", Health::Eligible)),
            ("c".to_string(), view("v2", Health::Eligible)),
        ]);
        // a holds 3 v1 shards, b none; shard 3 should go to v2.
        let assignments: BTreeMap<ShardId, Assignment> =
            (0..4).map(|s| (s, owned("a", "v1"))).collect();
        let moving: BTreeMap<ShardId, String> = (0..4)
            .map(|s| (s, if s < 3 { "v1" } else { "v2" }.to_string()))
            .collect();
        let settled: BTreeMap<ShardId, String> = (0..4).map(|s| (s, "v1".to_string())).collect();
        let run = |versions, surplus: BTreeSet<String>| {
            let input = PlanInput {
                shard_versions: Some(versions),
                surplus_pools: &surplus,
                ..base_input(4, &assignments, &nodes, 10)
            };
            plan(&input)
                .moves
                .into_iter()
                .map(|m| (m.shard, m.from, m.to, m.cause))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            run(&moving, BTreeSet::new()),
            vec![(3, Some("a".to_string()), "c".to_string(), Cause::Rebalance)],
            "only the version move"
        );
        assert_eq!(
            run(&settled, BTreeSet::from(["v1".to_string()])),
            vec![],
            "v1 is shrinking"
        );
        assert_eq!(
            run(&settled, BTreeSet::new()).len(),
            2,
            "settled: b gets its share"
        );
    }

    #[test]
    fn a_shard_in_handoff_is_left_to_the_handoff() {
        let nodes = BTreeMap::from([
            ("a".to_string(), view("v1", Health::Eligible)),
            ("b".to_string(), view("v1", Health::Eligible)),
        ]);
        let mut moving = owned("a", "v1");
        moving.handoff_to = Some("b".into());
        let assignments = BTreeMap::from([(0, moving), (1, owned("a", "v1"))]);
        let input = base_input(2, &assignments, &nodes, 5);
        let plan = plan(&input);
        assert!(plan.moves.is_empty(), "{:?}", plan.moves);
        assert_eq!(plan.desired[&0].as_deref(), Some("b"));
        assert_eq!(plan.desired[&1].as_deref(), Some("a"));
    }

    #[test]
    fn a_held_owner_keeps_its_shards() {
        let nodes = BTreeMap::from([
            ("a".to_string(), view("v1", Health::Held)),
            ("b".to_string(), view("v1", Health::Eligible)),
        ]);
        let assignments = BTreeMap::from([
            (0, owned("a", "v1")),
            (1, owned("a", "v1")),
            (2, owned("b", "v1")),
        ]);
        let open = BTreeSet::from([ANY_POOL.to_string()]);
        let input = PlanInput {
            open_pools: &open,
            ..base_input(3, &assignments, &nodes, 3)
        };
        assert!(causes(&plan(&input)).is_empty());
    }

    #[test]
    fn an_orphan_without_any_eligible_node_stays() {
        let nodes = BTreeMap::from([("b".to_string(), view("v1", Health::Held))]);
        let assignments = BTreeMap::from([(0, owned("gone", "v1"))]);
        let input = base_input(1, &assignments, &nodes, 1);
        let plan = plan(&input);
        assert!(plan.moves.is_empty());
        assert_eq!(plan.desired[&0], None);
    }
}

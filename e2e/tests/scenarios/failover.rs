//! Session scenarios with real clients: a co-host call through a non-owner node (c), the
//! owner's container killed with kill -9 (d), the owner frozen by SIGSTOP (e), weight edits
//! during a call (f), the owner's pod network cut (l) and the kubelet stopped (m). The
//! user-visible promise checked in d, e, f and l: the call's clients resume on the new owner
//! with the same session, the room's members and the call's state intact, and gapless event
//! seqs; in m nothing moves and the call goes on. Bad input for the failure detector: the
//! operator cut off from the owner while everyone else reaches it (o), a flapping detector
//! connection (p), stalls of the owner shorter than the detector's window (q): nothing moves.
//! Tracing (t): one trace from the Redirect and the join to the resume after a kill -9.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use switchboard_e2e::cluster::eventually;
use switchboard_e2e::otel::{Collector, SpanRecord};
use switchboard_e2e::real_node::Fault;
use switchboard_operator::crd::RoomShard;

use switchboard_client::{Client, ConnectOptions};
use switchboard_protocol::traceparent::TraceParent;
use switchboard_protocol::{Hangup, Message, Resume};

use crate::calls::{Member, STEP, connected_call, options};
use crate::fleet::quick;
use crate::support::{
    Env, EnvOptions, NS, OPERATOR_NS, PATIENCE, SHARDS, ScenarioTimer, measured, node_url,
    pod_ready,
};

/// A call in progress: two members connected through non-owner nodes, the call Connected.
pub(crate) struct Call {
    pub(crate) room: String,
    pub(crate) id: String,
    pub(crate) owner: Pod,
    pub(crate) alice: Member,
    pub(crate) bob: Member,
}

pub(crate) fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Connects alice and bob to nodes that do not own `room` (checking the Redirect to the
/// owner) and brings a call between them to Connected.
pub(crate) async fn call_through_non_owners(
    env: &Env,
    room: &str,
    silence: Option<Duration>,
) -> Call {
    call_through_non_owners_traced(env, room, silence, None).await
}

/// [`call_through_non_owners`] with both clients sending `trace` as their `traceparent`.
pub(crate) async fn call_through_non_owners_traced(
    env: &Env,
    room: &str,
    silence: Option<Duration>,
    trace: Option<TraceParent>,
) -> Call {
    let owner = env.owner_of(room).await;
    let owner_url = node_url(&owner);
    let others: Vec<Pod> = env
        .node_pods()
        .await
        .into_iter()
        .filter(|p| name(p) != name(&owner) && pod_ready(p))
        .collect();
    if others.is_empty() {
        env.fail("no Ready node besides the owner");
    }
    let entry_a = node_url(&others[0]);
    let entry_b = node_url(&others[others.len() - 1]);
    let traced = |token: String| ConnectOptions {
        traceparent: trace,
        ..options(token, silence)
    };
    let mut alice =
        Member::connect_with(&entry_a, "alice", traced(env.token("alice", room).await)).await;
    let mut bob = Member::connect_with(&entry_b, "bob", traced(env.token("bob", room).await)).await;
    for member in [&alice, &bob] {
        let session = member.client.session();
        assert_eq!(
            session.url,
            owner_url,
            "{} connected to {} and should have been redirected to the owner {} ({})",
            member.user,
            member.entry,
            owner_url,
            name(&owner)
        );
        assert_eq!(
            member.client.welcome().node,
            name(&owner),
            "Welcome names the owner"
        );
    }
    alice.join(room).await;
    let joined = bob.join(room).await;
    assert!(
        joined.members.contains(&"alice".to_string()),
        "bob sees alice in the room: {joined:?}"
    );
    let id = match connected_call(&mut alice, &mut bob, room).await {
        Ok(id) => id,
        Err(e) => env.fail(format!("co-host call did not reach Connected: {e}")),
    };
    Call {
        room: room.to_string(),
        id,
        owner,
        alice,
        bob,
    }
}

fn shard_owner(shard: &RoomShard) -> (Option<String>, i64) {
    shard
        .status
        .as_ref()
        .map_or((None, 0), |s| (s.node.clone(), s.epoch))
}

/// When each client's library reported a resumed session after `t0` (polled from its
/// session info, so the time is when the library got the Welcome, not when the test read it).
fn watch_resumes(
    call: &Call,
    t0: Instant,
) -> tokio::task::JoinHandle<Vec<(String, Option<Duration>)>> {
    let watched: Vec<_> = [&call.alice, &call.bob]
        .iter()
        .map(|m| {
            (
                m.user.clone(),
                m.client.sender(),
                m.client.session().reconnects,
            )
        })
        .collect();
    tokio::spawn(async move {
        let mut seen: Vec<(String, Option<Duration>)> =
            watched.iter().map(|(u, _, _)| (u.clone(), None)).collect();
        while t0.elapsed() < PATIENCE && seen.iter().any(|(_, at)| at.is_none()) {
            for ((_, sender, base), (_, at)) in watched.iter().zip(seen.iter_mut()) {
                let info = sender.session();
                if at.is_none() && info.reconnects > *base && info.resumed {
                    *at = Some(t0.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    })
}

/// After the owner failed at `t0`: the room's shard is reassigned with a failover record, the
/// new owner has the room's members, both members' libraries resume their sessions on the new
/// owner, and the call survived. Checks everything and fails once with every broken
/// expectation.
async fn expect_failover(env: &Env, call: &mut Call, before: &RoomShard, t0: Instant, label: &str) {
    let (old_node, old_epoch) = shard_owner(before);
    let old_node = old_node.unwrap_or_default();
    let mut failures: Vec<String> = Vec::new();
    let resumes = watch_resumes(call, t0);

    // What kubectl shows: the shard moved to another node with epoch + 1 and a failover record
    // (phase Recovering until the new owner reports serving, then Assigned).
    let moved = |phase_assigned: bool| {
        let old_node = old_node.clone();
        let room = call.room.clone();
        move || {
            let old_node = old_node.clone();
            let room = room.clone();
            async move {
                let shard = env.shard_of_room(&room).await?;
                let status = shard.status.clone()?;
                // The failover record names the dead node; the shard may already be back on
                // it (its process restarted in place and the pool rebalanced by handoff).
                let moved = status.node.is_some()
                    && status.epoch > old_epoch
                    && status
                        .last_failover
                        .as_ref()
                        .is_some_and(|f| f.from == old_node && f.to != old_node)
                    && (!phase_assigned
                        || serde_json::to_value(status.phase).ok()? == json!("Assigned"));
                moved.then_some(status)
            }
        }
    };
    if eventually("reassignment", PATIENCE, moved(false))
        .await
        .is_ok()
    {
        measured(
            &format!("{label}: failure -> shard reassigned (new node, epoch + 1)"),
            t0.elapsed(),
        );
    }
    let waited = eventually(
        "the room's shard Assigned to another node with a failover record",
        PATIENCE,
        moved(true),
    )
    .await;
    let mut new_owner = None;
    match waited {
        Err(e) => {
            let now = env
                .shard_of_room(&call.room)
                .await
                .and_then(|s| s.status)
                .unwrap_or_default();
            failures.push(format!(
                "{e}: shard {} was on {old_node} at epoch {old_epoch} and is now on {:?} at \
                 epoch {} ({:?}), lastFailover {:?}",
                before.spec.index, now.node, now.epoch, now.phase, now.last_failover
            ));
        }
        Ok(status) => {
            measured(
                &format!("{label}: failure -> shard Assigned elsewhere (phase Assigned)"),
                t0.elapsed(),
            );
            let failover = status.last_failover.clone().unwrap_or_else(|| {
                unreachable!("the wait checked lastFailover");
            });
            eprintln!(
                "{label}: shard {} {old_node} (epoch {old_epoch}) -> {} (epoch {}), \
                 lastFailover {{from: {}, reason: {}, detectedMs: {}, recoveredMs: {:?}}}",
                before.spec.index,
                status.node.clone().unwrap_or_default(),
                status.epoch,
                failover.from,
                failover.reason,
                failover.detected_ms,
                failover.recovered_ms
            );
            if failover.from != old_node {
                failures.push(format!("lastFailover.from {} != {old_node}", failover.from));
            }
            if failover.recovered_ms.is_none() {
                failures.push(format!(
                    "lastFailover.recoveredMs is not set: the new owner {:?} never reported \
                     serving shard {} (docs/architecture.md: `serving` in its ack)",
                    status.node, before.spec.index
                ));
            }
            new_owner = status.node.clone();
            // The new owner restored the room: a newcomer sees both (suspended) members.
            if let Err(e) = newcomer_sees_members(env, call, &old_node).await {
                failures.push(e);
            }
        }
    }

    // What the clients see: their library reconnects and resumes the same session.
    let resumed = resumes.await.unwrap_or_default();
    if resumed.iter().all(|(_, at)| at.is_some()) {
        let last = resumed
            .iter()
            .filter_map(|(_, at)| *at)
            .max()
            .unwrap_or_default();
        measured(&format!("{label}: failure -> both clients resumed"), last);
    }
    for (member, (_, at)) in [&mut call.alice, &mut call.bob].into_iter().zip(&resumed) {
        // On the shard's owner as of now: a rebalance after the failover may have migrated
        // the clients again (they follow Migrate), so compare with a fresh read.
        let mut info;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let owner = env
                .shard_of_room(&call.room)
                .await
                .and_then(|s| s.status)
                .and_then(|s| s.node);
            info = member.client.session();
            if owner.as_deref().is_none_or(|o| info.node == o)
                || tokio::time::Instant::now() >= deadline
            {
                new_owner = owner.or(new_owner);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let on_owner = new_owner.as_deref().is_none_or(|owner| info.node == owner);
        if at.is_some() && info.session == member.session && on_owner {
            continue;
        }
        failures.push(format!(
            "{}'s client did not resume session {} on the new owner {:?} within {PATIENCE:?}: \
             it is at {} ({}), session {}, resumed {}, {} reconnect(s); problems: {:?}",
            member.user,
            member.session,
            new_owner,
            info.url,
            info.node,
            info.session,
            info.resumed,
            info.reconnects,
            member.problems()
        ));
        // Diagnose the server side: resume by hand, directly at the new owner.
        if let Some(owner) = &new_owner {
            match manual_resume(env, member, &call.room, owner).await {
                Ok(()) => failures.push(format!(
                    "  ...but a client that resumes session {} directly at {owner} is welcomed \
                     back (server side fine; the rest of the scenario uses that connection)",
                    member.session
                )),
                Err(e) => failures.push(format!("  ...and resuming by hand at {owner}: {e}")),
            }
        }
    }

    if let Err(e) = call_intact(call).await {
        failures.push(e);
    }
    if !failures.is_empty() {
        env.fail(format!("{label}:\n- {}", failures.join("\n- ")));
    }
}

/// Reconnects `member` straight to `owner` with an explicit resume of its session (what the
/// library should do by itself); replaces the member's client on success.
async fn manual_resume(
    env: &Env,
    member: &mut Member,
    room: &str,
    owner: &str,
) -> Result<(), String> {
    let pod = env.pod(owner).await.ok_or("the new owner's pod is gone")?;
    let mut options = options(env.token(&member.user, room).await, None);
    options.resume = Some(Resume {
        session: member.session.clone(),
        last_seq: member.seqs.get(room).copied().unwrap_or(0),
    });
    let client = Client::connect(&node_url(&pod), options)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let welcome = client.welcome().clone();
    if !welcome.resumed {
        return Err(format!("not resumed: {welcome:?}"));
    }
    member.client = client;
    Ok(())
}

/// A newcomer joining the room (through a node other than `avoid`) sees alice and bob.
async fn newcomer_sees_members(env: &Env, call: &Call, avoid: &str) -> Result<(), String> {
    let entry = env
        .node_pods()
        .await
        .into_iter()
        .find(|p| name(p) != avoid && pod_ready(p))
        .map(|p| node_url(&p))
        .ok_or("no Ready node to connect a newcomer to")?;
    let mut carol =
        Member::connect(&entry, "carol", env.token("carol", &call.room).await, None).await;
    let joined = carol.join(&call.room).await;
    carol.client.close().await;
    for user in ["alice", "bob", "carol"] {
        if !joined.members.contains(&user.to_string()) {
            return Err(format!(
                "room {} lost member {user}: a newcomer sees {:?}",
                call.room, joined.members
            ));
        }
    }
    Ok(())
}

/// The call is still up (hanging it up ends it for both) and nobody saw a gap, a lost
/// session or an error.
async fn call_intact(call: &mut Call) -> Result<(), String> {
    // Raw, so it also works on a connection the library did not see the call on.
    call.alice
        .client
        .send_raw(Message::Hangup(Hangup {
            request_id: 0,
            room: call.room.clone(),
            call_id: call.id.clone(),
            from: call.alice.user.clone(),
            reason: "done".into(),
        }))
        .await
        .map_err(|e| format!("hangup: {e}"))?;
    for member in [&mut call.alice, &mut call.bob] {
        member.call_state(&call.id, "ended").await.map_err(|e| {
            format!(
                "the call did not survive (no `ended` after hangup): {e}; problems: {:?}",
                member.problems()
            )
        })?;
    }
    call.alice.drain(Duration::from_millis(300)).await;
    call.bob.drain(Duration::from_millis(300)).await;
    let problems: Vec<String> = [&call.alice, &call.bob]
        .iter()
        .flat_map(|m| m.problems())
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("clients saw: {problems:#?}"))
    }
}

/// A newcomer sees the members and the call is intact; fails the scenario otherwise.
pub(crate) async fn expect_room_and_call_intact(env: &Env, call: &mut Call, avoid: &str) {
    let result = match newcomer_sees_members(env, call, avoid).await {
        Ok(()) => call_intact(call).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        env.fail(e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_cohost_call_through_a_non_owner_node() {
    let _t = ScenarioTimer::start("c_cohost_call_through_a_non_owner_node");
    let env = env_or_skip!(EnvOptions::default());
    env.deploy_demo(false, quick).await;
    let started = Instant::now();
    let mut call = call_through_non_owners(&env, "studio-c", None).await;
    measured(
        "c: connect via non-owners (redirect) -> call Connected",
        started.elapsed(),
    );
    let owner = name(&call.owner);
    expect_room_and_call_intact(&env, &mut call, &owner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_owner_killed_shards_fail_over_and_the_call_resumes() {
    let _t = ScenarioTimer::start("d_owner_killed_shards_fail_over_and_the_call_resumes");
    let env = env_or_skip!(EnvOptions::default());
    env.deploy_demo(false, quick).await;
    let mut call = call_through_non_owners(&env, "studio-d", None).await;
    let before = env
        .shard_of_room(&call.room)
        .await
        .expect("the room's RoomShard");
    let t0 = Instant::now();
    env.check(env.cluster.fault(Fault::Kill, NS, &name(&call.owner)));
    expect_failover(&env, &mut call, &before, t0, "d (kill -9 owner)").await;
}

/// The owner of a call stops answering (`fault`: SIGSTOP, or its pod's network cut): its lease
/// expires, the shard fails over, the clients (1 s heartbeats) notice and resume on the new
/// owner; then `heal` undoes the fault.
async fn owner_goes_dark(room: &str, fault: Fault, heal: Fault, label: &str) {
    let env = env_or_skip!(EnvOptions::default());
    // A 1 s heartbeat lets clients notice a silent node within seconds.
    env.deploy_demo(false, |sigc| {
        quick(sigc);
        sigc["spec"]["config"]["heartbeatSeconds"] = json!(1);
    })
    .await;
    let mut call = call_through_non_owners(&env, room, Some(Duration::from_secs(3))).await;
    let before = env
        .shard_of_room(&call.room)
        .await
        .expect("the room's RoomShard");
    let owner = name(&call.owner);
    let t0 = Instant::now();
    env.check(env.cluster.fault(fault, NS, &owner));
    expect_failover(&env, &mut call, &before, t0, label).await;
    env.check(env.cluster.fault(heal, NS, &owner));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_owner_frozen_lease_expires_and_the_call_resumes() {
    let _t = ScenarioTimer::start("e_owner_frozen_lease_expires_and_the_call_resumes");
    owner_goes_dark("studio-e", Fault::Stop, Fault::Cont, "e (SIGSTOP owner)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_owner_network_cut_lease_expires_and_the_call_resumes() {
    let _t = ScenarioTimer::start("l_owner_network_cut_lease_expires_and_the_call_resumes");
    owner_goes_dark(
        "studio-l",
        Fault::Cut,
        Fault::Heal,
        "l (owner's network cut)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_kubelet_stopped_nothing_moves_and_the_call_goes_on() {
    let _t = ScenarioTimer::start("m_kubelet_stopped_nothing_moves_and_the_call_goes_on");
    let env = env_or_skip!(EnvOptions::default());
    env.deploy_demo(false, quick).await;
    let mut call = call_through_non_owners(&env, "studio-m", None).await;
    let before: BTreeMap<u32, (Option<String>, i64)> = env
        .shards()
        .await
        .iter()
        .map(|(i, s)| (*i, shard_owner(s)))
        .collect();
    // The node turns NotReady after the controller-manager's grace period (16 s) and its pods
    // with it, all at once: a common cause, not a failure of the signaling nodes, which keep
    // running and keep their leases.
    env.check(env.cluster.kubelet(false));
    let waited = eventually("the node NotReady", PATIENCE, || async {
        let out = env
            .cluster
            .kubectl(
                &[
                    "get",
                    "nodes",
                    "-o",
                    "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
                ],
                None,
            )
            .ok()?;
        (out.trim() != "True").then_some(())
    })
    .await;
    env.check(waited);
    // Long enough for the node lifecycle controller to mark every pod NotReady and for the
    // operator to see it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after: BTreeMap<u32, (Option<String>, i64)> = env
        .shards()
        .await
        .iter()
        .map(|(i, s)| (*i, shard_owner(s)))
        .collect();
    if after != before {
        env.fail(format!(
            "shards moved while only the kubelet was down:\nbefore {before:?}\nafter  {after:?}"
        ));
    }
    // The kubelet back: the pods turn Ready again, still nothing moves, and the call that
    // went on meanwhile is intact.
    env.check(env.cluster.kubelet(true));
    env.wait_ready().await;
    let recovered: BTreeMap<u32, (Option<String>, i64)> = env
        .shards()
        .await
        .iter()
        .map(|(i, s)| (*i, shard_owner(s)))
        .collect();
    if recovered != before {
        env.fail(format!(
            "shards moved when the kubelet came back:\nbefore {before:?}\nafter  {recovered:?}"
        ));
    }
    let owner = name(&call.owner);
    expect_room_and_call_intact(&env, &mut call, &owner).await;
}

/// Shards per version by largest remainder (the operator's split of `SHARDS` by weight).
fn split(weights: &[(&str, u32)]) -> BTreeMap<String, u32> {
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    let mut remainders: Vec<(u32, usize)> = Vec::new();
    for (i, (name, weight)) in weights.iter().enumerate() {
        let exact = SHARDS * weight;
        out.insert((*name).to_string(), exact / total);
        remainders.push((exact % total, i));
    }
    let mut left = SHARDS - out.values().sum::<u32>();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        *out.entry(weights[i].0.to_string()).or_insert(0) += 1;
        left -= 1;
    }
    out.retain(|_, n| *n > 0);
    out
}

/// Waits until the shards are split by `weights`, each Assigned to a Ready node of its
/// version's pool.
async fn versions_follow(env: &Env, weights: &[(&str, u32)]) {
    let want = split(weights);
    let waited = eventually(
        &format!("shards split {want:?}"),
        Duration::from_secs(120),
        || async {
            let pods = env.node_pods().await;
            let version_of: BTreeMap<String, String> = pods
                .iter()
                .filter(|p| pod_ready(p))
                .filter_map(|p| {
                    let version = p.metadata.labels.as_ref()?.get("switchboard.dev/version")?;
                    Some((name(p), version.clone()))
                })
                .collect();
            let mut got: BTreeMap<String, u32> = BTreeMap::new();
            for shard in env.shards().await.values() {
                let status = shard.status.as_ref()?;
                if serde_json::to_value(status.phase).ok()? != json!("Assigned") {
                    return None;
                }
                let version = status.version.clone()?;
                if version_of.get(status.node.as_ref()?) != Some(&version) {
                    return None;
                }
                *got.entry(version).or_insert(0) += 1;
            }
            (got == want).then_some(())
        },
    )
    .await;
    env.check(waited);
}

fn rollout_patch(weights: &[(&str, u32)]) -> String {
    let docs = crate::support::examples();
    let mut versions: Vec<Value> = docs
        .iter()
        .find(|d| d["kind"] == "ProtocolRollout")
        .and_then(|d| d["spec"]["versions"].as_array().cloned())
        .expect("examples/basic has a ProtocolRollout with versions");
    for version in &mut versions {
        let name = version["name"].as_str().unwrap_or_default().to_string();
        let weight = weights
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, w)| *w);
        version["weight"] = json!(weight);
    }
    json!({"spec": {"versions": versions}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_weight_edits_keep_every_session() {
    let _t = ScenarioTimer::start("f_weight_edits_keep_every_session");
    let env = env_or_skip!(EnvOptions::default());
    let mut docs = env.demo_manifests(true, quick);
    if let Some(rollout) = docs.iter_mut().find(|d| d["kind"] == "ProtocolRollout") {
        // Move four shards at a time without pauses (the example waits 30 s per shard).
        rollout["spec"]["strategy"]["maxShardsMoving"] = json!(4);
        rollout["spec"]["strategy"]["pauseBetweenStepsSeconds"] = json!(0);
    }
    env.apply(&docs);
    env.wait_ready().await;
    versions_follow(&env, &[("v1", 90), ("v2", 10)]).await;

    // A room served by v1 now, so the last step must move it.
    let mut room = None;
    for i in 0..64 {
        let candidate = format!("studio-f-{i}");
        let shard = env.shard_of_room(&candidate).await.expect("RoomShard");
        if shard.status.as_ref().and_then(|s| s.version.as_deref()) == Some("v1") {
            room = Some(candidate);
            break;
        }
    }
    let room = room.unwrap_or_else(|| env.fail("no room on a v1 shard"));
    let mut call = call_through_non_owners(&env, &room, None).await;
    let sessions = (call.alice.session.clone(), call.bob.session.clone());

    for weights in [[("v1", 50), ("v2", 50)], [("v1", 0), ("v2", 100)]] {
        let started = Instant::now();
        env.merge_patch("prollout", &rollout_patch(&weights));
        versions_follow(&env, &weights).await;
        measured(
            &format!("f: weights -> {weights:?}: shards follow"),
            started.elapsed(),
        );
        let table = env.kubectl(&["get", "prollout,rshard"], None);
        eprintln!("{table}");
    }
    let waited = eventually("every node pod on v2 at 0/100", PATIENCE, || async {
        let pods = env.node_pods().await;
        let v2 = pods
            .iter()
            .filter(|p| pod_ready(p))
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("switchboard.dev/version"))
                    .is_some_and(|v| v == "v2")
            })
            .count();
        (pods.len() == 3 && v2 == 3).then_some(())
    })
    .await;
    env.check(waited);

    // The room moved to v2: both members were migrated and resumed the same session.
    let new_owner = env.owner_of(&call.room).await;
    for (member, session) in [(&mut call.alice, &sessions.0), (&mut call.bob, &sessions.1)] {
        let deadline = Instant::now() + STEP;
        while member.client.session().node != name(&new_owner) && Instant::now() < deadline {
            let _ = member.next(Duration::from_millis(200)).await;
        }
        member.drain(Duration::from_millis(200)).await;
        let info = member.client.session();
        assert_eq!(
            info.node,
            name(&new_owner),
            "{} follows its room to the v2 owner; problems: {:?}",
            member.user,
            member.problems()
        );
        assert!(
            !member.welcomes.is_empty() && member.welcomes.iter().all(|(_, w)| w.resumed),
            "{}: every reconnect resumed the session: {:?}",
            member.user,
            member.welcomes
        );
        assert_eq!(&info.session, session, "{}: same session", member.user);
    }
    let owner = name(&new_owner);
    expect_room_and_call_intact(&env, &mut call, &owner).await;
}

/// Runs `iptables ARGS` in the network namespace of the host process `pid` (a pod's container).
fn pod_iptables(pid: u32, args: &[&str]) -> Result<(), String> {
    let netns = format!("--net=/proc/{pid}/ns/net");
    let out = std::process::Command::new("nsenter")
        .args([netns.as_str(), "--", "iptables", "-w", "5"])
        .args(args)
        .output()
        .map_err(|e| format!("nsenter iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The host pid of the operator's container.
async fn operator_pid(env: &Env) -> u32 {
    let pods = env.operator_pods().await;
    let pod = pods
        .first()
        .and_then(|p| p.metadata.name.clone())
        .unwrap_or_else(|| env.fail("no operator pod"));
    env.check(env.cluster.container_pid(OPERATOR_NS, &pod))
}

/// Every shard's owner and epoch.
async fn owners(env: &Env) -> BTreeMap<u32, (Option<String>, i64)> {
    env.shards()
        .await
        .iter()
        .map(|(i, s)| (*i, shard_owner(s)))
        .collect()
}

/// Fails the scenario if any shard changed owner or epoch since `before`.
async fn expect_nothing_moved(
    env: &Env,
    before: &BTreeMap<u32, (Option<String>, i64)>,
    what: &str,
) {
    let after = owners(env).await;
    if after != *before {
        let moves: Vec<String> = env
            .shards()
            .await
            .values()
            .filter_map(|s| {
                s.status
                    .as_ref()?
                    .last_move
                    .as_ref()
                    .map(|m| format!("{m:?}"))
            })
            .collect();
        env.fail(format!(
            "shards moved during {what}:\nbefore {before:?}\nafter  {after:?}\nlast moves {moves:?}"
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u_operator_cut_from_the_owner_nothing_moves_and_the_call_goes_on() {
    // A partition between the operator and a node whose clients (and peers) still reach it:
    // the detector's suspicion is vetoed by the other nodes' probes; nothing moves.
    let _t =
        ScenarioTimer::start("u_operator_cut_from_the_owner_nothing_moves_and_the_call_goes_on");
    let env = env_or_skip!(EnvOptions::default());
    env.deploy_demo(false, quick).await;
    let mut call = call_through_non_owners(&env, "studio-o", None).await;
    let before = owners(&env).await;
    let owner_ip = crate::support::pod_ip(&call.owner).unwrap_or_default();
    let pid = operator_pid(&env).await;
    let rules: [[&str; 8]; 2] = [
        [
            "-I", "OUTPUT", "-d", &owner_ip, "-j", "DROP", "-m", "comment",
        ],
        [
            "-I", "INPUT", "-s", &owner_ip, "-j", "DROP", "-m", "comment",
        ],
    ];
    for rule in &rules {
        let mut args = rule.to_vec();
        args.extend(["--comment", "switchboard-e2e-partition"]);
        env.check(pod_iptables(pid, &args));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    expect_nothing_moved(&env, &before, "the partition").await;
    for rule in &rules {
        let mut args = rule.to_vec();
        args[0] = "-D";
        args.extend(["--comment", "switchboard-e2e-partition"]);
        env.check(pod_iptables(pid, &args));
    }
    let log = env.operator_log_tail(400);
    if !log.contains("reachable; no failover") {
        env.fail("the operator never logged a vetoed suspicion of the cut-off owner");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_nothing_moved(&env, &before, "the heal").await;
    let owner = name(&call.owner);
    expect_room_and_call_intact(&env, &mut call, &owner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v_flapping_detector_connection_nothing_moves() {
    // Half of the operator's packets to the owner's admin port are answered with a reset
    // (its liveness stream breaks again and again, and reconnects are refused): the other
    // nodes still reach the owner, so nothing moves.
    let _t = ScenarioTimer::start("v_flapping_detector_connection_nothing_moves");
    let env = env_or_skip!(EnvOptions::default());
    env.deploy_demo(false, quick).await;
    let mut call = call_through_non_owners(&env, "studio-p", None).await;
    let before = owners(&env).await;
    let owner_ip = crate::support::pod_ip(&call.owner).unwrap_or_default();
    let pid = operator_pid(&env).await;
    let rule = [
        "OUTPUT",
        "-d",
        &owner_ip,
        "-p",
        "tcp",
        "--dport",
        "9100",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.5",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ];
    let mut add = vec!["-I"];
    add.extend(rule);
    env.check(pod_iptables(pid, &add));
    tokio::time::sleep(Duration::from_secs(15)).await;
    let mut delete = vec!["-D"];
    delete.extend(rule);
    env.check(pod_iptables(pid, &delete));
    expect_nothing_moved(&env, &before, "15 s of a flapping detector connection").await;
    let owner = name(&call.owner);
    expect_room_and_call_intact(&env, &mut call, &owner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_owner_stalls_shorter_than_the_window_nothing_moves() {
    // GC-like pauses of the owner, each shorter than the detector's window (a suspicion at
    // 300 ms, a verdict not before 550 ms and every probe failing): nothing moves.
    let _t = ScenarioTimer::start("q_owner_stalls_shorter_than_the_window_nothing_moves");
    let env = env_or_skip!(EnvOptions::default());
    env.deploy_demo(false, quick).await;
    let mut call = call_through_non_owners(&env, "studio-q", None).await;
    let before = owners(&env).await;
    let owner = name(&call.owner);
    let pid = env.check(env.cluster.container_pid(NS, &owner));
    let process = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .unwrap_or_else(|| env.fail("no pid"));
    for _ in 0..10 {
        env.check(rustix::process::kill_process(
            process,
            rustix::process::Signal::STOP,
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        env.check(rustix::process::kill_process(
            process,
            rustix::process::Signal::CONT,
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    expect_nothing_moved(&env, &before, "ten 300 ms stalls of the owner").await;
    expect_room_and_call_intact(&env, &mut call, &owner).await;
}

/// What the collector holds of `trace`, one line per span (for failure messages).
fn describe(spans: &[&SpanRecord]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} on {} ({:?})",
                s.name,
                s.instance,
                s.attribute("outcome").unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the spans of trace `trace_id` satisfy `want` (a list of what is still missing,
/// empty when satisfied); fails with what is missing and what the trace holds.
async fn expect_trace(
    env: &Env,
    collector: &Collector,
    trace_id: &str,
    what: &str,
    want: impl Fn(&[&SpanRecord]) -> Vec<String>,
) {
    let found = eventually(what, PATIENCE, || {
        let spans = collector.spans();
        let of_trace: Vec<&SpanRecord> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
        let done = want(&of_trace).is_empty();
        async move { done.then_some(()) }
    })
    .await;
    if found.is_err() {
        let spans = collector.spans();
        let of_trace: Vec<&SpanRecord> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
        env.fail(format!(
            "{what}: missing {}; trace {trace_id} holds: {}",
            want(&of_trace).join("; "),
            describe(&of_trace)
        ));
    }
}

/// A span named `name` from `instance` (any instance when empty) with attribute `outcome`
/// equal to `outcome` (any when empty), or what is missing.
fn has(spans: &[&SpanRecord], name: &str, instance: &str, outcome: &str) -> Option<String> {
    let found = spans.iter().any(|s| {
        s.name == name
            && (instance.is_empty() || s.instance == instance)
            && (outcome.is_empty() || s.attribute("outcome") == Some(outcome))
    });
    (!found).then(|| format!("{name} on {instance:?} (outcome {outcome:?})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t_one_trace_from_redirect_and_join_to_the_failover_resume() {
    // The chart's tracing.otlpEndpoint points the operator, and through it every node pod, at
    // an OpenTelemetry Collector on this machine. Both clients send one traceparent: the
    // trace shows the entry node's Redirect, the owner's handshake, join, commits and call,
    // and, after the owner's kill -9, the resume on the new owner; the operator's failover is
    // a placement span of its own.
    let _t = ScenarioTimer::start("t_one_trace_from_redirect_and_join_to_the_failover_resume");
    let env = env_or_skip!(EnvOptions {
        tracing: true,
        ..EnvOptions::default()
    });
    let collector = env
        .collector
        .as_ref()
        .expect("tracing: true starts a collector");
    env.deploy_demo(false, quick).await;
    let trace = TraceParent::random();
    let trace_id = hex(&trace.trace_id);
    let client_span = hex(&trace.parent_id);
    let mut call = call_through_non_owners_traced(&env, "studio-t", None, Some(trace)).await;
    let owner = name(&call.owner);
    eprintln!(
        "trace {trace_id}: owner {owner}, entries {} and {}",
        call.alice.entry, call.bob.entry
    );
    expect_trace(&env, collector, &trace_id, "the join's spans", |spans| {
        let mut missing: Vec<String> = [
            has(spans, "handshake", "", "redirected"),
            has(spans, "handshake", &owner, "welcomed"),
            has(spans, "join", &owner, ""),
            has(spans, "commit", &owner, ""),
            has(spans, "call.invite", &owner, ""),
            has(spans, "call.transition", &owner, ""),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(redirect) = spans
            .iter()
            .find(|s| s.attribute("outcome") == Some("redirected"))
            && redirect.instance == owner
        {
            missing.push(format!(
                "a Redirect from a node other than the owner {owner}"
            ));
        }
        if !spans
            .iter()
            .any(|s| s.name == "join" && s.parent_id == client_span)
        {
            missing.push(format!(
                "a join whose parent is the client's span {client_span}"
            ));
        }
        missing
    })
    .await;

    let before = env
        .shard_of_room(&call.room)
        .await
        .expect("the room's RoomShard");
    let t0 = Instant::now();
    env.check(env.cluster.fault(Fault::Kill, NS, &owner));
    expect_failover(&env, &mut call, &before, t0, "t (kill -9 owner, traced)").await;
    // The resume on the node that took the shard over. (The killed container restarts in
    // place, and the pool may hand the shard back to it later: that resume is in the trace
    // too, on the old owner's name.)
    expect_trace(
        &env,
        collector,
        &trace_id,
        "the failover resume's span",
        |spans| {
            let resumed_elsewhere = spans.iter().any(|s| {
                s.name == "resume"
                    && s.instance != owner
                    && s.attribute("outcome") == Some("resumed")
            });
            if resumed_elsewhere {
                Vec::new()
            } else {
                vec![format!(
                    "a resume span (outcome resumed) on a node other than {owner}"
                )]
            }
        },
    )
    .await;
    let operator = eventually("the operator's failover span", PATIENCE, || async {
        collector.spans().into_iter().find(|s| {
            s.service == "switchboard-operator"
                && s.name == "placement"
                && s.attribute("revoked").is_some_and(|n| n != "0")
        })
    })
    .await;
    if let Err(e) = operator {
        env.fail(format!(
            "{e}: no placement span with a revoked lease from the operator"
        ));
    }
    measured("t: kill -9 -> resume span exported", t0.elapsed());
}

//! Scenario k: `kubectl switchboard drain` (the kubectl plugin, found by kubectl on PATH)
//! drains the node that owns a room with a call in progress. The operator hands the node's
//! shards off in two phases; the call's clients are migrated to the new owner and resume the
//! same sessions; the call survives (zero lost sessions) and no failover is recorded.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use switchboard_e2e::cluster::{eventually, tools_bin};

use crate::calls::STEP;
use crate::failover::{call_through_non_owners, expect_room_and_call_intact, name};
use crate::fleet::quick;
use crate::support::{
    CLUSTER, Env, EnvOptions, NS, PATIENCE, ScenarioTimer, measured, skip_reason,
};

/// `kubectl switchboard <args>` on the scenario's cluster, the plugin next to the other
/// binaries of this build (e2e/scripts/run-scenarios builds it).
fn kubectl_switchboard(env: &Env, args: &[&str]) -> Result<String, String> {
    let plugin_dir = PathBuf::from(env!("CARGO_BIN_EXE_pod-runner"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    if !plugin_dir.join("kubectl-switchboard").is_file() {
        return Err(format!(
            "kubectl-switchboard not found in {} (cargo build --bin kubectl-switchboard)",
            plugin_dir.display()
        ));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![plugin_dir];
    dirs.extend(std::env::split_paths(&path));
    let out = Command::new(tools_bin().join("kubectl"))
        .arg("switchboard")
        .args(args)
        .env("KUBECONFIG", &env.cluster.kubeconfig)
        .env(
            "PATH",
            std::env::join_paths(dirs).map_err(|e| e.to_string())?,
        )
        .output()
        .map_err(|e| format!("run kubectl: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("$ kubectl switchboard {}\n{stdout}{stderr}", args.join(" "));
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("kubectl switchboard {}: {stderr}", args.join(" ")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_kubectl_switchboard_drain_keeps_the_call() {
    let _t = ScenarioTimer::start("k_kubectl_switchboard_drain_keeps_the_call");
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let env = Env::start(EnvOptions::default()).await;
    env.deploy_demo(false, quick).await;
    let mut call = call_through_non_owners(&env, "studio-k", None).await;
    let owner = name(&call.owner);
    let sessions = (call.alice.session.clone(), call.bob.session.clone());
    let before = env
        .shard_of_room(&call.room)
        .await
        .unwrap_or_else(|| env.fail("the room's RoomShard"));
    let before_status = before.status.clone().unwrap_or_default();

    let started = Instant::now();
    let out = env.check(kubectl_switchboard(
        &env,
        &[
            "drain",
            &owner,
            "-n",
            NS,
            "--cluster",
            CLUSTER,
            "--timeout",
            "60",
        ],
    ));
    measured(
        "k: kubectl switchboard drain -> node owns no shards",
        started.elapsed(),
    );
    if !out.contains(&format!("pod/{owner} owns no shards")) {
        env.fail(format!("drain did not finish: {out}"));
    }

    // The room's shard moved by handoff: another node, epoch + 1, no failover recorded.
    let after = env.check(
        eventually(
            "the room's shard Assigned to another node",
            PATIENCE,
            || async {
                let status = env.shard_of_room(&call.room).await?.status?;
                let moved = status.node.as_deref().is_some_and(|n| n != owner)
                    && status.epoch > before_status.epoch
                    && serde_json::to_value(status.phase).ok()? == "Assigned";
                moved.then_some(status)
            },
        )
        .await,
    );
    assert_eq!(
        after.last_failover, before_status.last_failover,
        "a drain is a handoff, not a failover"
    );
    let new_owner = after.node.clone().unwrap_or_default();

    // Both members were migrated to the new owner and resumed the same session.
    for (member, session) in [(&mut call.alice, &sessions.0), (&mut call.bob, &sessions.1)] {
        let deadline = Instant::now() + STEP;
        while member.client.session().node != new_owner && Instant::now() < deadline {
            let _ = member.next(Duration::from_millis(200)).await;
        }
        member.drain(Duration::from_millis(200)).await;
        let info = member.client.session();
        assert_eq!(
            info.node,
            new_owner,
            "{} follows its room to the new owner; problems: {:?}",
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
    measured(
        "k: drain -> both clients resumed on the new owner",
        started.elapsed(),
    );
    expect_room_and_call_intact(&env, &mut call, &owner).await;

    // status shows the drained pod; the undo makes the node take shards again.
    let status = env.check(kubectl_switchboard(&env, &["status", CLUSTER, "-n", NS]));
    assert!(status.contains("DRAINED"), "{status}");
    env.check(kubectl_switchboard(
        &env,
        &["drain", &owner, "--undo", "-n", NS],
    ));
    env.check(
        eventually("the undrained node owns shards again", PATIENCE, || async {
            let per_node = env.shards_per_node().await;
            per_node.get(&owner).is_some_and(|n| *n > 0).then_some(())
        })
        .await,
    );
}

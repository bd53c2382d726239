//! End-to-end scenarios (issue 6): Switchboard installed on a real local control plane the way
//! `e2e/up` installs it, driven with kubectl and real clients, asserting what users see.
//!
//! Each scenario runs on its own [`support::Env`] (control plane, 3 runner nodes, fleet etcd,
//! CRDs, operator from the Helm chart), so scenarios cannot leak state into each other and the
//! environment is removed when the scenario ends. Scenarios that do not exercise the
//! ProtocolRollout apply `examples/basic/` without it (a single-version fleet), so each one
//! depends only on the parts it tests. Run them with `e2e/scripts/run-scenarios` (builds the
//! binaries, runs one scenario at a time, prints per-scenario times); every scenario prints
//! `SCENARIO <name> passed|FAILED in N ms` and its measurements as `MEASURED <what>: N ms`.
//!
//! They skip (with a message) only when the Kubernetes tool binaries are absent; the test
//! command (`e2e/test`) builds them first.

#[path = "scenarios/calls.rs"]
mod calls;
#[path = "scenarios/support.rs"]
mod support;

/// Starts the scenario's environment with `options`, or returns from the test with a message
/// when the Kubernetes tool binaries are absent (defined before the modules that use it).
macro_rules! env_or_skip {
    ($options:expr) => {
        match crate::support::skip_reason() {
            Some(reason) => {
                eprintln!("SKIP: {reason}");
                return;
            }
            None => crate::support::Env::start($options).await,
        }
    };
}

#[path = "scenarios/disruption.rs"]
mod disruption;
#[path = "scenarios/failover.rs"]
mod failover;
#[path = "scenarios/fleet.rs"]
mod fleet;
#[path = "scenarios/outside.rs"]
mod outside;
#[path = "scenarios/plugin.rs"]
mod plugin;

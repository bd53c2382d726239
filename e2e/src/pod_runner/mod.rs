//! The pod runner: plays one or more Kubernetes nodes for the local e2e control plane and runs
//! each pod bound to them as a local process on its own loopback address (command line in
//! `e2e/src/bin/pod-runner.rs`; each module's doc states its rules).
//!
//! Pure logic: [`addr`] (address plan), [`image`] (image → binary), [`expand`] (`$(VAR)`),
//! [`launch`] (command, args, env, path and address rewriting), [`downward`], [`refs`],
//! [`volumes`] (planning), [`lifecycle`] (phase and restart decisions), [`probe`] (thresholds),
//! [`status`] (building), [`registry`], [`config`]. I/O: [`node`] (registration, heartbeats),
//! [`watch`], [`worker`] (one task per pod), [`prepare`] (everything before exec), [`process`],
//! [`fetch`], [`http`], [`control`], [`runner`].

pub mod addr;
pub mod config;
pub mod control;
pub mod downward;
pub mod expand;
pub mod fetch;
pub mod http;
pub mod image;
pub mod launch;
pub mod lifecycle;
pub mod node;
pub mod prepare;
pub mod probe;
pub mod process;
pub mod refs;
pub mod registry;
pub mod runner;
pub mod status;
pub mod volumes;
pub mod watch;
pub mod worker;

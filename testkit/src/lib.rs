//! The one test kit of the workspace: every integration test, bench and tool that needs real
//! etcd or kube-apiserver processes starts them here ([`Etcd`], [`ApiServer`],
//! [`ControlPlane`]), with certificates from [`Pki`], ports from [`free_port`], private
//! directories from [`TempDir`], and waits with [`eventually`] under one [`patience`].
//!
//! Binaries come from [`tools`]: `$SWITCHBOARD_ETCD_BIN` / `$SWITCHBOARD_KUBE_APISERVER_BIN`,
//! else `$SWITCHBOARD_TOOLS_DIR/bin`, else `PATH`, else `<repo>/e2e/.tools/bin` (built by
//! `e2e/scripts/build-tools`).
//!
//! Starting a process has two forms: `try_start` returns a typed [`Error`] (tools and
//! benches), `start` panics with the same message (tests).
#![forbid(unsafe_code)]

mod apiserver;
mod dirs;
mod error;
mod etcd;
mod net;
mod pki;
pub mod tools;
mod wait;

pub use apiserver::{ApiServer, ControlPlane};
pub use dirs::TempDir;
pub use error::Error;
pub use etcd::{Etcd, EtcdOptions, delete, get, get_with_lease, put};
pub use net::{free_port, free_ports};
pub use pki::{Pki, ServerCert};
pub use wait::{Ready, eventually, patience};

/// Sends `tracing` output to the test's captured output (level from `RUST_LOG`, default warn).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
}

//! The test kit's one error type.

use std::path::PathBuf;

/// Why a test process or fixture could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary the kit needs is nowhere it looks.
    #[error("no {name} binary: {hint}")]
    MissingTool {
        /// The binary's name.
        name: &'static str,
        /// How to provide it.
        hint: &'static str,
    },
    /// A file system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An `openssl` command failed.
    #[error("openssl {args}: {stderr}")]
    Openssl {
        /// Its arguments.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A process exited before it was ready.
    #[error("{name} exited with {status}; log {}:\n{log}", path.display())]
    Exited {
        /// Which process.
        name: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its log file.
        path: PathBuf,
        /// The end of its log.
        log: String,
    },
    /// A process did not become ready within the patience.
    #[error("{name} not ready within {after:?}; log {}:\n{log}", path.display())]
    NotReady {
        /// Which process.
        name: &'static str,
        /// How long the kit waited.
        after: std::time::Duration,
        /// Its log file.
        path: PathBuf,
        /// The end of its log.
        log: String,
    },
    /// A client could not be built or connected.
    #[error("{what}: {detail}")]
    Client {
        /// Which client.
        what: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// Wraps an I/O error with what was attempted.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The last `max` bytes of a log file (logs can be long; the end says why).
pub(crate) fn log_tail(path: &std::path::Path, max: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = log.len().saturating_sub(max);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_string()
}

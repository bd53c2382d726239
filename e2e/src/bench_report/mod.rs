//! `bench-report`: turns the records `e2e/bench` collected (bench JSON lines, cluster-mode
//! metrics, bad-input RSS curves, operator-bench and criterion estimates) into the main
//! generated section of docs/benchmarks.md and the SVG plots under docs/img. (`failover`
//! reads failover-bench's report.)

pub mod cluster;
pub mod failover;
pub mod markdown;
pub mod plots;
pub mod prom;
pub mod records;
pub mod runs;
pub mod stress;
pub mod summary;
pub mod tables;

use std::path::{Path, PathBuf};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A record or input file is not what `e2e/bench` writes.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Drawing a plot.
    #[error("plot {name}: {reason}")]
    Plot {
        /// The plot's file name.
        name: String,
        /// The plotting backend's error.
        reason: String,
    },
    /// docs/benchmarks.md has a begin marker without an end marker (or the reverse).
    #[error("{0}")]
    Markers(String),
}

/// Reads `path` to a string.
pub(crate) fn read(path: &Path) -> Result<String, ReportError> {
    std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

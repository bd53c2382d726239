//! What `e2e/bench` records: one JSON object per line in `results.jsonl`, plus the
//! operator-bench report and criterion's estimates, read from their own files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{ReportError, read};

/// One line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// The machine and the run (written once at the start and once at the end).
    Meta {
        /// `start` or `end`.
        phase: String,
        /// Online CPUs.
        #[serde(default)]
        cores: Option<u64>,
        /// MemTotal, KiB.
        #[serde(default)]
        mem_kib: Option<u64>,
        /// `uname -r`.
        #[serde(default)]
        kernel: Option<String>,
        /// `/proc/loadavg`'s first three fields.
        #[serde(default)]
        loadavg: Option<String>,
        /// UTC time.
        #[serde(default)]
        date: Option<String>,
        /// `--quick` mode.
        #[serde(default)]
        quick: bool,
        /// Repetitions per point.
        #[serde(default)]
        reps: Option<u64>,
        /// The soft open-file limit the bench ran with.
        #[serde(default)]
        nofile: Option<u64>,
        /// CPUs the servers were pinned to (empty: not pinned).
        #[serde(default)]
        server_cpus: Option<String>,
        /// CPUs the load generator was pinned to (empty: not pinned).
        #[serde(default)]
        load_cpus: Option<String>,
    },
    /// One `signaling-node bench --json` run.
    Run {
        /// `conns` (join/relay/RSS at N connections), `churn` (connects/s), `throughput` (the
        /// repetitions at the target's highest rate found) or `equal_rate` (every target at
        /// one offered rate).
        figure: String,
        /// `switchboard`, `baseline`, `tcp` or `centrifugo`.
        target: String,
        /// Connections.
        n: u64,
        /// Repetition number.
        #[serde(default)]
        rep: u64,
        /// Offered relay rate, msgs/s.
        #[serde(default)]
        rate: f64,
        /// The bench's exit status (non-zero when it counted errors).
        #[serde(default)]
        exit: i64,
        /// `/proc/loadavg`'s first three fields when the run started.
        #[serde(default)]
        loadavg: Option<String>,
        /// The bench's JSON line.
        bench: Value,
    },
    /// One step of the bounded search for the highest rate meeting the P99 bound.
    Search {
        /// Target.
        target: String,
        /// Offered rate, msgs/s.
        rate: f64,
        /// Whether it met the bound (P99 ≤ bound, nothing lost).
        ok: bool,
        /// `/proc/loadavg`'s first three fields when the step started.
        #[serde(default)]
        loadavg: Option<String>,
        /// The bench's JSON line (null when it printed none).
        bench: Value,
    },
    /// One cluster-mode run: the bench against a node committing to an fsyncing etcd, and the
    /// node's and etcd's histogram lines before and after it.
    Cluster {
        /// Repetition number.
        rep: u64,
        /// Connections.
        n: u64,
        /// The bench's exit status.
        #[serde(default)]
        exit: i64,
        /// `/proc/loadavg`'s first three fields when the run started.
        #[serde(default)]
        loadavg: Option<String>,
        /// The bench's JSON line.
        bench: Value,
        /// The node's metric lines before the run.
        node_before: Vec<String>,
        /// … and after it.
        node_after: Vec<String>,
        /// etcd's metric lines before the run.
        etcd_before: Vec<String>,
        /// … and after it.
        etcd_after: Vec<String>,
    },
    /// One bad-input run (`bench --stress`).
    Stress {
        /// The bench's exit status.
        #[serde(default)]
        exit: i64,
        /// `/proc/loadavg`'s first three fields when the run started.
        #[serde(default)]
        loadavg: Option<String>,
        /// Extra `serve` arguments of the node.
        #[serde(default)]
        serve_args: String,
        /// The bench's JSON report.
        report: Value,
    },
    /// A step that was skipped or failed, with the reason (shown in the report).
    Note {
        /// Which figure.
        figure: String,
        /// What happened.
        text: String,
    },
}

impl Record {
    /// Parses every non-empty line of `text`.
    pub fn parse_all(text: &str) -> Result<Vec<Self>, String> {
        crate::json_lines::parse(text)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Vec<Self>, ReportError> {
        Self::parse_all(&read(path)?).map_err(|reason| ReportError::Parse {
            path: path.to_path_buf(),
            reason,
        })
    }
}

/// A number field of a bench JSON line.
pub fn num(bench: &Value, key: &str) -> Option<f64> {
    bench.get(key).and_then(Value::as_f64)
}

/// Looks `path` (dot-separated) up in `value`; prints like the shell wants it.
pub fn lookup(value: &Value, path: &str) -> Option<Value> {
    let mut cur = value;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur.clone())
}

/// The last line of `text` that is a JSON object (the bench prints its summary first).
pub fn last_json_object(text: &str) -> Option<Value> {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(Value::is_object)
}

/// A JSON object printed as a whole document (possibly pretty-printed, possibly after other
/// lines): the whole text, else everything from the first line that opens an object.
pub fn json_document(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text)
        && v.is_object()
    {
        return Some(v);
    }
    let start = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(0))
        .filter(|&i| text[i..].starts_with('{'))
        .min()?;
    serde_json::from_str::<Value>(&text[start..])
        .ok()
        .filter(Value::is_object)
}

/// The first field (1-minute load) of a `/proc/loadavg` excerpt.
pub fn load1(loadavg: &str) -> Option<f64> {
    loadavg.split_whitespace().next()?.parse().ok()
}

/// Criterion's point estimates: benchmark id (`group/function`) → median ns per iteration.
pub fn criterion_estimates(dir: &Path) -> Result<BTreeMap<String, f64>, ReportError> {
    let mut out = BTreeMap::new();
    let groups = match std::fs::read_dir(dir) {
        Ok(groups) => groups,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(ReportError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for group in groups.flatten() {
        let Ok(functions) = std::fs::read_dir(group.path()) else {
            continue;
        };
        for function in functions.flatten() {
            let file: PathBuf = function.path().join("new").join("estimates.json");
            if !file.is_file() {
                continue;
            }
            let value: Value =
                serde_json::from_str(&read(&file)?).map_err(|e| ReportError::Parse {
                    path: file.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(ns) = lookup(&value, "median.point_estimate").and_then(|v| v.as_f64()) {
                out.insert(
                    format!(
                        "{}/{}",
                        group.file_name().to_string_lossy(),
                        function.file_name().to_string_lossy()
                    ),
                    ns,
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_finds_fields() {
        let text = r#"
{"kind":"meta","phase":"start","cores":2,"mem_kib":1000,"kernel":"6.1","loadavg":"1 2 3","quick":true}
{"kind":"run","figure":"conns","target":"switchboard","n":1000,"rep":1,"rate":1000,"bench":{"join_p99_ms":1.5}}
{"kind":"search","target":"tcp","rate":4000,"ok":false,"bench":{"relay_p99_ms":25}}
{"kind":"note","figure":"failover","text":"not measured in this run"}
"#;
        let records = Record::parse_all(text).unwrap();
        assert_eq!(records.len(), 4);
        let Record::Run { bench, n, .. } = &records[1] else {
            panic!("not a run");
        };
        assert_eq!(*n, 1000);
        assert_eq!(num(bench, "join_p99_ms"), Some(1.5));
        assert_eq!(num(bench, "missing"), None);
        assert!(Record::parse_all("{\"kind\":\"bogus\"}").is_err());
        let err = Record::parse_all("\n{}").unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
    }

    #[test]
    fn finds_the_bench_json_line_and_nested_fields() {
        let out = "== switchboard ==\n  join p50 1 ms\n{\"a\":{\"b\":2}}\n";
        let v = last_json_object(out).unwrap();
        assert_eq!(lookup(&v, "a.b"), Some(serde_json::json!(2)));
        assert_eq!(lookup(&v, "a.c"), None);
        assert!(last_json_object("no json here\n[1]").is_none());
        let pretty = "etcd started\n{\n  \"a\": 1\n}\n";
        assert_eq!(json_document(pretty), Some(serde_json::json!({"a": 1})));
        assert_eq!(
            json_document("{\"b\": 2}"),
            Some(serde_json::json!({"b": 2}))
        );
        assert!(json_document("nothing").is_none());
    }

    #[test]
    fn reads_criterion_estimates() {
        let dir = std::env::temp_dir().join(format!("bench-report-crit-{}", std::process::id()));
        let new = dir.join("frame_ice").join("crc32").join("new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":12.0},"median":{"point_estimate":11.5}}"#,
        )
        .unwrap();
        let est = criterion_estimates(&dir).unwrap();
        assert_eq!(est.get("frame_ice/crc32"), Some(&11.5));
        assert!(criterion_estimates(&dir.join("absent")).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

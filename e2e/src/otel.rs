//! A real OTLP receiver for the tracing scenario: the OpenTelemetry Collector built from its
//! Go module (`e2e/tools/otelcol`, `e2e/scripts/build-tools`), receiving OTLP/gRPC and writing
//! every export as one JSON line, and the reader of those lines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::ClusterError;

/// One exported span, as the collector wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRecord {
    /// `service.name` of the process that sent it.
    pub service: String,
    /// `service.instance.id` (the node's or operator pod's name).
    pub instance: String,
    /// Trace id, lowercase hex.
    pub trace_id: String,
    /// Span id, lowercase hex.
    pub span_id: String,
    /// Parent span id, lowercase hex (empty for a root span).
    pub parent_id: String,
    /// Span name.
    pub name: String,
    /// String and integer attributes, as text.
    pub attributes: Vec<(String, String)>,
}

impl SpanRecord {
    /// The attribute `key`, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A collector process listening for OTLP/gRPC; killed when dropped.
pub struct Collector {
    child: Child,
    /// Where the pods send spans: `http://<listen>`.
    pub endpoint: String,
    spans: PathBuf,
    dir: PathBuf,
}

impl Collector {
    /// Starts the collector on `ip:port`, writing into a fresh directory under `run_dir`;
    /// waits until its port accepts connections.
    pub fn start(ip: &str, port: u16, run_dir: &Path) -> Result<Self, ClusterError> {
        let bin = crate::cluster::tools_bin().join("otelcol");
        if !bin.exists() {
            return Err(ClusterError::Collector(format!(
                "{} (run e2e/scripts/build-tools)",
                bin.display()
            )));
        }
        let dir = run_dir.join("otelcol");
        std::fs::create_dir_all(&dir).map_err(|source| ClusterError::Io {
            what: dir.display().to_string(),
            source,
        })?;
        let spans = dir.join("spans.jsonl");
        let config = dir.join("config.yaml");
        let listen = format!("{ip}:{port}");
        std::fs::write(&config, collector_config(&listen, &spans)).map_err(|source| {
            ClusterError::Io {
                what: config.display().to_string(),
                source,
            }
        })?;
        let log =
            std::fs::File::create(dir.join("otelcol.log")).map_err(|source| ClusterError::Io {
                what: "otelcol.log".into(),
                source,
            })?;
        let child = Command::new(&bin)
            .arg(format!("--config=file:{}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|source| ClusterError::Io {
                what: "otelcol.log".into(),
                source,
            })?)
            .stderr(log)
            .spawn()
            .map_err(|source| ClusterError::Io {
                what: bin.display().to_string(),
                source,
            })?;
        let mut collector = Self {
            child,
            endpoint: format!("http://{listen}"),
            spans,
            dir,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect_timeout(
                &listen.parse().map_err(|_| {
                    ClusterError::Collector(format!("a socket address, not {listen}"))
                })?,
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok(collector);
            }
            if let Ok(Some(status)) = collector.child.try_wait() {
                return Err(ClusterError::Collector(format!(
                    "the collector exited ({status}); see {}",
                    collector.dir.join("otelcol.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(ClusterError::Collector(format!(
            "the collector on {listen} (see {})",
            collector.dir.join("otelcol.log").display()
        )))
    }

    /// Every span the collector has written so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        std::fs::read_to_string(&self.spans)
            .map(|text| text.lines().flat_map(parse_export).collect())
            .unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The collector's configuration: OTLP/gRPC on `listen`, every trace export appended to
/// `spans` as a JSON line, flushed every 100 ms, no telemetry port of its own.
fn collector_config(listen: &str, spans: &Path) -> String {
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{listen}"
exporters:
  file:
    path: "{}"
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
"#,
        spans.display()
    )
}

/// The spans of one OTLP/JSON export line (`resourceSpans` → `scopeSpans` → `spans`).
pub fn parse_export(line: &str) -> Vec<SpanRecord> {
    let Ok(export) = serde_json::from_str::<Value>(line) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        let resource_attrs = attributes(&resource["resource"]["attributes"]);
        let find = |key: &str| {
            resource_attrs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (service, instance) = (find("service.name"), find("service.instance.id"));
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_lowercase();
                out.push(SpanRecord {
                    service: service.clone(),
                    instance: instance.clone(),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_id: text("parentSpanId"),
                    name: span["name"].as_str().unwrap_or_default().to_string(),
                    attributes: attributes(&span["attributes"]),
                });
            }
        }
    }
    out
}

/// OTLP/JSON `KeyValue`s with string, integer, boolean or double values, as text.
fn attributes(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let key = kv["key"].as_str()?.to_string();
            let value = &kv["value"];
            let text = if let Some(s) = value["stringValue"].as_str() {
                s.to_string()
            } else if let Some(i) = value.get("intValue") {
                // OTLP/JSON writes 64-bit integers as strings.
                i.as_str().map_or_else(|| i.to_string(), str::to_string)
            } else if let Some(b) = value["boolValue"].as_bool() {
                b.to_string()
            } else {
                value.get("doubleValue")?.to_string()
            };
            Some((key, text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_otlp_json_export_line() {
        let line = r#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"switchboard-node"}},
            {"key":"service.instance.id","value":{"stringValue":"demo-v1-0"}}]},
          "scopeSpans":[{"scope":{"name":"switchboard"},"spans":[
            {"traceId":"4BF92F3577B34DA6A3CE929D0E0E4736","spanId":"00f067aa0ba902b7",
             "parentSpanId":"1111111111111111","name":"join","kind":2,
             "attributes":[{"key":"room","value":{"stringValue":"studio"}},
                           {"key":"conn","value":{"intValue":"7"}}]}]}]}]}"#
            .replace('\n', "");
        let spans = parse_export(&line);
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(
            (s.service.as_str(), s.instance.as_str(), s.name.as_str()),
            ("switchboard-node", "demo-v1-0", "join")
        );
        assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.parent_id, "1111111111111111");
        assert_eq!(s.attribute("room"), Some("studio"));
        assert_eq!(s.attribute("conn"), Some("7"));
        assert!(parse_export("not json").is_empty());
    }
}

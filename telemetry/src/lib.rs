//! Trace export for the node and the operator (docs/operations.md, "Tracing"): their
//! `tracing` spans go to an OpenTelemetry collector over OTLP/gRPC when `--otlp-endpoint` is
//! set, and nowhere otherwise.
//!
//! Decisions worth knowing:
//! - The spans worth exporting are created at DEBUG level, and only the export layer enables
//!   them, so with export off (or a log filter at INFO) they are never built.
//! - Spans leave through a bounded queue ([`export`]): a collector that is slow or down costs
//!   the hot path one failed `try_send`, and every span dropped or failed is counted in
//!   `switchboard_trace_spans_total`.
//! - A client's `traceparent` ([`set_parent`]) puts the node's spans into the client's trace;
//!   its sampled flag is honoured. Spans without one start a trace sampled at
//!   `--trace-sample-ratio`.
#![forbid(unsafe_code)]

pub mod export;

use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use switchboard_protocol::traceparent::TraceParent;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

pub use export::SpanCounters;

/// Trace export flags, shared by the node and the operator.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// OTLP/gRPC endpoint spans are exported to (e.g. `http://otel-collector:4317`); export is
    /// off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of traces recorded when no caller decided (a client's `traceparent` flag wins).
    #[arg(long, env = "SWITCHBOARD_TRACE_SAMPLE_RATIO", default_value_t = 0.01)]
    pub trace_sample_ratio: f64,
    /// Spans that may wait for the exporter; more are dropped (and counted).
    #[arg(long, env = "SWITCHBOARD_TRACE_QUEUE", default_value_t = 4096)]
    pub trace_queue: usize,
}

impl Default for TraceArgs {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            trace_sample_ratio: 0.01,
            trace_queue: 4096,
        }
    }
}

/// Why trace export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A flag is out of range.
    #[error("invalid trace setting: {0}")]
    Invalid(String),
    /// The OTLP exporter could not be built (a malformed endpoint).
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint given.
        endpoint: String,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// How long one export may take before its spans count as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running export (or none), and its counters.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    exporter: Option<export::ExportTask>,
    counters: SpanCounters,
    targets: &'static [&'static str],
}

impl Telemetry {
    /// Starts exporting when `args` names an endpoint. `service` is the OpenTelemetry
    /// `service.name`, `instance` the `service.instance.id` (node or pod name), `targets` the
    /// module path prefixes whose spans are exported. Needs a tokio runtime.
    pub fn start(
        args: &TraceArgs,
        service: &'static str,
        instance: &str,
        targets: &'static [&'static str],
    ) -> Result<Self, TelemetryError> {
        let counters = SpanCounters::new();
        let Some(endpoint) = args.otlp_endpoint.clone().filter(|e| !e.is_empty()) else {
            return Ok(Self {
                provider: None,
                exporter: None,
                counters,
                targets,
            });
        };
        if !(0.0..=1.0).contains(&args.trace_sample_ratio) {
            return Err(TelemetryError::Invalid(format!(
                "--trace-sample-ratio {} is not within 0..=1",
                args.trace_sample_ratio
            )));
        }
        if args.trace_queue == 0 {
            return Err(TelemetryError::Invalid("--trace-queue must be > 0".into()));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|source| TelemetryError::Exporter { endpoint, source })?;
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
            .with_attribute(KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION").to_owned(),
            ))
            .build();
        let (processor, task) =
            export::start(exporter, &resource, args.trace_queue, counters.clone());
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                args.trace_sample_ratio,
            ))))
            .build();
        Ok(Self {
            provider: Some(provider),
            exporter: Some(task),
            counters,
            targets,
        })
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// The layer that turns `tracing` spans into exported ones, if export is on: DEBUG and
    /// above spans of the configured targets, and INFO and above events inside them.
    pub fn layer<S>(&self) -> Option<impl Layer<S> + Send + Sync + 'static>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let provider = self.provider.as_ref()?;
        let targets = self.targets;
        let ours = move |meta: &tracing::Metadata<'_>| {
            let wanted = if meta.is_span() {
                tracing::Level::DEBUG
            } else {
                tracing::Level::INFO
            };
            *meta.level() <= wanted && targets.iter().any(|t| meta.target().starts_with(t))
        };
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("switchboard"))
                .with_threads(false)
                .with_filter(filter_fn(ours)),
        )
    }

    /// Registers `switchboard_trace_spans_total` in `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        self.counters.register(registry)
    }

    /// The span counters (what was exported, dropped or failed).
    pub fn counters(&self) -> &SpanCounters {
        &self.counters
    }

    /// Exports what is still queued (for at most `grace`), then stops.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(provider) = self.provider.take() {
            // Ends the queue; the export task sends what is left and returns.
            let _ = provider.shutdown();
        }
        if let Some(task) = self.exporter.take() {
            task.finish(grace).await;
        }
    }
}

/// Makes the client's span `parent` the parent of `span` (a no-op without one, when export is
/// off or the span is disabled).
pub fn set_parent(span: &tracing::Span, parent: Option<&TraceParent>) {
    if let Some(parent) = parent.filter(|_| !span.is_disabled()) {
        let _ = span.set_parent(remote_context(parent));
    }
}

/// The OpenTelemetry context of a remote parent.
fn remote_context(parent: &TraceParent) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn export_is_off_without_an_endpoint() {
        let t = Telemetry::start(&TraceArgs::default(), "test", "a", &["x"]).unwrap();
        assert!(!t.enabled());
        assert!(t.layer::<tracing_subscriber::Registry>().is_none());
        let empty = TraceArgs {
            otlp_endpoint: Some(String::new()),
            ..TraceArgs::default()
        };
        assert!(
            !Telemetry::start(&empty, "test", "a", &["x"])
                .unwrap()
                .enabled()
        );
    }

    #[tokio::test]
    async fn refuses_bad_settings() {
        let endpoint = Some("http://127.0.0.1:4317".to_string());
        for args in [
            TraceArgs {
                otlp_endpoint: endpoint.clone(),
                trace_sample_ratio: 1.5,
                ..TraceArgs::default()
            },
            TraceArgs {
                otlp_endpoint: endpoint.clone(),
                trace_queue: 0,
                ..TraceArgs::default()
            },
        ] {
            assert!(matches!(
                Telemetry::start(&args, "test", "a", &["x"]),
                Err(TelemetryError::Invalid(_))
            ));
        }
    }

    #[test]
    fn remote_parent_keeps_ids_and_flags() {
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let cx = remote_context(&parent);
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id().to_bytes(), parent.trace_id);
        assert_eq!(sc.span_id().to_bytes(), parent.parent_id);
        assert!(sc.is_sampled() && sc.is_remote());
    }
}

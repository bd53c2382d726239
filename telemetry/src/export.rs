//! The bounded path from a finished span to the exporter: the span processor puts each span
//! into a fixed-size queue without waiting, and one task sends whatever queued as one batch.
//! A full queue drops the span; a failed or timed-out export drops its batch. Both are
//! counted, and neither ever blocks the code that ended the span.

use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus::{IntCounter, IntCounterVec, Opts};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most spans sent in one export request.
const MAX_BATCH: usize = 512;
/// Export failures are logged at most this often (they are counted every time).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// `switchboard_trace_spans_total{outcome}`: spans exported, dropped at a full queue, or lost
/// with a failed export.
#[derive(Debug, Clone)]
pub struct SpanCounters {
    vec: IntCounterVec,
    /// Sent to the collector.
    pub exported: IntCounter,
    /// Dropped because the queue was full (or export had stopped).
    pub dropped: IntCounter,
    /// Lost with an export that failed or timed out.
    pub failed: IntCounter,
}

impl SpanCounters {
    /// New counters, not yet registered.
    pub fn new() -> Self {
        let vec = IntCounterVec::new(
            Opts::new(
                "switchboard_trace_spans_total",
                "Spans by what became of them: exported, dropped (queue full) or failed (export error)",
            ),
            &["outcome"],
        )
        .expect("valid metric definition");
        Self {
            exported: vec.with_label_values(&["exported"]),
            dropped: vec.with_label_values(&["dropped"]),
            failed: vec.with_label_values(&["failed"]),
            vec,
        }
    }

    /// Registers the counters in `registry`.
    pub fn register(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.vec.clone()))
    }
}

impl Default for SpanCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// The span processor: hands finished spans to the export task's queue.
#[derive(Debug)]
pub struct BoundedProcessor {
    queue: mpsc::Sender<SpanData>,
    stop: CancellationToken,
    counters: SpanCounters,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.stop.is_cancelled() || self.queue.try_send(span).is_err() {
            self.counters.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // The task sends as soon as anything is queued; there is nothing held back to flush.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.stop.cancel();
        Ok(())
    }
}

/// The export task; [`ExportTask::finish`] waits for it to send what was queued.
pub struct ExportTask {
    handle: JoinHandle<()>,
    stop: CancellationToken,
}

impl ExportTask {
    /// Stops taking spans and waits up to `grace` for the queued ones to be sent.
    pub async fn finish(self, grace: Duration) {
        self.stop.cancel();
        let abort = self.handle.abort_handle();
        if tokio::time::timeout(grace, self.handle).await.is_err() {
            abort.abort();
        }
    }
}

/// Starts the export task for `exporter` with a queue of `capacity` spans; returns the
/// processor that feeds it.
pub fn start<E>(
    mut exporter: E,
    resource: &Resource,
    capacity: usize,
    counters: SpanCounters,
) -> (BoundedProcessor, ExportTask)
where
    E: SpanExporter + 'static,
{
    // The processor is moved into the provider before the provider could pass the resource
    // on, so the exporter gets it here.
    exporter.set_resource(resource);
    let (queue, rx) = mpsc::channel(capacity.max(1));
    let stop = CancellationToken::new();
    let handle = tokio::spawn(run(exporter, rx, stop.clone(), counters.clone()));
    (
        BoundedProcessor {
            queue,
            stop: stop.clone(),
            counters,
        },
        ExportTask { handle, stop },
    )
}

/// Sends whatever is queued, one batch at a time, until stopped; then sends what is left.
async fn run<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    stop: CancellationToken,
    counters: SpanCounters,
) {
    let mut last_warning: Option<Instant> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n,
            () = stop.cancelled() => {
                rx.close();
                rx.recv_many(&mut batch, MAX_BATCH).await
            }
        };
        if received == 0 {
            break;
        }
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let count = spans.len() as u64;
        let outcome = tokio::time::timeout(super::EXPORT_TIMEOUT, exporter.export(spans)).await;
        let error = match outcome {
            Ok(Ok(())) => {
                counters.exported.inc_by(count);
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "export timed out".to_string(),
        };
        counters.failed.inc_by(count);
        if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            last_warning = Some(Instant::now());
            tracing::warn!(spans = count, %error, "trace export failed; spans dropped (counted in switchboard_trace_spans_total)");
        }
    }
    let _ = exporter.shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::error::OTelSdkError;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::borrow::Cow;
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    /// An exporter whose every export waits on `gate` and then succeeds or fails.
    #[derive(Debug, Clone)]
    struct Gated {
        gate: Arc<tokio::sync::Semaphore>,
        fail: bool,
        seen: Arc<Mutex<usize>>,
    }

    impl SpanExporter for Gated {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let _permit = self.gate.acquire().await;
            *self.seen.lock().unwrap() += batch.len();
            if self.fail {
                Err(OTelSdkError::InternalFailure("collector down".into()))
            } else {
                Ok(())
            }
        }
    }

    fn span(sampled: bool) -> SpanData {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([2; 8]),
                flags,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed("test"),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn gated(fail: bool, permits: usize) -> Gated {
        Gated {
            gate: Arc::new(tokio::sync::Semaphore::new(permits)),
            fail,
            seen: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_stuck_exporter_costs_a_dropped_span_not_a_wait() {
        let exporter = gated(false, 0);
        let counters = SpanCounters::new();
        let (processor, task) = start(
            exporter.clone(),
            &Resource::builder_empty().build(),
            8,
            counters.clone(),
        );
        // The task takes the first span into its stuck export; 8 more fill the queue.
        processor.on_end(span(true));
        tokio::task::yield_now().await;
        for _ in 0..1000 {
            processor.on_end(span(true));
        }
        assert_eq!(counters.dropped.get(), 1000 - 8);
        // Unsampled spans are not exported and not counted.
        processor.on_end(span(false));
        assert_eq!(counters.dropped.get(), 1000 - 8);
        // Released, everything queued goes out.
        exporter.gate.add_permits(100);
        processor.shutdown().unwrap();
        task.finish(Duration::from_secs(5)).await;
        assert_eq!(counters.exported.get(), 9);
        assert_eq!(*exporter.seen.lock().unwrap(), 9);
        // After shutdown a span is dropped, not queued.
        processor.on_end(span(true));
        assert_eq!(counters.dropped.get(), 1000 - 8 + 1);
    }

    #[tokio::test]
    async fn failed_exports_are_counted() {
        let exporter = gated(true, 100);
        let counters = SpanCounters::new();
        let (processor, task) = start(
            exporter,
            &Resource::builder_empty().build(),
            64,
            counters.clone(),
        );
        for _ in 0..10 {
            processor.on_end(span(true));
        }
        processor.shutdown().unwrap();
        task.finish(Duration::from_secs(5)).await;
        assert_eq!(counters.failed.get(), 10);
        assert_eq!(counters.exported.get(), 0);
    }

    /// The real OTLP exporter against a port nobody listens on: spans fail and are counted,
    /// and ending a span never waits for the collector.
    #[tokio::test]
    async fn an_unreachable_collector_is_counted_as_failed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let counters = SpanCounters::new();
        let (processor, task) = start(
            exporter,
            &Resource::builder_empty().build(),
            16,
            counters.clone(),
        );
        for _ in 0..100 {
            processor.on_end(span(true));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while counters.failed.get() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        processor.shutdown().unwrap();
        task.finish(Duration::from_secs(5)).await;
        let (exported, dropped, failed) = (
            counters.exported.get(),
            counters.dropped.get(),
            counters.failed.get(),
        );
        assert_eq!(exported, 0);
        assert_eq!(dropped + failed, 100, "every span accounted for");
    }
}

//! Logs and traces of one process: the `tracing` subscriber (plain or JSON log lines on stdout,
//! filtered by `--log`), plus, when an OTLP endpoint is configured, an OpenTelemetry layer that
//! exports spans over OTLP.
//!
//! The OpenTelemetry side is configured only by the standard environment variables, read by the
//! OTel SDK itself: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns
//! exporting on; `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`, the default),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` (default `tassis-<role>`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` and `OTEL_BSP_*`
//! tune it.
//!
//! Trace context travels between services as W3C `traceparent`/`tracestate` in gRPC metadata:
//! [`inject`] adds the current span's context to an outgoing request, [`grpc_server_span`] (a
//! tonic `Server::trace_fn`) opens each incoming call's span as a child of the caller's.
//! Services only use `tracing`; nothing outside this module names OpenTelemetry types.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::RuntimeError;
use crate::logging::LogFormat;

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it (call it at exit).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes spans not yet exported and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("tassis: flushing traces: {e}");
        }
    }
}

/// Whether the environment names an OTLP endpoint for traces.
pub fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Installs the global subscriber: log lines per `format`/`filter`, and OTLP export of spans when
/// [`otlp_configured`]. `service` is the default `service.name` (`OTEL_SERVICE_NAME` wins).
///
/// Must run inside a Tokio runtime (the gRPC exporter's channel lives on it).
pub fn init(format: LogFormat, filter: &str, service: &str) -> Result<Telemetry, RuntimeError> {
    let env_filter =
        EnvFilter::try_new(filter).map_err(|e| RuntimeError::Logging(format!("bad log filter {filter:?}: {e}")))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer().with_target(false).with_ansi(ansi);
    let fmt = match format {
        LogFormat::Plain => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    }
    .with_filter(env_filter);

    let (otel, provider) = if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .build()
            .map_err(|e| RuntimeError::Logging(format!("OTLP trace exporter: {e}")))?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(service.to_string());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("tassis");
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        // Only tassis' own spans (client operations, gRPC calls, backend calls), at info and above.
        let targets = tracing_subscriber::filter::Targets::new().with_target("tassis", tracing::Level::INFO);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(targets);
        (Some(layer), Some(provider))
    } else {
        (None, None)
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| RuntimeError::Logging(e.to_string()))?;
    Ok(Telemetry { provider })
}

/// Writes into tonic metadata.
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Reads HTTP headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Adds the current span's trace context (W3C `traceparent`, `tracestate`) to an outgoing gRPC
/// request's metadata. Does nothing when the current span is not being traced.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// The current span's trace context as W3C header pairs (empty when not traced), for carrying it
/// inside a message rather than in call metadata.
pub fn current_context() -> HashMap<String, String> {
    let mut map = HashMap::new();
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut map);
    map
}

/// Makes `span` a child of the context carried in `carrier` (as written by [`current_context`]).
pub fn set_parent_from(span: &tracing::Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(carrier);
    let _ = span.set_parent(cx);
}

/// Span of one incoming gRPC call, a child of the caller's trace context when the request carries
/// one. For tonic's `Server::builder().trace_fn(..)`. Carries the method only: never peer
/// addresses.
pub fn grpc_server_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path();
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        target: "tassis_runtime::grpc",
        "grpc.server",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
    let _ = span.set_parent(cx);
    span
}

/// Runs one storage-backend call of a service in a client span (`<system> <op>`, e.g.
/// `redis enqueue`; no keys or addresses in it), times it into `seconds{op}`, and counts it in
/// `errors{op}` when it fails in a way `is_backend_failure` says is the backend's fault (not a
/// refused request).
pub async fn backend_call<T, E>(
    system: &'static str,
    op: &'static str,
    seconds: &prometheus::HistogramVec,
    errors: &prometheus::IntCounterVec,
    is_backend_failure: fn(&E) -> bool,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "backend",
        otel.name = %format!("{system} {op}"),
        otel.kind = "client",
        db.system = system,
        db.operation = op,
        otel.status_code = tracing::field::Empty,
    );
    let start = std::time::Instant::now();
    let res = call.instrument(span.clone()).await;
    seconds.with_label_values(&[op]).observe(start.elapsed().as_secs_f64());
    if let Err(e) = &res {
        span.record("otel.status_code", "ERROR");
        if is_backend_failure(e) {
            errors.with_label_values(&[op]).inc();
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip_without_a_tracer_is_empty() {
        // No subscriber with an OpenTelemetry layer: nothing is injected, nothing breaks.
        let mut md = tonic::metadata::MetadataMap::new();
        inject(&mut md);
        assert!(md.get("traceparent").is_none());
        assert!(current_context().is_empty());
        let req = http::Request::builder()
            .uri("/tassis.messaging.v1.Messaging/Enqueue")
            .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .body(())
            .unwrap();
        let _span = grpc_server_span(&req);
    }
}

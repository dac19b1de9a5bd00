//! A test OTLP/gRPC trace receiver: the roles export their spans to it, and tests look for spans
//! by service, name and trace id.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// One exported span, flattened.
#[derive(Clone, Debug)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: Vec<u8>,
    /// Attribute key and value (as text).
    pub attributes: Vec<(String, String)>,
}

/// An OTLP/gRPC trace receiver keeping every span it is sent.
#[derive(Clone, Default)]
pub struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(text)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace_id: s.trace_id,
                        attributes: s
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default()))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

impl Receiver {
    pub async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    pub fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the spans received so far.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() > deadline {
                let list: Vec<String> = spans
                    .iter()
                    .map(|s| {
                        format!(
                            "{} {} {} {:?}",
                            hex::encode(&s.trace_id),
                            s.service,
                            s.name,
                            s.attributes
                        )
                    })
                    .collect();
                panic!("timed out waiting for {what}; spans received:\n{}", list.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Trace ids of spans of `service` named `name`.
pub fn trace_ids(spans: &[Span], service: &str, name: &str) -> Vec<Vec<u8>> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .map(|s| s.trace_id.clone())
        .collect()
}

/// Whether some span of `service` is in `trace`.
pub fn in_trace(spans: &[Span], service: &str, trace: &[u8]) -> bool {
    spans.iter().any(|s| s.service == service && s.trace_id == trace)
}

/// Whether `service` exported a span called `name` in `trace`.
pub fn in_trace_named(spans: &[Span], service: &str, name: &str, trace: &[u8]) -> bool {
    spans
        .iter()
        .any(|s| s.service == service && s.name == name && s.trace_id == trace)
}

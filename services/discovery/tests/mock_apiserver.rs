//! The EndpointSlice discovery against a mocked Kubernetes API server (tower-test), the way
//! kube-rs tests its own watchers: the test plays the API server, answering the watcher's list
//! and watch requests with JSON.

use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::json;
use tassis_discovery::{Target, endpoint_urls, watch_with_client};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn slice(name: &str, rv: &str, endpoints: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "tassis",
            "resourceVersion": rv,
            "labels": {"kubernetes.io/service-name": "tassis-messaging"}
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50052, "protocol": "TCP"}, {"name": "admin", "port": 9090}],
        "endpoints": endpoints
    })
}

async fn next_request(handle: &mut Handle) -> (Request<Body>, tower_test::mock::SendResponse<Response<Body>>) {
    tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the watcher sent a request")
        .expect("request")
}

#[tokio::test]
async fn follows_endpointslices_of_the_service() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let target = Target::parse("tassis/tassis-messaging", "grpc").unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut rx = watch_with_client(client, target, async move {
        let _ = stop_rx.await;
    });

    // 1. The initial list: one slice with a ready, a not-ready and a terminating endpoint.
    let (req, send) = next_request(&mut handle).await;
    assert_eq!(req.method(), "GET");
    let uri = req.uri().to_string();
    assert!(
        uri.starts_with("/apis/discovery.k8s.io/v1/namespaces/tassis/endpointslices?"),
        "{uri}"
    );
    assert!(
        uri.contains("labelSelector=kubernetes.io%2Fservice-name%3Dtassis-messaging"),
        "{uri}"
    );
    let list = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSliceList",
        "metadata": {"resourceVersion": "10"},
        "items": [slice("m-1", "9", json!([
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": true, "terminating": true}}
        ]))]
    });
    send.send_response(Response::new(Body::from(serde_json::to_vec(&list).unwrap())));
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*rx.borrow_and_update(), vec!["http://10.0.0.1:50052".to_string()]);

    // 2. The watch: a replica becomes ready, then a second slice appears.
    let (req, send) = next_request(&mut handle).await;
    let uri = req.uri().to_string();
    assert!(
        uri.contains("watch=true") && uri.contains("resourceVersion=10"),
        "{uri}"
    );
    let events = [
        json!({"type": "MODIFIED", "object": slice("m-1", "11", json!([
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"]}
        ]))}),
        json!({"type": "ADDED", "object": slice("m-2", "12", json!([
            {"addresses": ["10.0.1.7"], "conditions": {"ready": true}}
        ]))}),
        json!({"type": "DELETED", "object": slice("m-1", "13", json!([]))}),
    ];
    let mut body = Vec::new();
    for e in &events {
        body.extend_from_slice(&serde_json::to_vec(e).unwrap());
        body.push(b'\n');
    }
    send.send_response(Response::new(Body::from(body)));
    let want_final = vec!["http://10.0.1.7:50052".to_string()];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            rx.changed().await.unwrap();
            if *rx.borrow_and_update() == want_final {
                return;
            }
        }
    })
    .await
    .expect("saw the final replica set");
    let _ = stop_tx.send(());
}

#[test]
fn urls_from_slices() {
    let s: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "x"},
        "addressType": "IPv6",
        "ports": [{"name": "grpc", "port": 7000}],
        "endpoints": [{"addresses": ["fd00::1"]}]
    }))
    .unwrap();
    assert_eq!(endpoint_urls([&s], "grpc"), vec!["http://[fd00::1]:7000".to_string()]);
    assert!(endpoint_urls([&s], "other").is_empty());
}

#[test]
fn target_parsing() {
    assert_eq!(Target::parse("svc", "grpc").unwrap().namespace, None);
    assert_eq!(
        Target::parse("ns/svc", "grpc").unwrap().namespace.as_deref(),
        Some("ns")
    );
    for bad in ["", "a/b/c", "UPPER", "ns/", "/svc"] {
        assert!(Target::parse(bad, "grpc").is_err(), "{bad}");
    }
}

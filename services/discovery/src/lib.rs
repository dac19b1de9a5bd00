//! Finding messaging replicas inside Kubernetes.
//!
//! Gateways open a delivery stream to every messaging replica, so they need the replica set, not a
//! load-balanced Service address. This module watches the EndpointSlices of the messaging Service
//! (label `kubernetes.io/service-name`) with the `kube` crate and publishes the ready endpoints as
//! gRPC URLs on a `tokio::sync::watch` channel. Only `list` and `watch` on `endpointslices` in the
//! Service's namespace are needed (the chart's Role grants exactly that).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tassis_runtime::RuntimeError;
use tokio::sync::watch;

/// The Service whose endpoints are wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Namespace; the client's default (the pod's own namespace in a cluster) when None.
    pub namespace: Option<String>,
    pub service: String,
    /// Name of the port in the EndpointSlices.
    pub port_name: String,
}

impl Target {
    /// Parses `name` or `namespace/name`.
    pub fn parse(service: &str, port_name: &str) -> Result<Target, RuntimeError> {
        let bad = || {
            RuntimeError::Config(format!(
                "--messaging-service {service:?}: expected a Kubernetes Service as name or namespace/name"
            ))
        };
        let (namespace, name) = match service.split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name),
            None => (None, service),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !valid(name) || namespace.as_deref().is_some_and(|n| !valid(n)) {
            return Err(bad());
        }
        if port_name.is_empty() {
            return Err(RuntimeError::Config("--messaging-port-name must not be empty".into()));
        }
        Ok(Target {
            namespace,
            service: name.to_string(),
            port_name: port_name.to_string(),
        })
    }
}

/// The gRPC URLs of every ready endpoint in `slices` serving the port named `port_name`.
/// A missing `ready` condition counts as ready, as the EndpointSlice API specifies.
pub fn endpoint_urls<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>, port_name: &str) -> Vec<String> {
    let mut urls = BTreeSet::new();
    for slice in slices {
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port_name))
            .and_then(|p| p.port)
        else {
            continue;
        };
        let v6 = slice.address_type == "IPv6";
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let terminating = ep.conditions.as_ref().and_then(|c| c.terminating).unwrap_or(false);
            if !ready || terminating {
                continue;
            }
            for addr in &ep.addresses {
                urls.insert(if v6 {
                    format!("http://[{addr}]:{port}")
                } else {
                    format!("http://{addr}:{port}")
                });
            }
        }
    }
    urls.into_iter().collect()
}

/// Watches the target with an in-cluster (or kubeconfig) client.
pub async fn watch(
    target: Target,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<watch::Receiver<Vec<String>>, RuntimeError> {
    let client = Client::try_default()
        .await
        .map_err(|e| RuntimeError::Config(format!("--messaging-service needs Kubernetes API access: {e}")))?;
    Ok(watch_with_client(client, target, stop))
}

/// Watches the target through `client`; the receiver sees the current ready URLs after every
/// change (starting empty until the first list completes).
pub fn watch_with_client(
    client: Client,
    target: Target,
    stop: impl Future<Output = ()> + Send + 'static,
) -> watch::Receiver<Vec<String>> {
    let (tx, rx) = watch::channel(Vec::new());
    let api: Api<EndpointSlice> = match &target.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::default_namespaced(client),
    };
    let config = watcher::Config::default().labels(&format!("kubernetes.io/service-name={}", target.service));
    tokio::spawn(async move {
        let mut events = Box::pin(kube::runtime::WatchStreamExt::default_backoff(watcher::watcher(
            api, config,
        )));
        let mut stop = Box::pin(stop);
        // Objects of the current list/watch, by name; `init` holds a relist in progress.
        let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut init: Option<BTreeMap<String, EndpointSlice>> = None;
        loop {
            let ev = tokio::select! {
                _ = &mut stop => return,
                ev = events.next() => ev,
            };
            let changed = match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, service = %target.service, "EndpointSlice watch failed; retrying");
                    false
                }
                Some(Ok(Event::Init)) => {
                    init = Some(BTreeMap::new());
                    false
                }
                Some(Ok(Event::InitApply(s))) => {
                    init.get_or_insert_with(BTreeMap::new).insert(name_of(&s), s);
                    false
                }
                Some(Ok(Event::InitDone)) => {
                    slices = init.take().unwrap_or_default();
                    true
                }
                Some(Ok(Event::Apply(s))) => {
                    slices.insert(name_of(&s), s);
                    true
                }
                Some(Ok(Event::Delete(s))) => {
                    slices.remove(&name_of(&s));
                    true
                }
            };
            if changed {
                let urls = endpoint_urls(slices.values(), &target.port_name);
                tx.send_if_modified(|cur| {
                    if *cur != urls {
                        tracing::info!(service = %target.service, endpoints = ?urls, "messaging replicas changed");
                        *cur = urls;
                        true
                    } else {
                        false
                    }
                });
            }
        }
    });
    rx
}

fn name_of(s: &EndpointSlice) -> String {
    s.metadata.name.clone().unwrap_or_default()
}

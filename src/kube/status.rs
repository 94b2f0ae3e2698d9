//! Writes what the allocator decided back to the API server: `status.loadBalancer.ingress`,
//! the `ip-allocated-from-pool` annotation, and Events. Only the raft-lite leader calls
//! this. Writes are server-side apply with our own field manager and `force`, so they are
//! idempotent (a repeated write is a no-op on the server) and never lose to a stale
//! resourceVersion.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Service as K8sService};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use thiserror::Error;
use tokio::sync::Mutex;

use super::translate::ALLOCATED_FROM_POOL;
use crate::model::ServiceKey;

/// Field manager of every write lbd makes.
pub const FIELD_MANAGER: &str = "lbd";

#[derive(Debug, Error)]
pub enum WriteError {
    #[error("writing status of {service}: {source}")]
    Status {
        service: ServiceKey,
        #[source]
        source: kube::Error,
    },
    #[error("annotating {service}: {source}")]
    Annotation {
        service: ServiceKey,
        #[source]
        source: kube::Error,
    },
    #[error("posting event {reason} on {service}: {source}")]
    Event {
        service: ServiceKey,
        reason: String,
        #[source]
        source: kube::Error,
    },
}

impl WriteError {
    fn source(&self) -> &kube::Error {
        match self {
            WriteError::Status { source, .. }
            | WriteError::Annotation { source, .. }
            | WriteError::Event { source, .. } => source,
        }
    }

    /// The Service no longer exists: nothing to retry.
    pub fn is_not_found(&self) -> bool {
        matches!(self.source(), kube::Error::Api(s) if s.code == 404)
    }

    /// The API server asked us to slow down (429, API Priority and Fairness). kube's error
    /// does not carry the Retry-After header; the server's own default is one second.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        matches!(self.source(), kube::Error::Api(s) if s.code == 429)
            .then_some(std::time::Duration::from_secs(1))
    }
}

/// A repeat of a posted Event within this long raises its series count instead of posting a
/// new one (kube-runtime's `Recorder` uses the same bound).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);

/// What makes two Events the same: a repeat of one raises its count.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey {
    service: ServiceKey,
    warning: bool,
    reason: String,
    message: String,
}

/// One posted Event: its object's name, how often it was seen, when last.
struct Series {
    name: String,
    count: i32,
    last: Instant,
}

pub struct StatusWriter {
    client: Client,
    node: String,
    /// Events posted within [`SERIES_TTL`]. The message is part of the key: kube-runtime's
    /// `Recorder` keys a series by reason and action only, so a second `IPAllocated` with
    /// another message (`Assigned additional IP …`) only raised the first one's count and
    /// was never shown. As under MetalLB's recorder, another message is another Event.
    posted: Mutex<HashMap<EventKey, Series>>,
}

/// The status body lbd applies: the ingress list, IPv4 and IPv6 alike.
pub fn status_body(ips: &[IpAddr]) -> serde_json::Value {
    let ingress: Vec<_> = ips
        .iter()
        .map(|ip| json!({ "ip": ip.to_string() }))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "status": { "loadBalancer": { "ingress": ingress } },
    })
}

/// The metadata body lbd applies: the pool annotation, or none (which releases our
/// ownership of it, so server-side apply removes it).
pub fn annotation_body(name: &str, pool: Option<&str>) -> serde_json::Value {
    let annotations = match pool {
        Some(pool) => json!({ ALLOCATED_FROM_POOL: pool }),
        None => json!({}),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "annotations": annotations },
    })
}

impl StatusWriter {
    pub fn new(client: Client, node_name: &str) -> Self {
        Self {
            client,
            node: node_name.into(),
            posted: Mutex::new(HashMap::new()),
        }
    }

    fn api(&self, key: &ServiceKey) -> Api<K8sService> {
        Api::namespaced(self.client.clone(), &key.namespace)
    }

    /// Sets the Service's ingress IPs (empty: clears them) and the pool annotation. The
    /// status is a subresource and the annotation is on the object, so these are two
    /// server-side applies; they go out together.
    pub async fn write(
        &self,
        key: &ServiceKey,
        ips: &[IpAddr],
        pool: Option<&str>,
    ) -> Result<(), WriteError> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let api = self.api(key);
        let status = async {
            api.patch_status(&key.name, &params, &Patch::Apply(status_body(ips)))
                .await
                .map_err(|source| WriteError::Status {
                    service: key.clone(),
                    source,
                })
        };
        let annotation = async {
            api.patch(
                &key.name,
                &params,
                &Patch::Apply(annotation_body(&key.name, pool)),
            )
            .await
            .map_err(|source| WriteError::Annotation {
                service: key.clone(),
                source,
            })
        };
        tokio::try_join!(status, annotation)?;
        Ok(())
    }

    /// Posts an Event on the Service (events.k8s.io/v1). A repeat of the same reason and
    /// message within [`SERIES_TTL`] raises the first one's series count instead.
    pub async fn event(
        &self,
        key: &ServiceKey,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> Result<(), WriteError> {
        let error = |source| WriteError::Event {
            service: key.clone(),
            reason: reason.into(),
            source,
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &key.namespace);
        let id = EventKey {
            service: key.clone(),
            warning,
            reason: reason.into(),
            message: message.into(),
        };
        let now = Instant::now();
        let repeat = {
            let mut posted = self.posted.lock().await;
            posted.retain(|_, s| now.saturating_duration_since(s.last) < SERIES_TTL);
            posted.get_mut(&id).map(|s| {
                s.count += 1;
                s.last = now;
                (s.name.clone(), s.count)
            })
        };
        let observed = MicroTime(Timestamp::now());
        if let Some((name, count)) = repeat {
            let series = json!({ "series": { "count": count, "lastObservedTime": observed } });
            let patched = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(series))
                .await;
            if let Err(e) = patched {
                // Start afresh next time (e.g. the API server dropped the old Event).
                self.posted.lock().await.remove(&id);
                return Err(error(e));
            }
            return Ok(());
        }
        let event = K8sEvent {
            metadata: ObjectMeta {
                // Unique per post, as kube's Recorder names them.
                name: Some(format!("{}.{:x}", key.name, observed.0.as_nanosecond())),
                namespace: Some(key.namespace.clone()),
                ..Default::default()
            },
            event_time: Some(observed),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            reason: Some(reason.into()),
            action: Some(reason.into()),
            note: Some(message.into()),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                ..Default::default()
            }),
            reporting_controller: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(self.node.clone()),
            ..Default::default()
        };
        let created = api
            .create(&PostParams::default(), &event)
            .await
            .map_err(error)?;
        let name = created.metadata.name.unwrap_or_default();
        self.posted.lock().await.insert(
            id,
            Series {
                name,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_lists_ipv4_and_ipv6_ingress() {
        let body = status_body(&["172.19.100.0".parse().unwrap(), "fd00::1".parse().unwrap()]);
        assert_eq!(
            body["status"]["loadBalancer"]["ingress"],
            json!([{"ip": "172.19.100.0"}, {"ip": "fd00::1"}])
        );
        assert_eq!(body["apiVersion"], "v1");
    }

    #[test]
    fn cleared_status_is_an_empty_ingress_list() {
        assert_eq!(
            status_body(&[])["status"]["loadBalancer"]["ingress"],
            json!([])
        );
    }

    #[test]
    fn annotation_body_names_the_pool() {
        let body = annotation_body("web", Some("ip-pool-2"));
        assert_eq!(
            body["metadata"]["annotations"][ALLOCATED_FROM_POOL],
            "ip-pool-2"
        );
        assert_eq!(
            annotation_body("web", None)["metadata"]["annotations"],
            json!({})
        );
    }
}

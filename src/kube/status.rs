//! Writes what the allocator decided back to the API server: `status.loadBalancer.ingress`,
//! the `ip-allocated-from-pool` annotation, and Events. Only the raft-lite leader calls
//! this. Writes are server-side apply with our own field manager and `force`, so they are
//! idempotent (a repeated write is a no-op on the server) and never lose to a stale
//! resourceVersion.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service as K8sService;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use thiserror::Error;

use super::events::EventRecorder;
use super::translate::{ALLOCATED_FROM_POOL, ANNOUNCING};
use crate::model::ServiceKey;
use crate::writes::EventItem;

/// Field manager of every write lbd makes, but the announcers annotation.
pub const FIELD_MANAGER: &str = "lbd";
/// Field manager of the announcers annotation: its own, so that applying it and applying the
/// pool annotation (each without the other's key) never remove each other's field.
pub const ANNOUNCERS_FIELD_MANAGER: &str = "lbd-announcers";

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
    #[error("writing the announcers annotation of {service}: {source}")]
    Announcers {
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
            | WriteError::Announcers { source, .. }
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

pub struct StatusWriter {
    client: Client,
    recorder: EventRecorder,
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

/// The announcers annotation body (none: our field released, so the annotation goes).
pub fn announcers_body(name: &str, value: Option<&str>) -> serde_json::Value {
    let annotations = match value {
        Some(v) => json!({ ANNOUNCING: v }),
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
            recorder: EventRecorder::new(client.clone(), FIELD_MANAGER, node_name),
            client,
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

    /// Sets (or removes) the announcers annotation, under its own field manager.
    pub async fn announcers(
        &self,
        key: &ServiceKey,
        value: Option<&str>,
    ) -> Result<(), WriteError> {
        let params = PatchParams::apply(ANNOUNCERS_FIELD_MANAGER).force();
        self.api(key)
            .patch(
                &key.name,
                &params,
                &Patch::Apply(announcers_body(&key.name, value)),
            )
            .await
            .map_err(|source| WriteError::Announcers {
                service: key.clone(),
                source,
            })?;
        Ok(())
    }

    /// Posts an Event on the Service (events.k8s.io/v1; repeats become a series).
    pub async fn event(&self, e: &EventItem) -> Result<(), WriteError> {
        self.recorder
            .publish(
                &e.service,
                e.uid.as_deref(),
                e.warning,
                e.reason,
                &e.message,
            )
            .await
            .map_err(|source| WriteError::Event {
                service: e.service.clone(),
                reason: e.reason.into(),
                source,
            })
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

//! Events on Services (events.k8s.io/v1), aggregated into series as kubectl shows them: the
//! same Event (reason and message) on the same Service within a few minutes patches the first
//! one's series (count, last time) instead of creating another. The message is part of the
//! key: kube-runtime's `Recorder` keys a series by reason only, so a second `IPAllocated`
//! with another message (`Assigned additional IP …`) only raised the first one's count and
//! was never shown; as under MetalLB's recorder, another message is another Event.
//!
//! Our own, not kube-runtime's `Recorder`: that one scans its whole cache on every publish
//! and keeps every Event of the last six minutes, which made a burst of 10,000 Services cost
//! quadratic time and tens of MiB. Here the cache is bounded and expires in order.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::model::ServiceKey;

/// How long a series stays open (kube-runtime and client-go use 6 minutes).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// Series remembered at most; the oldest is forgotten first (a later repeat then starts a
/// new Event rather than extending the series).
const MAX_SERIES: usize = 4096;

/// What makes two Events one series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    service: ServiceKey,
    reason: &'static str,
    warning: bool,
    message: String,
}

struct Series {
    event: K8sEvent,
    /// When it was last observed (the series' expiry runs from it).
    last: Instant,
}

/// What [`SeriesCache::next`] decided: create a new Event, or patch the series of an old one.
#[derive(Debug, PartialEq, Eq)]
enum Publish {
    Create,
    Patch,
}

/// The open series (pure bookkeeping; the requests are made by [`EventRecorder`]).
#[derive(Default)]
struct SeriesCache {
    open: BTreeMap<SeriesKey, Series>,
    /// Keys in the order they were last observed (entries whose series was observed again
    /// later are skipped when they come up).
    order: VecDeque<(Instant, SeriesKey)>,
}

impl SeriesCache {
    /// Forgets series that ended before `now`, and the oldest beyond the bound.
    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            let current = self.open.get(key).map(|s| s.last);
            let expired = now.saturating_duration_since(*at) >= SERIES_TTL;
            let over = self.open.len() > MAX_SERIES;
            if current != Some(*at) {
                // Observed again since: a later entry stands for it.
                self.order.pop_front();
            } else if expired || over {
                let key = key.clone();
                self.order.pop_front();
                self.open.remove(&key);
            } else {
                break;
            }
        }
    }

    /// The Event to send for `key` now: a new one (`fresh`), or the open series' Event
    /// with its count raised.
    fn next(&mut self, key: SeriesKey, now: Instant, fresh: K8sEvent) -> (Publish, K8sEvent) {
        self.expire(now);
        let (publish, event) = match self.open.get(&key) {
            Some(s) => {
                let count = s.event.series.as_ref().map_or(2, |x| x.count + 1);
                let mut e = s.event.clone();
                e.series = Some(EventSeries {
                    count,
                    last_observed_time: MicroTime(Timestamp::now()),
                });
                (Publish::Patch, e)
            }
            None => (Publish::Create, fresh),
        };
        self.open.insert(
            key.clone(),
            Series {
                event: event.clone(),
                last: now,
            },
        );
        self.order.push_back((now, key));
        (publish, event)
    }

    /// The series of `key` is gone on the server (a patch failed): start afresh next time.
    fn forget(&mut self, key: &SeriesKey) {
        self.open.remove(key);
    }
}

pub struct EventRecorder {
    client: Client,
    /// `reportingInstance`: this host's node name.
    instance: String,
    controller: String,
    cache: tokio::sync::Mutex<SeriesCache>,
}

impl EventRecorder {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        EventRecorder {
            client,
            instance: instance.to_owned(),
            controller: controller.to_owned(),
            cache: tokio::sync::Mutex::new(SeriesCache::default()),
        }
    }

    /// Posts an Event on the Service, or extends its series.
    pub async fn publish(
        &self,
        service: &ServiceKey,
        uid: Option<&str>,
        warning: bool,
        reason: &'static str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let fresh = self.event(service, uid, warning, reason, note);
        let key = SeriesKey {
            service: service.clone(),
            reason,
            warning,
            message: note.to_owned(),
        };
        let (publish, event) = self
            .cache
            .lock()
            .await
            .next(key.clone(), Instant::now(), fresh);
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &service.namespace);
        let sent = match publish {
            Publish::Create => api.create(&PostParams::default(), &event).await.map(|_| ()),
            Publish::Patch => api
                .patch(
                    &event.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&event),
                )
                .await
                .map(|_| ()),
        };
        if sent.is_err() {
            // E.g. the API server dropped the old Event: start afresh next time.
            self.cache.lock().await.forget(&key);
        }
        sent
    }

    fn event(
        &self,
        service: &ServiceKey,
        uid: Option<&str>,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> K8sEvent {
        let now = Timestamp::now();
        K8sEvent {
            action: Some(reason.to_owned()),
            reason: Some(reason.to_owned()),
            event_time: Some(MicroTime(now)),
            regarding: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(service.name.clone()),
                namespace: Some(service.namespace.clone()),
                // `kubectl describe` selects a Service's Events by `involvedObject.uid`.
                uid: uid.map(str::to_owned),
                ..Default::default()
            }),
            note: Some(note.to_owned()),
            metadata: ObjectMeta {
                namespace: Some(service.namespace.clone()),
                name: Some(format!("{}.{:x}", service.name, now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SeriesKey {
        SeriesKey {
            service: ServiceKey::new("default", name),
            reason: "IPAllocated",
            warning: false,
            message: "Assigned IP [\"10.0.0.1\"]".into(),
        }
    }

    fn event(name: &str) -> K8sEvent {
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_repeat_within_the_ttl_extends_the_series_of_the_first_event() {
        let t0 = Instant::now();
        let mut c = SeriesCache::default();
        let (p, e) = c.next(key("a"), t0, event("a.1"));
        assert_eq!((p, e.series), (Publish::Create, None));
        let (p, e) = c.next(key("a"), t0 + Duration::from_secs(60), event("a.2"));
        assert_eq!(p, Publish::Patch);
        assert_eq!(e.metadata.name.as_deref(), Some("a.1"));
        assert_eq!(e.series.map(|s| s.count), Some(2));
        let (_, e) = c.next(key("a"), t0 + Duration::from_secs(120), event("a.3"));
        assert_eq!(e.series.map(|s| s.count), Some(3));
        // Another message under the same reason is another Event.
        let other = SeriesKey {
            message: "Assigned additional IP \"fd00::5\"".into(),
            ..key("a")
        };
        let (p, _) = c.next(other, t0 + Duration::from_secs(130), event("a.4"));
        assert_eq!(p, Publish::Create);
    }

    #[test]
    fn a_series_ends_after_the_ttl_and_the_cache_stays_bounded() {
        let t0 = Instant::now();
        let mut c = SeriesCache::default();
        c.next(key("a"), t0, event("a.1"));
        let (p, _) = c.next(key("a"), t0 + SERIES_TTL, event("a.2"));
        assert_eq!(p, Publish::Create, "a new Event after the series ended");
        for i in 0..(MAX_SERIES + 100) {
            c.next(key(&format!("s{i}")), t0 + SERIES_TTL, event("x"));
        }
        assert!(c.open.len() <= MAX_SERIES + 1, "{}", c.open.len());
        assert!(c.order.len() <= MAX_SERIES + 1);
    }
}

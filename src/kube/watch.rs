//! Watches Services, EndpointSlices and Nodes and turns them into typed deltas for the
//! controller. kube-runtime's watcher handles reconnects with backoff and relists after
//! `410 Gone`; this module turns a relist into the deletes it implies, so the controller
//! never sees a stale object, and reports when each kind has synced (nothing that would
//! withdraw an IP may happen before that).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::translate;
pub use crate::model::kube::{Kind, KubeUpdate};
use crate::model::{EndpointsByNode, Selector, ServiceKey};

/// One object's change as seen by a [`Tracker`]: what was delivered before and what is now.
#[derive(Debug, PartialEq)]
struct Change<K> {
    id: String,
    old: Option<K>,
    new: Option<K>,
}

/// Tracks one kind across watch events: remembers what was delivered so a relist can be
/// turned into deletes, and drops no-op updates.
struct Tracker<K> {
    known: BTreeMap<String, K>,
    relisting: Option<BTreeSet<String>>,
}

impl<K: PartialEq + Clone> Tracker<K> {
    fn new() -> Self {
        Self {
            known: BTreeMap::new(),
            relisting: None,
        }
    }

    fn apply(&mut self, id: String, obj: K) -> Option<Change<K>> {
        if self.known.get(&id) == Some(&obj) {
            return None;
        }
        let old = self.known.insert(id.clone(), obj.clone());
        Some(Change {
            id,
            old,
            new: Some(obj),
        })
    }

    fn delete(&mut self, id: &str) -> Option<Change<K>> {
        self.known.remove(id).map(|old| Change {
            id: id.to_owned(),
            old: Some(old),
            new: None,
        })
    }

    /// The changes one watcher event implies, and whether it completed a (re)list.
    fn on_event(&mut self, ev: Event<(String, K)>) -> (Vec<Change<K>>, bool) {
        match ev {
            Event::Init => {
                self.relisting = Some(BTreeSet::new());
                (Vec::new(), false)
            }
            Event::InitApply((id, obj)) => {
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(id.clone());
                }
                (self.apply(id, obj).into_iter().collect(), false)
            }
            Event::InitDone => {
                let mut changes = Vec::new();
                if let Some(seen) = self.relisting.take() {
                    let gone: Vec<String> = self
                        .known
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    changes.extend(gone.iter().filter_map(|id| self.delete(id)));
                }
                (changes, true)
            }
            Event::Apply((id, obj)) => (self.apply(id, obj).into_iter().collect(), false),
            Event::Delete((id, _)) => (self.delete(&id).into_iter().collect(), false),
        }
    }
}

/// `Event<K>` → `Event<T>`, object by object.
fn map_event<K, T>(ev: Event<K>, mut f: impl FnMut(K) -> T) -> Event<T> {
    match ev {
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::InitDone => Event::InitDone,
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
    }
}

fn object_id<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

pub(super) fn watch_stream<K>(
    client: Client,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let api: Api<K> = Api::all(client);
    // The watcher itself retries at once: without a backoff an unreachable API server makes
    // it spin (the chaos soak saw ~3000 retries/s per kind, starving raft-lite of CPU).
    watcher::watcher(api, watcher::Config::default()).backoff(RetryBackoff::default())
}

/// Retry delays for a failed watch: 0.5 s doubling to at most 4 s, back to 0.5 s after a
/// success. Not client-go's 30 s cap (kube-runtime's `default_backoff`): one host's three
/// watchers are no load worth spreading, while a 30 s cap left lbd blind to a returned API
/// server for up to half a minute after a long outage.
#[derive(Clone, Debug)]
pub struct RetryBackoff {
    next: Duration,
}

impl RetryBackoff {
    pub const FIRST: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(4);
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Runs until `tx` is closed. Errors (API server unreachable, watch failures) are logged and
/// retried by the watcher with backoff; nothing is withdrawn because of them. Namespaces are
/// watched separately ([`watch_namespaces`]), only while a pool chooses by their labels.
pub async fn run(client: Client, ignore_exclude_label: bool, tx: mpsc::Sender<KubeUpdate>) {
    let services = watch_services(client.clone(), tx.clone());
    let slices = watch_slices(client.clone(), tx.clone());
    let nodes = watch_nodes(client, ignore_exclude_label, tx);
    tokio::join!(services, slices, nodes);
}

fn log_watch_error(kind: Kind, err: &watcher::Error) {
    warn!(?kind, error = %err, "Kubernetes watch failed; retrying with backoff");
}

/// What the trackers of Services and Nodes remember of an object: whether it counts (a
/// `type: LoadBalancer` Service, any Node) and a fingerprint of what was delivered, not the
/// object itself — the controller holds the one copy. Two different versions of one object
/// share a 64-bit fingerprint with probability 2^-64.
type Seen = Option<u64>;

fn fingerprint<T: Hash>(t: &T) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// Tracks objects by fingerprint; the objects of the event being handled are kept aside
/// until its changes are delivered.
fn seen_event<T: Hash>(
    ev: Event<(String, Option<T>)>,
    objects: &mut BTreeMap<String, T>,
) -> Event<(String, Seen)> {
    map_event(ev, |(id, obj)| {
        let seen = obj.as_ref().map(fingerprint);
        if let Some(o) = obj {
            objects.insert(id.clone(), o);
        }
        (id, seen)
    })
}

async fn watch_services(client: Client, tx: mpsc::Sender<KubeUpdate>) {
    let mut tracker: Tracker<Seen> = Tracker::new();
    let mut stream = std::pin::pin!(watch_stream::<core::Service>(client));
    while let Some(item) = stream.next().await {
        let ev = match item {
            Ok(ev) => map_event(ev, |o| (object_id(&o), translate::service_from_k8s(&o))),
            Err(e) => {
                log_watch_error(Kind::Services, &e);
                continue;
            }
        };
        let mut objects = BTreeMap::new();
        let (changes, done) = tracker.on_event(seen_event(ev, &mut objects));
        let mut out = Vec::new();
        for c in changes {
            match (c.old.flatten(), c.new.flatten()) {
                (_, Some(_)) => out.extend(objects.remove(&c.id).map(KubeUpdate::Service)),
                (Some(_), None) => out.push(KubeUpdate::ServiceGone(service_key(&c.id))),
                (None, None) => {}
            }
        }
        if done {
            out.push(KubeUpdate::Synced(Kind::Services));
        }
        if !send_all(&tx, out).await {
            return;
        }
    }
}

/// Namespaces and their labels, for pools' `namespace_selectors`. Started only when a pool
/// has some (at start or on the reload that adds the first): a cluster that does not use
/// them needs no permission on Namespaces (an lbd upgraded without the new RBAC keeps
/// working), and the controller then does not wait for a list that would never come.
pub async fn watch_namespaces(client: Client, tx: mpsc::Sender<KubeUpdate>) {
    let mut tracker: Tracker<Option<Selector>> = Tracker::new();
    let mut stream = std::pin::pin!(watch_stream::<core::Namespace>(client));
    while let Some(item) = stream.next().await {
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                log_watch_error(Kind::Namespaces, &e);
                continue;
            }
        };
        let ev = map_event(ev, |n| {
            let id = object_id(&n);
            (id, translate::namespace_from_k8s(&n).map(|(_, l)| l))
        });
        let (changes, done) = tracker.on_event(ev);
        let mut out = Vec::new();
        for c in changes {
            // Namespaces are not namespaced: the id is "/name".
            let name = c.id.trim_start_matches('/').to_owned();
            match c.new.flatten() {
                Some(labels) => out.push(KubeUpdate::Namespace { name, labels }),
                None => out.push(KubeUpdate::NamespaceGone(name)),
            }
        }
        if done {
            out.push(KubeUpdate::Synced(Kind::Namespaces));
        }
        if !send_all(&tx, out).await {
            return;
        }
    }
}

/// The Service key of an object id (`namespace/name`).
fn service_key(id: &str) -> ServiceKey {
    let (namespace, name) = id.split_once('/').unwrap_or(("", id));
    ServiceKey::new(namespace, name)
}

/// False once the controller has gone away.
async fn send_all(tx: &mpsc::Sender<KubeUpdate>, updates: Vec<KubeUpdate>) -> bool {
    for u in updates {
        if tx.send(u).await.is_err() {
            return false;
        }
    }
    true
}

async fn watch_slices(client: Client, tx: mpsc::Sender<KubeUpdate>) {
    // slice id → (service, its per-node endpoints)
    let mut tracker: Tracker<Option<(ServiceKey, EndpointsByNode)>> = Tracker::new();
    // service → its slices' ids: a slice change sums only that Service's slices.
    let mut slices_of: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    let mut stream = std::pin::pin!(watch_stream::<EndpointSlice>(client));
    while let Some(item) = stream.next().await {
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                log_watch_error(Kind::EndpointSlices, &e);
                continue;
            }
        };
        let ev = map_event(ev, |s| {
            let id = object_id(&s);
            let val = translate::slice_service(&s).map(|key| {
                let mut by_node = EndpointsByNode::new();
                translate::add_ready_endpoints(&s, &mut by_node);
                (key, by_node)
            });
            (id, val)
        });
        let (changes, done) = tracker.on_event(ev);
        let mut touched: BTreeSet<ServiceKey> = BTreeSet::new();
        for c in changes {
            if let Some((k, _)) = c.old.flatten() {
                if let Some(ids) = slices_of.get_mut(&k) {
                    ids.remove(&c.id);
                    if ids.is_empty() {
                        slices_of.remove(&k);
                    }
                }
                touched.insert(k);
            }
            if let Some((k, _)) = c.new.flatten() {
                slices_of.entry(k.clone()).or_default().insert(c.id.clone());
                touched.insert(k);
            }
        }
        for key in touched {
            let mut total = EndpointsByNode::new();
            for id in slices_of.get(&key).into_iter().flatten() {
                if let Some(Some((_, by_node))) = tracker.known.get(id) {
                    for (node, n) in by_node {
                        *total.entry(node.clone()).or_default() += n;
                    }
                }
            }
            debug!(service = %key, ?total, "endpoints changed");
            if tx.send(KubeUpdate::Endpoints(key, total)).await.is_err() {
                return;
            }
        }
        if done
            && tx
                .send(KubeUpdate::Synced(Kind::EndpointSlices))
                .await
                .is_err()
        {
            return;
        }
    }
}

async fn watch_nodes(client: Client, ignore_exclude_label: bool, tx: mpsc::Sender<KubeUpdate>) {
    let mut tracker: Tracker<Seen> = Tracker::new();
    let mut stream = std::pin::pin!(watch_stream::<core::Node>(client));
    while let Some(item) = stream.next().await {
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                log_watch_error(Kind::Nodes, &e);
                continue;
            }
        };
        let ev = map_event(ev, |n| {
            (
                object_id(&n),
                translate::node_from_k8s(&n, ignore_exclude_label),
            )
        });
        let mut objects = BTreeMap::new();
        let (changes, done) = tracker.on_event(seen_event(ev, &mut objects));
        let mut out = Vec::new();
        for c in changes {
            match (c.old.flatten(), c.new.flatten()) {
                (_, Some(_)) => out.extend(objects.remove(&c.id).map(KubeUpdate::Node)),
                // Nodes are not namespaced: the id is "/name".
                (Some(_), None) => out.push(KubeUpdate::NodeGone(
                    c.id.trim_start_matches('/').to_owned(),
                )),
                (None, None) => {}
            }
        }
        if done {
            out.push(KubeUpdate::Synced(Kind::Nodes));
        }
        if !send_all(&tx, out).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_to_a_4s_cap_and_reset_after_a_success() {
        use kube::runtime::utils::Backoff;
        let mut b = RetryBackoff::default();
        let ms: Vec<u128> = b.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 4000, 4000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(500)));
    }

    #[tokio::test]
    async fn unreachable_api_server_is_retried_with_backoff_not_in_a_spin() {
        // A closed port on loopback: every connect fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let uri = format!("http://127.0.0.1:{port}").parse().expect("uri");
        let client = Client::try_from(kube::Config::new(uri)).expect("client");
        let mut stream = std::pin::pin!(watch_stream::<core::Node>(client));
        let mut errors = 0;
        let window = tokio::time::sleep(std::time::Duration::from_millis(1500));
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                item = stream.next() => match item {
                    Some(Err(_)) => errors += 1,
                    Some(Ok(_)) => {} // Event::Init before the first list
                    None => break,
                },
            }
        }
        assert!(errors >= 1, "the failure is reported");
        assert!(errors <= 4, "{errors} retries in 1.5 s: no backoff");
    }

    #[test]
    fn relist_turns_missing_objects_into_deletes() {
        let mut t: Tracker<u32> = Tracker::new();
        t.on_event(Event::Init);
        t.on_event(Event::InitApply(("a".into(), 1)));
        t.on_event(Event::InitApply(("b".into(), 2)));
        let (changes, done) = t.on_event(Event::InitDone);
        assert!(changes.is_empty() && done);
        // After a 410 the watcher relists; "a" is gone from the new list.
        t.on_event(Event::Init);
        let (changes, _) = t.on_event(Event::InitApply(("b".into(), 2)));
        assert!(changes.is_empty(), "unchanged object is not re-delivered");
        let (changes, done) = t.on_event(Event::InitDone);
        assert_eq!(
            changes,
            vec![Change {
                id: "a".into(),
                old: Some(1),
                new: None
            }]
        );
        assert!(done);
    }

    #[test]
    fn identical_apply_is_not_redelivered_but_a_change_is() {
        let mut t: Tracker<u32> = Tracker::new();
        assert_eq!(t.on_event(Event::Apply(("a".into(), 1))).0.len(), 1);
        assert!(t.on_event(Event::Apply(("a".into(), 1))).0.is_empty());
        let (c, _) = t.on_event(Event::Apply(("a".into(), 2)));
        assert_eq!(
            c,
            vec![Change {
                id: "a".into(),
                old: Some(1),
                new: Some(2)
            }]
        );
        assert_eq!(t.on_event(Event::Delete(("a".into(), 2))).0.len(), 1);
        assert!(t.on_event(Event::Delete(("a".into(), 2))).0.is_empty());
    }
}

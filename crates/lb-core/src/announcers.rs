//! Who announces each Service, as Kubernetes is told it (pure; run by the status writer,
//! the raft-lite leader).
//!
//! Two outputs per Service:
//! - the `lb.org/announcing` annotation, the current announcers (`layer2: node-a` or
//!   `bgp: node-a, node-b`), so `kubectl describe svc` answers "which node?";
//! - a `nodeAssigned` Event with MetalLB's wording (`announcing from node "node-a" with
//!   protocol "layer2"`) when a node starts announcing it.
//!
//! Both are rate-limited per Service so a flapping link cannot flood the API server: the
//! annotation is written at most once per [`Limits::annotation_interval`], and at most
//! [`Limits::event_burst`] Events go out per [`Limits::event_window`] (changes in between
//! are held and the last state is reported when allowed; a node that comes and goes
//! meanwhile costs nothing).
//! No announcer at all (an IP between owners, a new leader still learning them) is reported
//! only once it has lasted an annotation interval, and forgets no node: an owner that is
//! back after a gap is not announced again.
//! The annotation on the object is also the memory of what was reported: a new leader, or
//! lbd after a restart, reads it from the watch and neither rewrites it nor repeats the
//! Events of the nodes it names.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::model::ServiceKey;
use crate::writes::EventItem;

/// MetalLB's reason for the Event (speaker `nodeAssigned`).
pub const NODE_ASSIGNED: &str = "nodeAssigned";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Layer2,
    Bgp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Layer2 => "layer2",
            Protocol::Bgp => "bgp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The nodes announcing one Service now (empty: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcing {
    pub protocol: Protocol,
    pub nodes: BTreeSet<String>,
}

impl Announcing {
    /// The annotation's value; `None` when no node announces (the annotation is removed).
    pub fn annotation(&self) -> Option<String> {
        if self.nodes.is_empty() {
            return None;
        }
        let nodes: Vec<&str> = self.nodes.iter().map(String::as_str).collect();
        Some(format!("{}: {}", self.protocol, nodes.join(", ")))
    }

    /// Reads an annotation written by [`Announcing::annotation`]; `None` for anything else
    /// (a hand-edited value is simply overwritten).
    pub fn parse(value: &str) -> Option<Announcing> {
        let (protocol, nodes) = value.split_once(": ")?;
        let protocol = match protocol {
            "layer2" => Protocol::Layer2,
            "bgp" => Protocol::Bgp,
            _ => return None,
        };
        let nodes: BTreeSet<String> = nodes
            .split(", ")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        (!nodes.is_empty()).then_some(Announcing { protocol, nodes })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most one annotation write per Service per interval.
    pub annotation_interval: Duration,
    /// At most this many `nodeAssigned` Events per Service …
    pub event_burst: usize,
    /// … within this window.
    pub event_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            annotation_interval: Duration::from_secs(1),
            event_burst: 3,
            event_window: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The Service as the watch shows it: the annotation on the object now.
    Observed {
        service: ServiceKey,
        annotation: Option<String>,
    },
    /// Who announces the Service now.
    Set {
        service: ServiceKey,
        announcing: Announcing,
    },
    /// The Service is gone (or no longer `type: LoadBalancer`).
    Gone(ServiceKey),
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make the annotation exactly `value` (`None`: remove it).
    Annotate {
        service: ServiceKey,
        value: Option<String>,
    },
    Event(EventItem),
}

#[derive(Default)]
struct Entry {
    /// The annotation on the object (as last seen, or as last written by us).
    on_object: Option<String>,
    /// Who announces now, once known.
    now: Option<Announcing>,
    /// Nodes whose start was reported in an Event (or named by the annotation we found).
    reported: BTreeSet<String>,
    /// Protocol of `reported`.
    reported_protocol: Option<Protocol>,
    annotate_after: Option<Instant>,
    /// When the last Events (up to the burst) went out.
    events_at: VecDeque<Instant>,
    /// Since when no node announces (while `now` says so).
    empty_since: Option<Instant>,
}

impl Entry {
    /// What an annotation names counts as reported (by whoever wrote it).
    fn reported_as_in(&mut self, annotation: Option<&str>) {
        match annotation.and_then(Announcing::parse) {
            Some(a) => {
                self.reported = a.nodes;
                self.reported_protocol = Some(a.protocol);
            }
            None => {
                self.reported.clear();
                self.reported_protocol = None;
            }
        }
    }
}

pub struct Announcers {
    limits: Limits,
    services: BTreeMap<ServiceKey, Entry>,
    /// Services with something not yet reported.
    dirty: BTreeSet<ServiceKey>,
}

impl Announcers {
    pub fn new(limits: Limits) -> Self {
        Announcers {
            limits,
            services: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        match input {
            Input::Observed {
                service,
                annotation,
            } => {
                if annotation.is_none() && !self.services.contains_key(&service) {
                    // Nothing reported and nothing to remember (most Services, most of the
                    // time): no entry, so 10,000 unannounced Services cost nothing here.
                    return self.flush(now);
                }
                let e = self.services.entry(service.clone()).or_default();
                if e.now.is_none() {
                    // Not reporting this Service (yet): what the annotation names was
                    // reported by whoever wrote it.
                    e.reported_as_in(annotation.as_deref());
                }
                if e.on_object != annotation {
                    e.on_object = annotation;
                    self.dirty.insert(service);
                }
            }
            Input::Set {
                service,
                announcing,
            } => {
                if announcing.nodes.is_empty() && !self.services.contains_key(&service) {
                    // Nobody announces a Service we have no record of: nothing to write.
                    return self.flush(now);
                }
                let e = self.services.entry(service.clone()).or_default();
                if e.now.as_ref() != Some(&announcing) {
                    if announcing.nodes.is_empty() {
                        e.empty_since.get_or_insert(now);
                    } else {
                        e.empty_since = None;
                    }
                    // A node that stopped announcing (for another) is reported again when it
                    // comes back; a gap with no announcer forgets nobody.
                    if announcing.nodes.is_empty() {
                        // Nobody to report; nobody forgotten.
                    } else if e.reported_protocol == Some(announcing.protocol) {
                        e.reported.retain(|n| announcing.nodes.contains(n));
                    } else {
                        e.reported.clear();
                        e.reported_protocol = Some(announcing.protocol);
                    }
                    e.now = Some(announcing);
                    self.dirty.insert(service);
                }
            }
            Input::Gone(service) => {
                self.services.remove(&service);
                self.dirty.remove(&service);
            }
            Input::Tick => {}
        }
        self.flush(now)
    }

    /// This host stops writing (it is no longer the leader): forget who announces and what
    /// was held; keep what the objects say, which whoever writes next builds on.
    pub fn stand_down(&mut self) {
        self.dirty.clear();
        for e in self.services.values_mut() {
            e.now = None;
            e.annotate_after = None;
            e.events_at.clear();
            e.empty_since = None;
            let on_object = e.on_object.clone();
            e.reported_as_in(on_object.as_deref());
        }
    }

    /// When a held change is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.dirty
            .iter()
            .filter_map(|s| self.services.get(s))
            .flat_map(|e| {
                let Some(a) = &e.now else {
                    return [None, None];
                };
                let annotate = (a.annotation() != e.on_object)
                    .then(|| due_annotation(e, self.limits))
                    .flatten();
                let event = (!a.nodes.is_subset(&e.reported))
                    .then(|| due_event(e, self.limits))
                    .flatten();
                [annotate, event]
            })
            .flatten()
            .min()
    }

    /// Reports what is due; what must wait stays dirty.
    fn flush(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        let limits = self.limits;
        self.dirty.retain(|service| {
            let Some(e) = self.services.get_mut(service) else {
                return false;
            };
            let Some(a) = &e.now else {
                // Who announces is not known yet: nothing to say.
                return false;
            };
            let mut wait = false;
            let value = a.annotation();
            if value != e.on_object {
                if due_annotation(e, limits).is_none_or(|t| now >= t) {
                    out.push(Output::Annotate {
                        service: service.clone(),
                        value: value.clone(),
                    });
                    e.on_object = value;
                    e.annotate_after = Some(now + limits.annotation_interval);
                } else {
                    wait = true;
                }
            }
            let new: Vec<&String> = a.nodes.difference(&e.reported).collect();
            if !new.is_empty() {
                if due_event(e, limits).is_none_or(|t| now >= t) {
                    out.push(Output::Event(EventItem {
                        service: service.clone(),
                        uid: None,
                        warning: false,
                        reason: NODE_ASSIGNED,
                        message: message(a.protocol, &new),
                    }));
                    e.reported = a.nodes.clone();
                    e.reported_protocol = Some(a.protocol);
                    e.events_at.push_back(now);
                    while e.events_at.len() > limits.event_burst {
                        e.events_at.pop_front();
                    }
                } else {
                    wait = true;
                }
            }
            wait
        });
        out
    }
}

/// When the annotation may be written next: after the interval since the last write, and a
/// removal only once no announcer has lasted that long.
fn due_annotation(e: &Entry, limits: Limits) -> Option<Instant> {
    let removal = e.empty_since.map(|t| t + limits.annotation_interval);
    e.annotate_after.into_iter().chain(removal).max()
}

/// When the next Event may go: at once while the window holds fewer than the burst.
fn due_event(e: &Entry, limits: Limits) -> Option<Instant> {
    if e.events_at.len() < limits.event_burst {
        None
    } else {
        e.events_at.front().map(|t| *t + limits.event_window)
    }
}

/// MetalLB's message for one node; several nodes that start together share one Event.
fn message(protocol: Protocol, nodes: &[&String]) -> String {
    match nodes {
        [one] => format!(
            "announcing from node {one:?} with protocol {:?}",
            protocol.as_str()
        ),
        many => {
            let names: Vec<String> = many.iter().map(|n| format!("{n:?}")).collect();
            format!(
                "announcing from nodes {} with protocol {:?}",
                names.join(", "),
                protocol.as_str()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> ServiceKey {
        ServiceKey::new("default", n)
    }

    fn on(protocol: Protocol, nodes: &[&str]) -> Announcing {
        Announcing {
            protocol,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn set(s: &str, a: Announcing) -> Input {
        Input::Set {
            service: key(s),
            announcing: a,
        }
    }

    fn annotations(out: &[Output]) -> Vec<Option<String>> {
        out.iter()
            .filter_map(|o| match o {
                Output::Annotate { value, .. } => Some(value.clone()),
                _ => None,
            })
            .collect()
    }

    fn events(out: &[Output]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(format!("{}: {}", e.reason, e.message)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_owner_gets_the_annotation_and_metallbs_event() {
        let t = crate::test_origin();
        let mut a = Announcers::new(Limits::default());
        let out = a.step(t, set("web", on(Protocol::Layer2, &["node-a"])));
        assert_eq!(annotations(&out), vec![Some("layer2: node-a".into())]);
        assert_eq!(
            events(&out),
            vec![r#"nodeAssigned: announcing from node "node-a" with protocol "layer2""#]
        );
    }

    #[test]
    fn bgp_nodes_starting_together_share_one_event() {
        let t = crate::test_origin();
        let mut a = Announcers::new(Limits::default());
        let out = a.step(t, set("web", on(Protocol::Bgp, &["b", "a"])));
        assert_eq!(annotations(&out), vec![Some("bgp: a, b".into())]);
        assert_eq!(
            events(&out),
            vec![r#"nodeAssigned: announcing from nodes "a", "b" with protocol "bgp""#]
        );
    }

    #[test]
    fn what_the_annotation_already_says_is_neither_rewritten_nor_announced_again() {
        let t = crate::test_origin();
        let mut a = Announcers::new(Limits::default());
        let out = a.step(
            t,
            Input::Observed {
                service: key("web"),
                annotation: Some("layer2: node-a".into()),
            },
        );
        assert!(out.is_empty());
        let out = a.step(t, set("web", on(Protocol::Layer2, &["node-a"])));
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_flapping_owner_costs_a_burst_of_events_then_one_per_window() {
        let t = crate::test_origin();
        let limits = Limits::default();
        let mut a = Announcers::new(limits);
        let mut all = a.step(t, set("web", on(Protocol::Layer2, &["a"])));
        // The IP moves back and forth every 100 ms for 10 s.
        for i in 1..100u32 {
            let now = t + Duration::from_millis(100) * i;
            let owner = if i % 2 == 1 { "b" } else { "a" };
            all.extend(a.step(now, set("web", on(Protocol::Layer2, &[owner]))));
        }
        assert_eq!(events(&all).len(), limits.event_burst, "{all:?}");
        // Annotation writes: at most one per second (plus the first).
        assert!(annotations(&all).len() <= 11, "{all:?}");
        // It settles on b; at the end of the interval b's start is reported once.
        let settled = t + Duration::from_secs(10);
        let mut late = a.step(settled, set("web", on(Protocol::Layer2, &["b"])));
        while let Some(deadline) = a.next_deadline() {
            assert!(deadline <= t + limits.event_window);
            late.extend(a.step(deadline, Input::Tick));
        }
        all.extend(late.iter().cloned());
        assert_eq!(
            events(&late),
            vec![r#"nodeAssigned: announcing from node "b" with protocol "layer2""#]
        );
        assert_eq!(annotations(&all).last(), Some(&Some("layer2: b".into())));
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn no_announcer_removes_the_annotation_without_an_event() {
        let t = crate::test_origin();
        let mut a = Announcers::new(Limits::default());
        a.step(t, set("web", on(Protocol::Layer2, &["a"])));
        let later = t + Duration::from_secs(2);
        assert!(
            a.step(later, set("web", on(Protocol::Layer2, &[])))
                .is_empty()
        );
        let due = a.next_deadline().expect("a held removal");
        assert_eq!(due, later + Limits::default().annotation_interval);
        let out = a.step(due, Input::Tick);
        assert_eq!(annotations(&out), vec![None]);
        assert!(events(&out).is_empty());
    }

    #[test]
    fn a_short_gap_without_an_owner_writes_nothing_and_repeats_no_event() {
        let t = crate::test_origin();
        let mut a = Announcers::new(Limits::default());
        a.step(t, set("web", on(Protocol::Layer2, &["a"])));
        // The IP is between owners (or a new leader learns them) for 400 ms; a is back.
        let gap = t + Duration::from_secs(5);
        assert!(
            a.step(gap, set("web", on(Protocol::Layer2, &[])))
                .is_empty()
        );
        let back = gap + Duration::from_millis(400);
        assert!(
            a.step(back, set("web", on(Protocol::Layer2, &["a"])))
                .is_empty()
        );
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn a_new_leader_builds_on_what_the_old_one_wrote() {
        let t = crate::test_origin();
        let mut a = Announcers::new(Limits::default());
        // As a follower: the old leader's annotations go by in the watch.
        for v in ["layer2: a", "layer2: b"] {
            a.step(
                t,
                Input::Observed {
                    service: key("web"),
                    annotation: Some(v.into()),
                },
            );
        }
        // Leader now: b still announces, then c takes over.
        assert!(
            a.step(t, set("web", on(Protocol::Layer2, &["b"])))
                .is_empty()
        );
        let out = a.step(t, set("web", on(Protocol::Layer2, &["c"])));
        assert_eq!(annotations(&out), vec![Some("layer2: c".into())]);
        assert_eq!(events(&out).len(), 1);
        // Leadership lost and regained: nothing is repeated.
        a.stand_down();
        a.step(
            t,
            Input::Observed {
                service: key("web"),
                annotation: Some("layer2: c".into()),
            },
        );
        assert!(
            a.step(t, set("web", on(Protocol::Layer2, &["c"])))
                .is_empty()
        );
    }

    #[test]
    fn a_gone_service_is_forgotten() {
        let t = crate::test_origin();
        let mut a = Announcers::new(Limits::default());
        a.step(t, set("web", on(Protocol::Layer2, &["a"])));
        a.step(t, set("web", on(Protocol::Layer2, &["b"])));
        assert!(a.next_deadline().is_some());
        assert!(a.step(t, Input::Gone(key("web"))).is_empty());
        assert_eq!(a.next_deadline(), None);
    }

    #[test]
    fn the_annotation_round_trips_and_rejects_other_text() {
        let a = on(Protocol::Bgp, &["n1", "n2"]);
        assert_eq!(Announcing::parse(&a.annotation().unwrap()), Some(a));
        assert_eq!(Announcing::parse("by hand"), None);
        assert_eq!(Announcing::parse("ospf: n1"), None);
        assert_eq!(on(Protocol::Layer2, &[]).annotation(), None);
    }
}

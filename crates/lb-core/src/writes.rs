//! What goes to the API server, in what order (pure): Service status writes first, Events
//! behind them.
//!
//! - Status: the newest desired status per Service wins (writes coalesce); at most one
//!   write per Service is in flight, so a stale write never lands after a newer one; up to
//!   `max_in_flight` Services are written at once; a failed write is retried with
//!   exponential backoff per Service, and a 429 (or any answer with Retry-After) pauses
//!   every status write until then (API Priority and Fairness asks clients to slow down).
//! - Announcers (the `lb.org/announcing` annotation, see `crate::announcers`): state like
//!   the status, coalesced and retried the same way, but sent only while no status write
//!   waits, and for a Service only once its status is written.
//! - Events: best effort. One is posted only while no status write waits for a slot and
//!   its own Service has no status write pending or in flight, so an IP reaches
//!   `status.loadBalancer.ingress` before any Event about it and Events never delay a
//!   status write. The queue is bounded (the oldest is dropped and counted), and an Event
//!   that fails is dropped and counted, never retried.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::model::ServiceKey;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Tuning of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Status writes in flight at once (each is two requests: status and annotation).
    pub max_in_flight: usize,
    /// Events posted at once.
    pub max_events_in_flight: usize,
    /// Events waiting; beyond it the oldest is dropped.
    pub max_events_queued: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 16,
            max_events_in_flight: 2,
            max_events_queued: 4096,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// What the controller asked for since the last step, in its order. All of it is
    /// queued before anything is sent, so an Event never overtakes the status write that
    /// came with it.
    Submit(Vec<Submission>),
    /// Write `id` finished.
    Written {
        id: u64,
        result: Result,
    },
    /// Event `id` finished (`ok`: posted).
    Posted {
        id: u64,
        ok: bool,
    },
    Tick,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Result {
    Ok,
    /// The Service is gone: nothing to retry.
    Gone,
    /// Failed; `retry_after` when the server said when to come back (429, Retry-After).
    Failed {
        retry_after: Option<Duration>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submission {
    /// Make the Service's status exactly `ips` (empty: clear) with the pool annotation.
    Status {
        service: ServiceKey,
        ips: Vec<IpAddr>,
        pool: Option<String>,
    },
    /// Make the Service's announcers annotation exactly `value` (`None`: remove it).
    Announcing {
        service: ServiceKey,
        value: Option<String>,
    },
    Event(EventItem),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventItem {
    pub service: ServiceKey,
    /// The Service's `metadata.uid`, when known: `kubectl describe` finds a Service's Events
    /// by it.
    pub uid: Option<String>,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Write {
        id: u64,
        service: ServiceKey,
        ips: Vec<IpAddr>,
        pool: Option<String>,
    },
    /// Write the announcers annotation (answered by `Input::Written`).
    Annotate {
        id: u64,
        service: ServiceKey,
        value: Option<String>,
    },
    Post {
        id: u64,
        event: EventItem,
    },
    Log(Log),
}

/// What is worth a log line or a counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Log {
    Written {
        service: ServiceKey,
        ips: Vec<IpAddr>,
        pool: Option<String>,
    },
    Annotated {
        service: ServiceKey,
        value: Option<String>,
    },
    Gone {
        service: ServiceKey,
    },
    WriteFailed {
        service: ServiceKey,
        retry_in: Duration,
    },
    /// The server asked every status write to wait this long.
    Paused {
        for_: Duration,
    },
    EventDropped {
        service: ServiceKey,
        reason: &'static str,
        /// The queue was full (else the post failed).
        overflow: bool,
    },
}

struct Pending {
    ips: Vec<IpAddr>,
    pool: Option<String>,
    not_before: Instant,
    backoff: Duration,
}

struct InFlight {
    ips: Vec<IpAddr>,
    pool: Option<String>,
    backoff: Duration,
}

/// An announcers annotation waiting or in flight.
struct Annotation {
    value: Option<String>,
    not_before: Instant,
    backoff: Duration,
}

/// What a request id stands for.
enum Request {
    Status(ServiceKey),
    Announcing(ServiceKey),
}

/// The queue of writes to the API server.
pub struct Writes {
    limits: Limits,
    pending: BTreeMap<ServiceKey, Pending>,
    /// Services with a pending write, in the order they became pending (entries whose
    /// write already went are skipped).
    order: VecDeque<ServiceKey>,
    in_flight: BTreeMap<ServiceKey, InFlight>,
    by_id: BTreeMap<u64, Request>,
    /// Announcers annotations waiting, and their order (as `order` for status).
    annotations: BTreeMap<ServiceKey, Annotation>,
    annotation_order: VecDeque<ServiceKey>,
    annotations_in_flight: BTreeMap<ServiceKey, Annotation>,
    paused_until: Option<Instant>,
    events: VecDeque<EventItem>,
    /// Events posted and not yet answered, by id.
    events_in_flight: BTreeMap<u64, (ServiceKey, &'static str)>,
    next_id: u64,
}

impl Writes {
    pub fn new(limits: Limits) -> Self {
        Writes {
            limits: Limits {
                max_in_flight: limits.max_in_flight.max(1),
                max_events_in_flight: limits.max_events_in_flight.max(1),
                max_events_queued: limits.max_events_queued.max(1),
            },
            pending: BTreeMap::new(),
            order: VecDeque::new(),
            in_flight: BTreeMap::new(),
            by_id: BTreeMap::new(),
            annotations: BTreeMap::new(),
            annotation_order: VecDeque::new(),
            annotations_in_flight: BTreeMap::new(),
            paused_until: None,
            events: VecDeque::new(),
            events_in_flight: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Status writes not yet confirmed (pending or in flight).
    pub fn backlog(&self) -> usize {
        self.pending.len() + self.in_flight.len()
    }

    pub fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Submit(items) => {
                for item in items {
                    self.submit(now, item, &mut out);
                }
            }
            Input::Written { id, result } => self.written(now, id, result, &mut out),
            Input::Posted { id, ok } => {
                if let Some((service, reason)) = self.events_in_flight.remove(&id)
                    && !ok
                {
                    out.push(Output::Log(Log::EventDropped {
                        service,
                        reason,
                        overflow: false,
                    }));
                }
            }
            Input::Tick => {}
        }
        self.send(now, &mut out);
        out
    }

    fn submit(&mut self, now: Instant, item: Submission, out: &mut Vec<Output>) {
        match item {
            Submission::Status { service, ips, pool } => {
                if !self.pending.contains_key(&service) {
                    self.order.push_back(service.clone());
                }
                self.pending.insert(
                    service,
                    Pending {
                        ips,
                        pool,
                        not_before: now,
                        backoff: BACKOFF_MIN,
                    },
                );
            }
            Submission::Announcing { service, value } => {
                if !self.annotations.contains_key(&service) {
                    self.annotation_order.push_back(service.clone());
                }
                self.annotations.insert(
                    service,
                    Annotation {
                        value,
                        not_before: now,
                        backoff: BACKOFF_MIN,
                    },
                );
            }
            Submission::Event(e) => {
                if self.events.len() >= self.limits.max_events_queued
                    && let Some(old) = self.events.pop_front()
                {
                    out.push(Output::Log(Log::EventDropped {
                        service: old.service,
                        reason: old.reason,
                        overflow: true,
                    }));
                }
                self.events.push_back(e);
            }
        }
    }

    fn written(&mut self, now: Instant, id: u64, result: Result, out: &mut Vec<Output>) {
        let service = match self.by_id.remove(&id) {
            Some(Request::Status(service)) => service,
            Some(Request::Announcing(service)) => {
                return self.annotated(now, service, result, out);
            }
            None => return,
        };
        let Some(f) = self.in_flight.remove(&service) else {
            return;
        };
        match result {
            Result::Ok => out.push(Output::Log(Log::Written {
                service,
                ips: f.ips,
                pool: f.pool,
            })),
            Result::Gone => out.push(Output::Log(Log::Gone { service })),
            Result::Failed { retry_after } => {
                self.pause(now, retry_after, out);
                // A newer status queued meanwhile wins; else this one is tried again.
                if !self.pending.contains_key(&service) {
                    let retry_in = f.backoff;
                    out.push(Output::Log(Log::WriteFailed {
                        service: service.clone(),
                        retry_in,
                    }));
                    self.order.push_back(service.clone());
                    self.pending.insert(
                        service,
                        Pending {
                            ips: f.ips,
                            pool: f.pool,
                            not_before: now + retry_in,
                            backoff: (retry_in * 2).min(BACKOFF_MAX),
                        },
                    );
                }
            }
        }
    }

    fn annotated(
        &mut self,
        now: Instant,
        service: ServiceKey,
        result: Result,
        out: &mut Vec<Output>,
    ) {
        let Some(f) = self.annotations_in_flight.remove(&service) else {
            return;
        };
        match result {
            Result::Ok => out.push(Output::Log(Log::Annotated {
                service,
                value: f.value,
            })),
            Result::Gone => out.push(Output::Log(Log::Gone { service })),
            Result::Failed { retry_after } => {
                self.pause(now, retry_after, out);
                if !self.annotations.contains_key(&service) {
                    let retry_in = f.backoff;
                    out.push(Output::Log(Log::WriteFailed {
                        service: service.clone(),
                        retry_in,
                    }));
                    self.annotation_order.push_back(service.clone());
                    self.annotations.insert(
                        service,
                        Annotation {
                            value: f.value,
                            not_before: now + retry_in,
                            backoff: (retry_in * 2).min(BACKOFF_MAX),
                        },
                    );
                }
            }
        }
    }

    /// The server said when to come back (429, Retry-After): every write waits until then.
    fn pause(&mut self, now: Instant, retry_after: Option<Duration>, out: &mut Vec<Output>) {
        if let Some(after) = retry_after {
            let until = now + after;
            if self.paused_until.is_none_or(|p| p < until) {
                self.paused_until = Some(until);
                out.push(Output::Log(Log::Paused { for_: after }));
            }
        }
    }

    /// Requests in flight that take a write slot (status and annotations).
    fn writes_in_flight(&self) -> usize {
        self.in_flight.len() + self.annotations_in_flight.len()
    }

    /// Whether status writes may go at `now` (not paused by the server).
    fn open(&self, now: Instant) -> bool {
        self.paused_until.is_none_or(|p| now >= p)
    }

    /// Starts what may start: status writes in arrival order up to the limit, then Events
    /// when no status write waits for a slot.
    fn send(&mut self, now: Instant, out: &mut Vec<Output>) {
        let waiting;
        if self.open(now) {
            self.paused_until = None;
            let mut later = VecDeque::new();
            while self.writes_in_flight() < self.limits.max_in_flight {
                let Some(service) = self.order.pop_front() else {
                    break;
                };
                if self.in_flight.contains_key(&service) {
                    // Its previous write is still out: this one follows it.
                    if self.pending.contains_key(&service) {
                        later.push_back(service);
                    }
                    continue;
                }
                let Some(p) = self.pending.get(&service) else {
                    continue;
                };
                if p.not_before > now {
                    later.push_back(service);
                    continue;
                }
                let Some(p) = self.pending.remove(&service) else {
                    continue;
                };
                let id = self.next_id;
                self.next_id += 1;
                self.by_id.insert(id, Request::Status(service.clone()));
                out.push(Output::Write {
                    id,
                    service: service.clone(),
                    ips: p.ips.clone(),
                    pool: p.pool.clone(),
                });
                self.in_flight.insert(
                    service,
                    InFlight {
                        ips: p.ips,
                        pool: p.pool,
                        backoff: p.backoff,
                    },
                );
            }
            waiting = self
                .order
                .iter()
                .any(|s| self.pending.get(s).is_some_and(|p| p.not_before <= now));
            later.extend(self.order.drain(..));
            self.order = later;
        } else {
            waiting = !self.pending.is_empty();
        }
        if waiting {
            return;
        }
        if self.open(now) {
            self.send_annotations(now, out);
        }
        while self.events_in_flight.len() < self.limits.max_events_in_flight {
            // The first Event whose Service has no status write outstanding (bounded scan).
            let Some(i) = self.events.iter().take(64).position(|e| {
                !self.pending.contains_key(&e.service) && !self.in_flight.contains_key(&e.service)
            }) else {
                break;
            };
            let Some(event) = self.events.remove(i) else {
                break;
            };
            let id = self.next_id;
            self.next_id += 1;
            self.events_in_flight
                .insert(id, (event.service.clone(), event.reason));
            out.push(Output::Post { id, event });
        }
    }

    /// Announcers annotations, in arrival order, in the write slots status left free; for a
    /// Service only once nothing of its status is outstanding.
    fn send_annotations(&mut self, now: Instant, out: &mut Vec<Output>) {
        let mut later = VecDeque::new();
        while self.writes_in_flight() < self.limits.max_in_flight {
            let Some(service) = self.annotation_order.pop_front() else {
                break;
            };
            let Some(a) = self.annotations.get(&service) else {
                continue;
            };
            if a.not_before > now
                || self.annotations_in_flight.contains_key(&service)
                || self.pending.contains_key(&service)
                || self.in_flight.contains_key(&service)
            {
                later.push_back(service);
                continue;
            }
            let Some(a) = self.annotations.remove(&service) else {
                continue;
            };
            let id = self.next_id;
            self.next_id += 1;
            self.by_id.insert(id, Request::Announcing(service.clone()));
            out.push(Output::Annotate {
                id,
                service: service.clone(),
                value: a.value.clone(),
            });
            self.annotations_in_flight.insert(service, a);
        }
        later.extend(self.annotation_order.drain(..));
        self.annotation_order = later;
    }

    /// When a backed-off write or the end of a pause is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(p) = self.paused_until {
            return Some(p);
        }
        if self.writes_in_flight() >= self.limits.max_in_flight {
            return None;
        }
        // A write waiting behind its own Service's write in flight is due when that one
        // answers (an input), not at any time: counting it would wake the loop at once, again
        // and again, until the answer came.
        let status = self
            .pending
            .iter()
            .filter(|(service, _)| !self.in_flight.contains_key(*service))
            .map(|(_, p)| p.not_before)
            .min();
        // Annotations go only while no status write's time has come (as `send` decides);
        // once one has, they wait for an answer (an input), not for a time: counting them
        // would wake the loop again and again.
        let first_status = self.pending.values().map(|p| p.not_before).min();
        let annotations = self
            .annotations
            .iter()
            .filter(|(service, _)| {
                !self.annotations_in_flight.contains_key(*service)
                    && !self.pending.contains_key(*service)
                    && !self.in_flight.contains_key(*service)
            })
            .map(|(_, a)| a.not_before)
            .min()
            .filter(|a| first_status.is_none_or(|s| *a < s));
        status.into_iter().chain(annotations).min()
    }
}

impl crate::machine::Machine for Writes {
    type Input = Input;
    type Output = Output;

    fn step(&mut self, now: Instant, input: Input) -> Vec<Output> {
        Writes::step(self, now, input)
    }

    fn next_deadline(&self) -> Option<Instant> {
        Writes::next_deadline(self)
    }

    fn timer_input(&self) -> Input {
        Input::Tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> ServiceKey {
        ServiceKey::new("default", n)
    }

    fn status_item(n: &str, ip: &str) -> Submission {
        Submission::Status {
            service: key(n),
            ips: vec![ip.parse().unwrap()],
            pool: Some("p".into()),
        }
    }

    fn event_item(n: &str) -> Submission {
        Submission::Event(EventItem {
            service: key(n),
            uid: None,
            warning: false,
            reason: "IPAllocated",
            message: "Assigned IP".into(),
        })
    }

    fn status(n: &str, ip: &str) -> Input {
        Input::Submit(vec![status_item(n, ip)])
    }

    fn event(n: &str) -> Input {
        Input::Submit(vec![event_item(n)])
    }

    fn writes(out: &[Output]) -> Vec<(u64, String, Vec<IpAddr>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Write {
                    id, service, ips, ..
                } => Some((*id, service.to_string(), ips.clone())),
                _ => None,
            })
            .collect()
    }

    fn posts(out: &[Output]) -> Vec<(u64, String)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Post { id, event } => Some((*id, event.service.to_string())),
                _ => None,
            })
            .collect()
    }

    fn limits(n: usize) -> Limits {
        Limits {
            max_in_flight: n,
            ..Limits::default()
        }
    }

    fn annotate(n: &str, v: &str) -> Submission {
        Submission::Announcing {
            service: key(n),
            value: Some(v.into()),
        }
    }

    fn annotated(out: &[Output]) -> Vec<(u64, String, Option<String>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Annotate { id, service, value } => {
                    Some((*id, service.to_string(), value.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_announcers_annotation_follows_its_services_status_and_never_takes_its_slot() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(limits(1));
        let out = w.step(
            t0,
            Input::Submit(vec![
                annotate("a", "layer2: n1"),
                status_item("a", "10.0.0.1"),
            ]),
        );
        let (id, ..) = writes(&out)[0].clone();
        assert!(annotated(&out).is_empty(), "before the status: {out:?}");
        // Another Service's status arrives meanwhile: it goes first.
        assert!(w.step(t0, status("b", "10.0.0.2")).is_empty());
        let ok = Result::Ok;
        let out = w.step(t0, Input::Written { id, result: ok });
        let (id, ..) = writes(&out)[0].clone();
        assert!(annotated(&out).is_empty(), "{out:?}");
        let out = w.step(t0, Input::Written { id, result: ok });
        assert_eq!(
            annotated(&out),
            vec![(2, "default/a".into(), Some("layer2: n1".into()))]
        );
    }

    #[test]
    fn a_failed_annotation_is_retried_unless_a_newer_value_came() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(limits(4));
        let out = w.step(t0, Input::Submit(vec![annotate("a", "layer2: n1")]));
        let (id, ..) = annotated(&out)[0].clone();
        let failed = Result::Failed { retry_after: None };
        let out = w.step(t0, Input::Written { id, result: failed });
        assert!(annotated(&out).is_empty());
        let due = w.next_deadline().expect("a retry");
        let out = w.step(due, Input::Tick);
        let (id, _, v) = annotated(&out)[0].clone();
        assert_eq!(v.as_deref(), Some("layer2: n1"));
        // A newer value while the retry is in flight wins over a second retry.
        w.step(due, Input::Submit(vec![annotate("a", "layer2: n2")]));
        let out = w.step(due, Input::Written { id, result: failed });
        assert_eq!(
            annotated(&out).into_iter().map(|a| a.2).collect::<Vec<_>>(),
            vec![Some("layer2: n2".into())]
        );
    }

    #[test]
    fn an_event_waits_until_its_services_status_is_written() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(limits(4));
        // Both arrive together, the Event first.
        let out = w.step(
            t0,
            Input::Submit(vec![event_item("a"), status_item("a", "10.0.0.1")]),
        );
        let (id, ..) = writes(&out)[0].clone();
        assert!(posts(&out).is_empty(), "Event before the status: {out:?}");
        let out = w.step(
            t0,
            Input::Written {
                id,
                result: Result::Ok,
            },
        );
        assert_eq!(posts(&out).len(), 1, "{out:?}");
        // Apart, too: an Event for a Service whose write is in flight waits for it.
        let out = w.step(t0, status("b", "10.0.0.2"));
        let (id, ..) = writes(&out)[0].clone();
        assert!(posts(&w.step(t0, event("b"))).is_empty());
        let out = w.step(
            t0,
            Input::Written {
                id,
                result: Result::Ok,
            },
        );
        assert_eq!(posts(&out).len(), 1, "{out:?}");
    }

    #[test]
    fn writes_go_out_together_up_to_the_limit_and_events_wait_for_all_of_them() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(limits(2));
        let mut out = Vec::new();
        for (n, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
            out.extend(w.step(t0, status(n, ip)));
        }
        out.extend(w.step(t0, event("z")));
        let sent = writes(&out);
        assert_eq!(sent.len(), 2, "two in flight: {out:?}");
        assert!(posts(&out).is_empty(), "c still waits for a slot");
        let out = w.step(
            t0,
            Input::Written {
                id: sent[0].0,
                result: Result::Ok,
            },
        );
        assert_eq!(writes(&out).len(), 1, "c goes");
        assert_eq!(posts(&out).len(), 1, "nothing waits for a slot now: z goes");
    }

    #[test]
    fn a_newer_status_waits_for_the_write_in_flight_and_then_wins() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(limits(4));
        let out = w.step(t0, status("a", "10.0.0.1"));
        let (id, ..) = writes(&out)[0].clone();
        // While .1 is in flight, .2 then .3 are wanted: only .3 is written, after .1.
        assert!(writes(&w.step(t0, status("a", "10.0.0.2"))).is_empty());
        assert!(writes(&w.step(t0, status("a", "10.0.0.3"))).is_empty());
        let out = w.step(
            t0,
            Input::Written {
                id,
                result: Result::Ok,
            },
        );
        let sent = writes(&out);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].2, vec!["10.0.0.3".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn a_failed_write_is_retried_with_backoff_unless_a_newer_one_came() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(limits(4));
        let (id, ..) = writes(&w.step(t0, status("a", "10.0.0.1")))[0].clone();
        let out = w.step(
            t0,
            Input::Written {
                id,
                result: Result::Failed { retry_after: None },
            },
        );
        assert!(writes(&out).is_empty());
        let due = w.next_deadline().expect("a retry");
        assert_eq!(due, t0 + BACKOFF_MIN);
        let out = w.step(due, Input::Tick);
        let (id, _, ips) = writes(&out)[0].clone();
        assert_eq!(ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        // In flight again; a newer status meanwhile replaces the failed one.
        w.step(due, status("a", "10.0.0.2"));
        let out = w.step(
            due,
            Input::Written {
                id,
                result: Result::Failed { retry_after: None },
            },
        );
        let sent = writes(&out);
        assert_eq!(sent[0].2, vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn retry_after_pauses_every_status_write() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(limits(4));
        let (id, ..) = writes(&w.step(t0, status("a", "10.0.0.1")))[0].clone();
        w.step(
            t0,
            Input::Written {
                id,
                result: Result::Failed {
                    retry_after: Some(Duration::from_secs(2)),
                },
            },
        );
        assert!(writes(&w.step(t0, status("b", "10.0.0.2"))).is_empty());
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(2)));
        let out = w.step(t0 + Duration::from_secs(2), Input::Tick);
        assert_eq!(writes(&out).len(), 2);
    }

    #[test]
    fn a_full_event_queue_drops_the_oldest_and_says_so() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(Limits {
            max_in_flight: 1,
            max_events_in_flight: 1,
            max_events_queued: 2,
        });
        // A status write keeps the Events waiting.
        w.step(t0, status("x", "10.0.0.9"));
        w.step(t0, status("y", "10.0.0.8"));
        w.step(t0, event("a"));
        w.step(t0, event("b"));
        let out = w.step(t0, event("c"));
        assert!(out.contains(&Output::Log(Log::EventDropped {
            service: key("a"),
            reason: "IPAllocated",
            overflow: true
        })));
    }

    #[test]
    fn a_write_for_a_deleted_service_is_not_retried() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(limits(4));
        let (id, ..) = writes(&w.step(t0, status("a", "10.0.0.1")))[0].clone();
        let out = w.step(
            t0,
            Input::Written {
                id,
                result: Result::Gone,
            },
        );
        assert!(out.contains(&Output::Log(Log::Gone { service: key("a") })));
        assert_eq!(w.backlog(), 0);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn a_write_waiting_behind_its_own_write_in_flight_sets_no_deadline() {
        let t0 = crate::test_origin();
        let mut w = Writes::new(limits(4));
        let (id, ..) = writes(&w.step(t0, status("a", "10.0.0.1")))[0].clone();
        w.step(t0, status("a", "10.0.0.2"));
        // Nothing can go before the answer: a deadline now would only spin the loop.
        assert_eq!(w.next_deadline(), None);
        let out = w.step(
            t0,
            Input::Written {
                id,
                result: Result::Ok,
            },
        );
        assert_eq!(writes(&out).len(), 1);
    }
}

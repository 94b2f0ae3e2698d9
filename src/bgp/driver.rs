//! The TCP side of BGP sessions (tokio): one task per peer running the pure
//! [`Peer`](super::peer::Peer) (its sessions, collisions, what it has been sent) with
//! [`crate::driver::run`]; the sockets themselves are in [`super::tcp`].
//!
//! ```text
//!  speaker ──PeerCommand──▶ peer task ──Output::Send──▶ writer task ──▶ TCP
//!  listener ─Incoming────▶    │  ▲
//!                             │  └──Bytes / Closed── reader task ◀── TCP
//!                             └──▶ watch<PeerStatus> (snapshot)
//! ```
//!
//! Each TCP connection has its own `Session`. The primary one dials (unless passive) and
//! retries with backoff; a connection the peer opens while the primary is past Active gets a
//! second `Session`, and [`fsm::resolve_collision`] picks the survivor (RFC 4271 §6.8) as
//! soon as one of them has the peer's OPEN. The writer task drains its queue before closing,
//! so a NOTIFICATION queued just before `CloseTcp` reaches the peer.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::advertise::RouteSet;
use super::peer::{Event as PeerEvent, Input as PeerInput, Output as PeerOutput, Peer, PeerConfig};
use crate::bfd::driver::{BfdStatus, FailureWatch};
use crate::config::BgpPeer;
pub use crate::control::metrics::PeerMetrics;
use crate::driver;

pub use super::session_config::session_config;
use super::tcp::{Connection, Read, md5_counters};
pub use super::tcp::{DriverError, Listener, dial, read_password, resolve_router_id, session_ttl};

/// Commands from the speaker to a peer task.
#[derive(Debug)]
pub enum PeerCommand {
    /// The desired routes (the task diffs against what the session has been sent).
    SetRoutes(RouteSet),
    /// Changes to them (`None`: the prefix is withdrawn).
    RouteChanges(Vec<(ipnet::IpNet, Option<super::advertise::RouteAttrs>)>),
    /// A connection the peer opened to our listener.
    Incoming(TcpStream),
    /// Withdraw everything, send Cease/Administrative Shutdown with this communication,
    /// close, then end the task and answer.
    Shutdown {
        communication: String,
        done: oneshot::Sender<()>,
    },
    /// Stopping to restart: with graceful restart negotiated the routes stay with the
    /// peer (no withdrawal, no NOTIFICATION); otherwise as `Shutdown`.
    StopForRestart {
        communication: String,
        done: oneshot::Sender<()>,
    },
    /// The routes are complete: the initial UPDATEs and End-of-RIB may go out.
    Ready,
    /// The BFD session to watch (`None`: none). When it leaves Up for a path failure the
    /// BGP session is reset with Cease/BFD Down (RFC 5882 §4.3, RFC 9384).
    Bfd(Option<watch::Receiver<BfdStatus>>),
}

pub use super::peer::PeerStatus;

/// Settings of the driver that are not per peer.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    pub connect_timeout: Duration,
    /// Router ID for peers without one (else from the session's local IPv4 address).
    pub router_id: Option<Ipv4Addr>,
    /// How long a shutdown waits for the NOTIFICATION to be written.
    pub flush_timeout: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            router_id: None,
            flush_timeout: Duration::from_secs(2),
        }
    }
}

/// Start the task for `peer`. It runs until `Shutdown` or until the command channel closes
/// (then it stops the same way with an empty communication).
/// Its status goes to `metrics` too (the series exist from the start, session down).
pub fn spawn_peer(
    peer: BgpPeer,
    key: Option<Vec<u8>>,
    options: DriverOptions,
    initial_routes: RouteSet,
    ready: bool,
    metrics: PeerMetrics,
) -> (
    mpsc::UnboundedSender<PeerCommand>,
    watch::Receiver<PeerStatus>,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let initial = PeerStatus::new(peer.address, peer.peer_asn);
    metrics.report(&initial, &initial);
    let (status_tx, status_rx) = watch::channel(initial);
    let task = tokio::spawn(async move {
        run_peer(
            peer,
            key,
            options,
            (initial_routes, ready),
            rx,
            status_tx,
            metrics,
        )
        .await;
    });
    (tx, status_rx, task)
}

/// Reader, writer and dial tasks report here.
enum Event {
    Bytes(u64, Vec<u8>),
    Closed(u64),
    Dialed(u64, Result<TcpStream, DriverError>),
}

/// The peer task's I/O: commands from the speaker, the BFD watch, the connections and the
/// pending dial; the status watch and metrics it publishes to.
struct Shell {
    peer: BgpPeer,
    key: Option<Vec<u8>>,
    options: DriverOptions,
    commands: mpsc::UnboundedReceiver<PeerCommand>,
    bfd: FailureWatch,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    conns: BTreeMap<u64, Connection>,
    dial: Option<(u64, JoinHandle<()>)>,
    /// The stream of the `Incoming` / `Dialed` input being stepped.
    pending: Option<TcpStream>,
    /// The shutdown being carried out: its communication (`None`: left for a restart with
    /// graceful restart, no NOTIFICATION) and who waits for it.
    stopping: Option<(Option<String>, Option<oneshot::Sender<()>>)>,
    status: watch::Sender<PeerStatus>,
    metrics: PeerMetrics,
}

async fn run_peer(
    peer: BgpPeer,
    key: Option<Vec<u8>>,
    options: DriverOptions,
    (initial_routes, mut ready): (RouteSet, bool),
    mut commands: mpsc::UnboundedReceiver<PeerCommand>,
    status: watch::Sender<PeerStatus>,
    metrics: PeerMetrics,
) {
    // Without a router ID there is no OPEN to send: retry, answering commands meanwhile.
    let mut desired = initial_routes;
    let mut bfd = FailureWatch::default();
    let router_id = loop {
        match resolve_router_id(&peer, options.router_id) {
            Ok(id) => break id,
            Err(e) => {
                warn!(peer = %peer.address, error = %e, "BGP session cannot start");
                status.send_modify(|s| s.last_error = Some(e.to_string()));
                let wait = tokio::time::sleep(Duration::from_secs(5));
                tokio::select! {
                    _ = wait => {}
                    cmd = commands.recv() => match cmd {
                        Some(PeerCommand::SetRoutes(r)) => desired = r,
                        Some(PeerCommand::RouteChanges(changes)) => {
                            for (prefix, attrs) in changes {
                                match attrs {
                                    Some(a) => desired.insert(prefix, a),
                                    None => desired.remove(&prefix),
                                };
                            }
                        }
                        Some(PeerCommand::Incoming(_)) => {}
                        Some(PeerCommand::Bfd(w)) => bfd.set(w),
                        Some(PeerCommand::Ready) => ready = true,
                        Some(
                            PeerCommand::Shutdown { done, .. }
                            | PeerCommand::StopForRestart { done, .. },
                        ) => {
                            let _ = done.send(());
                            return;
                        }
                        None => return,
                    },
                }
            }
        }
    };
    let config = PeerConfig {
        address: peer.address,
        port: peer.port,
        my_asn: peer.my_asn,
        router_id,
        md5: key.is_some(),
        session: session_config(&peer, router_id),
    };
    let mut machine = Peer::new(config, desired, ready);
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut shell = Shell {
        peer,
        key,
        options,
        commands,
        bfd,
        events_tx,
        events,
        conns: BTreeMap::new(),
        dial: None,
        pending: None,
        stopping: None,
        status,
        metrics,
    };
    let now = driver::now();
    let out = machine.step(now, PeerInput::Start);
    let _ = driver::Shell::carry(&mut shell, now, &machine, out).await;
    driver::run(&mut machine, &mut shell).await;
}

impl driver::Shell<Peer> for Shell {
    async fn next_input(&mut self) -> Option<PeerInput> {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(PeerCommand::SetRoutes(r)) => return Some(PeerInput::SetRoutes(r)),
                    Some(PeerCommand::RouteChanges(c)) => return Some(PeerInput::RouteChanges(c)),
                    Some(PeerCommand::Incoming(stream)) => {
                        let (Ok(local), Ok(remote)) = (stream.local_addr(), stream.peer_addr()) else {
                            continue; // already gone
                        };
                        self.pending = Some(stream);
                        return Some(PeerInput::Incoming { local, remote });
                    }
                    Some(PeerCommand::Bfd(w)) => self.bfd.set(w),
                    Some(PeerCommand::Shutdown { communication, done }) => {
                        self.stopping = Some((Some(communication.clone()), Some(done)));
                        return Some(PeerInput::Shutdown { communication });
                    }
                    Some(PeerCommand::StopForRestart { communication, done }) => {
                        self.stopping = Some((Some(communication.clone()), Some(done)));
                        return Some(PeerInput::StopForRestart { communication });
                    }
                    Some(PeerCommand::Ready) => return Some(PeerInput::Ready),
                    // The speaker is gone: stop the same way, without a communication.
                    None => {
                        self.stopping = Some((Some(String::new()), None));
                        return Some(PeerInput::Shutdown { communication: String::new() });
                    }
                },
                Some(ev) = self.events.recv() => return Some(match ev {
                    Event::Bytes(conn, bytes) => PeerInput::Bytes { conn, bytes },
                    Event::Closed(conn) => PeerInput::Closed { conn },
                    Event::Dialed(attempt, Ok(stream)) => {
                        match (stream.local_addr(), stream.peer_addr()) {
                            (Ok(local), Ok(remote)) => {
                                self.pending = Some(stream);
                                PeerInput::Dialed { attempt, local, remote }
                            }
                            (Err(e), _) | (_, Err(e)) => {
                                let error = format!("BGP peer {}: connection lost at once: {e}", self.peer.address);
                                PeerInput::DialFailed { attempt, key: error.clone(), error }
                            }
                        }
                    }
                    Event::Dialed(attempt, Err(e)) => {
                        let error = e.to_string();
                        // Compare without the kernel counters, which change every time.
                        let key = error.split("; TCP-MD5").next().unwrap_or("").to_string();
                        PeerInput::DialFailed { attempt, error, key }
                    }
                }),
                failed = self.bfd.failed() => if failed {
                    return Some(PeerInput::BfdDown);
                },
            }
        }
    }

    async fn carry(&mut self, _: Instant, machine: &Peer, out: Vec<PeerOutput>) -> ControlFlow<()> {
        for o in out {
            match o {
                PeerOutput::Dial { attempt } => self.start_dial(attempt),
                PeerOutput::AbortDial { attempt } => {
                    if let Some((a, task)) = self.dial.take() {
                        if a == attempt {
                            task.abort();
                        } else {
                            self.dial = Some((a, task));
                        }
                    }
                }
                PeerOutput::Attach { conn } => {
                    if let Some(stream) = self.pending.take() {
                        self.attach(conn, stream);
                    }
                }
                PeerOutput::Refuse => self.pending = None,
                PeerOutput::Send { conn, bytes } => {
                    if let Some(w) = self.conns.get(&conn).and_then(|c| c.writer.as_ref()) {
                        let _ = w.send(bytes);
                    }
                }
                PeerOutput::Close { conn } => {
                    if let Some(mut c) = self.conns.remove(&conn) {
                        c.close();
                        // The writer finishes on its own; only a shutdown waits for it.
                        if self.stopping.is_some() {
                            self.conns.insert(conn, c);
                        }
                    }
                }
                PeerOutput::Log(ev) => {
                    if matches!(ev, PeerEvent::LeftForRestart { .. })
                        && let Some((communication, _)) = &mut self.stopping
                    {
                        *communication = None;
                    }
                    self.log(&ev)
                }
                PeerOutput::Stopped => {
                    self.flush().await;
                    self.publish(machine);
                    if let Some((communication, done)) = self.stopping.take() {
                        match communication {
                            Some(communication) => {
                                info!(peer = %self.peer.address, communication, "BGP session shut down")
                            }
                            None => info!(
                                peer = %self.peer.address,
                                "BGP session closed for the restart, without a NOTIFICATION"
                            ),
                        }
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                    }
                    return ControlFlow::Break(());
                }
            }
        }
        self.pending = None;
        self.publish(machine);
        ControlFlow::Continue(())
    }
}

impl Shell {
    fn start_dial(&mut self, attempt: u64) {
        if let Some((_, d)) = self.dial.take() {
            d.abort();
        }
        let peer = self.peer.clone();
        let key = self.key.clone();
        let timeout = self.options.connect_timeout;
        let events = self.events_tx.clone();
        let task = tokio::spawn(async move {
            let r = dial(&peer, key.as_deref(), timeout).await;
            let _ = events.send(Event::Dialed(attempt, r));
        });
        self.dial = Some((attempt, task));
    }

    /// Connection `id` on `stream`: session TTL, reader and writer tasks.
    fn attach(&mut self, id: u64, stream: TcpStream) {
        let ttl = session_ttl(&self.peer);
        let events = self.events_tx.clone();
        let conn = Connection::spawn(id, stream, self.peer.address, ttl, move |ev| {
            events
                .send(match ev {
                    Read::Bytes(b) => Event::Bytes(id, b),
                    Read::Closed => Event::Closed(id),
                })
                .is_ok()
        });
        self.conns.insert(id, conn);
    }

    /// Waits (bounded) for every closing connection's writer to drain its queue.
    async fn flush(&mut self) {
        if let Some((_, d)) = self.dial.take() {
            d.abort();
        }
        let mut writers: Vec<JoinHandle<()>> = Vec::new();
        for c in self.conns.values_mut() {
            c.close();
            writers.extend(c.writer_task.take());
        }
        let flush = async {
            for w in writers {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(self.options.flush_timeout, flush)
            .await
            .is_err()
        {
            warn!(peer = %self.peer.address, "BGP: NOTIFICATION not flushed before the timeout");
        }
        self.conns.clear();
    }

    fn log(&self, ev: &PeerEvent) {
        let peer = self.peer.address;
        match ev {
            PeerEvent::StateChanged {
                from,
                to,
                secondary,
            } => {
                debug!(peer = %peer, ?from, ?to, secondary, "BGP state")
            }
            PeerEvent::Established(n) => info!(
                peer = %peer,
                local = %n.local,
                peer_asn = n.peer_asn,
                peer_id = %n.peer_id,
                hold_time = n.hold_time,
                "BGP session established"
            ),
            PeerEvent::Down { reason } => warn!(peer = %peer, reason = %reason, "BGP session down"),
            PeerEvent::ConnectionFailed { reason } => {
                info!(peer = %peer, reason = %reason, "BGP connection failed before Established")
            }
            PeerEvent::DialFailed { error, repeated } => {
                if *repeated {
                    debug!(peer = %peer, error = %error, "BGP connect failed");
                } else {
                    info!(peer = %peer, error = %error, "BGP connect failed");
                }
            }
            PeerEvent::DialTimedOut { error, repeated } => {
                // The machine's text ends with the TCP-MD5 hint when a key is set; the
                // kernel's counters of dropped segments complete it here.
                let error = match (self.key.is_some(), md5_counters()) {
                    (true, Some((f, n))) => {
                        format!("{error} (kernel: TCPMD5Failure={f}, TCPMD5NotFound={n})")
                    }
                    _ => error.clone(),
                };
                if *repeated {
                    debug!(peer = %peer, error = %error, "BGP connect failed");
                } else {
                    info!(peer = %peer, error = %error, "BGP connect failed");
                }
            }
            PeerEvent::RefusedIncoming { state } => {
                debug!(peer = %peer, state = ?state, "BGP: refusing incoming connection")
            }
            PeerEvent::Collision { keep } => {
                debug!(peer = %peer, ?keep, "BGP connection collision")
            }
            PeerEvent::RouteRefreshRequested(family) => {
                debug!(peer = %peer, ?family, "BGP route refresh requested")
            }
            PeerEvent::Updates { announce, withdraw } => {
                debug!(peer = %peer, announce = ?announce, withdraw = ?withdraw, "BGP UPDATE")
            }
            PeerEvent::BuildFailed { error } => {
                warn!(peer = %peer, error = %error, "BGP: cannot build UPDATEs")
            }
            PeerEvent::BfdDown => {
                warn!(peer = %peer, "BFD down: resetting the BGP session (Cease/BFD Down)")
            }
            PeerEvent::LeftForRestart { prefixes } => info!(
                peer = %peer,
                prefixes,
                "BGP: leaving for a restart; the peer keeps our routes (graceful restart)"
            ),
        }
    }

    fn publish(&self, machine: &Peer) {
        let s = machine.status();
        self.status.send_if_modified(|old| {
            if *old != s {
                self.metrics.report(old, &s);
                *old = s;
                true
            } else {
                false
            }
        });
    }
}

//! Tokio wrapper around the filtered packet socket (`sys::packet`), and the task that joins
//! it to the responder core.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::MacAddr;
use super::responder::{Event, FrameKind, Input, Output, Responder};
use crate::control::metrics::Metrics;
use crate::driver;
use crate::sys::packet::{PacketError, PacketSocket, register_async};

/// Largest frame we care about: ARP and NDP frames are far smaller than one MTU.
const RECV_BUF: usize = 2048;

pub struct AsyncPacketSocket {
    inner: AsyncFd<PacketSocket>,
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(transparent)]
    Packet(#[from] PacketError),
    #[error("registering the packet socket with tokio: {0}")]
    Register(io::Error),
}

impl AsyncPacketSocket {
    /// Opens the filtered socket on `ifindex` (0: all interfaces). Must be called inside a
    /// tokio runtime.
    pub fn open(ifindex: u32, name: &str) -> Result<Self, SocketError> {
        let sock = PacketSocket::open(ifindex, name)?;
        let inner = register_async(sock).map_err(SocketError::Register)?;
        Ok(Self { inner })
    }

    /// Waits for one ARP/NS/NA frame: its length in `buf` and the interface it came in on.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        loop {
            let mut guard = self.inner.readable().await?;
            match guard.try_io(|s| s.get_ref().recv(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.inner.writable().await?;
            match guard.try_io(|s| s.get_ref().send(ifindex, frame)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub fn join_multicast(&self, ifindex: u32, mac: MacAddr) -> Result<(), PacketError> {
        self.inner.get_ref().join_multicast(ifindex, mac)
    }

    pub fn leave_multicast(&self, ifindex: u32, mac: MacAddr) -> Result<(), PacketError> {
        self.inner.get_ref().leave_multicast(ifindex, mac)
    }
}

/// Runs `responder` on `socket` until `inputs` closes: frames, inputs from other tasks
/// (ownership from raft-lite, links from netlink) and timer ticks go in; frames and
/// multicast memberships are carried out here; everything else (eligibility, log events) is
/// passed to `outputs`. Send errors are reported as `Output`-independent log lines via
/// `tracing` and do not stop the task.
///
/// Per-IP layer-2 counters go to `metrics` here, where frames really leave: a request is
/// counted when the core answers it (a request for an IP answered on that interface), the
/// reply and a gratuitous frame once the socket accepted them. An IP's series are dropped
/// when it leaves the owned set, so their number stays bounded by the IPs owned.
/// Says, at the moment a frame is about to leave, whether this host may still answer for an
/// IP (raft-lite's lease is checked then, not when the responder last heard of it: the
/// leader may move an IP as soon as this host's lease has lapsed or its revocation is
/// acknowledged, before the responder's own `OwnershipChanged` arrives).
pub type Gate = std::sync::Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

pub async fn run(
    mut responder: Responder,
    socket: AsyncPacketSocket,
    inputs: mpsc::Receiver<Input>,
    gate: Gate,
    metrics: Metrics,
) -> Responder {
    let mut shell = Shell {
        socket,
        buf: vec![0u8; RECV_BUF],
        inputs,
        gate,
        metrics,
        claimed: BTreeSet::new(),
        released: Vec::new(),
    };
    driver::run(&mut responder, &mut shell).await;
    responder
}

/// The responder task's I/O: the packet socket, the channels to and from the daemon.
struct Shell {
    socket: AsyncPacketSocket,
    buf: Vec<u8>,
    inputs: mpsc::Receiver<Input>,
    gate: Gate,
    metrics: Metrics,
    /// The IPs of the latest `OwnershipChanged`.
    claimed: BTreeSet<IpAddr>,
    /// IPs the pending input releases: their counters are dropped once its step is carried.
    released: Vec<IpAddr>,
}

impl driver::Shell<Responder> for Shell {
    async fn next_input(&mut self) -> Option<Input> {
        loop {
            let input = tokio::select! {
                r = self.socket.recv(&mut self.buf) => match r {
                    Ok((n, ifindex)) => Input::FrameReceived { ifindex, bytes: self.buf[..n].to_vec() },
                    Err(e) => {
                        tracing::warn!(error = %e, "receiving on the ARP/NDP socket");
                        continue;
                    }
                },
                i = self.inputs.recv() => i?,
            };
            match &input {
                Input::OwnershipChanged(claims) => {
                    let now: BTreeSet<IpAddr> = claims.iter().map(|c| c.ip).collect();
                    self.released = self.claimed.difference(&now).copied().collect();
                    self.claimed = now;
                }
                Input::ClaimsChanged { claims, released } => {
                    self.claimed.extend(claims.iter().map(|c| c.ip));
                    for ip in released {
                        if self.claimed.remove(ip) {
                            self.released.push(*ip);
                        }
                    }
                }
                _ => {}
            }
            return Some(input);
        }
    }

    async fn carry(&mut self, _: Instant, _: &Responder, out: Vec<Output>) -> ControlFlow<()> {
        for o in out {
            match o {
                Output::SendFrame {
                    ifindex,
                    ip,
                    kind,
                    bytes,
                } => {
                    if kind == FrameKind::Reply {
                        self.metrics.layer2_request_received(ip);
                    }
                    if !(self.gate)(ip) {
                        tracing::debug!(%ip, "lease lapsed: frame not sent");
                        continue;
                    }
                    match self.socket.send(ifindex, &bytes).await {
                        Ok(_) => match kind {
                            FrameKind::Reply => self.metrics.layer2_response_sent(ip),
                            FrameKind::Gratuitous => self.metrics.layer2_gratuitous_sent(ip),
                        },
                        Err(e) => tracing::warn!(ifindex, error = %e, "sending ARP/NDP frame"),
                    }
                }
                Output::JoinMulticast { ifindex, mac, .. } => {
                    if let Err(e) = self.socket.join_multicast(ifindex, mac) {
                        tracing::warn!(error = %e, "joining solicited-node group");
                    }
                }
                Output::LeaveMulticast { ifindex, mac, .. } => {
                    if let Err(e) = self.socket.leave_multicast(ifindex, mac) {
                        tracing::warn!(error = %e, "leaving solicited-node group");
                    }
                }
                Output::Log(ev) => log_event(&ev),
            }
        }
        for ip in std::mem::take(&mut self.released) {
            self.metrics.forget_layer2_ip(ip);
        }
        ControlFlow::Continue(())
    }
}

/// One line per ownership change (info) or problem (warn), with the IP, interface and
/// services as structured fields (journald: `F_IP`, `F_INTERFACE`, `F_SERVICE`); the host is
/// the `node` field of the task's span.
fn log_event(ev: &Event) {
    let services = |s: &[crate::model::ServiceKey]| {
        s.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match ev {
        Event::Announcing {
            ip,
            interface,
            services: s,
        } => tracing::info!(ip = %ip, interface = %interface, service = %services(s), "{ev}"),
        Event::Withdrawn { ip, interface } => {
            tracing::info!(ip = %ip, interface = %interface, "{ev}")
        }
        Event::Ineligible { ip, services: s } => {
            tracing::warn!(ip = %ip, service = %services(s), "{ev}")
        }
        Event::Conflict {
            ip,
            interface,
            other_mac,
        } => tracing::warn!(ip = %ip, interface = %interface, mac = %other_mac, "{ev}"),
    }
}

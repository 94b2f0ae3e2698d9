//! Tokio wrapper around the filtered packet socket (`sys::packet`), and the task that joins
//! it to the responder core.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::MacAddr;
use super::responder::{Event, FrameKind, Input, Output, Responder};
use crate::control::metrics::Metrics;
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
    mut inputs: mpsc::Receiver<Input>,
    outputs: mpsc::Sender<Output>,
    gate: Gate,
    metrics: Metrics,
) -> Responder {
    let mut buf = vec![0u8; RECV_BUF];
    let mut claimed: BTreeSet<IpAddr> = BTreeSet::new();
    loop {
        let deadline = responder.next_deadline();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let input = tokio::select! {
            r = socket.recv(&mut buf) => match r {
                Ok((n, ifindex)) => Input::FrameReceived { ifindex, bytes: buf[..n].to_vec() },
                Err(e) => {
                    tracing::warn!(error = %e, "receiving on the ARP/NDP socket");
                    continue;
                }
            },
            i = inputs.recv() => match i {
                Some(i) => i,
                None => return responder,
            },
            _ = sleep => Input::Tick,
        };
        let released = match &input {
            Input::OwnershipChanged(claims) => {
                let now: BTreeSet<IpAddr> = claims.iter().map(|c| c.ip).collect();
                let gone: Vec<IpAddr> = claimed.difference(&now).copied().collect();
                claimed = now;
                gone
            }
            _ => Vec::new(),
        };
        for out in responder.step(Instant::now(), input) {
            match out {
                Output::SendFrame {
                    ifindex,
                    ip,
                    kind,
                    bytes,
                } => {
                    if kind == FrameKind::Reply {
                        metrics.layer2_request_received(ip);
                    }
                    if !gate(ip) {
                        tracing::debug!(%ip, "lease lapsed: frame not sent");
                        continue;
                    }
                    match socket.send(ifindex, &bytes).await {
                        Ok(_) => match kind {
                            FrameKind::Reply => metrics.layer2_response_sent(ip),
                            FrameKind::Gratuitous => metrics.layer2_gratuitous_sent(ip),
                        },
                        Err(e) => tracing::warn!(ifindex, error = %e, "sending ARP/NDP frame"),
                    }
                }
                Output::JoinMulticast { ifindex, mac, .. } => {
                    if let Err(e) = socket.join_multicast(ifindex, mac) {
                        tracing::warn!(error = %e, "joining solicited-node group");
                    }
                }
                Output::LeaveMulticast { ifindex, mac, .. } => {
                    if let Err(e) = socket.leave_multicast(ifindex, mac) {
                        tracing::warn!(error = %e, "leaving solicited-node group");
                    }
                }
                other => {
                    if let Output::Log(ev) = &other {
                        log_event(ev);
                    }
                    if outputs.send(other).await.is_err() {
                        return responder;
                    }
                }
            }
        }
        for ip in released {
            metrics.forget_layer2_ip(ip);
        }
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

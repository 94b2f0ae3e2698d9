//! The rtnetlink connection: subscribe to link and address groups, dump the current state,
//! then turn kernel notifications into `NetEvent`s. Also adds/removes addresses on `lo`.
//!
//! Subscribing before dumping means no change between the dump and the subscription is
//! lost (a change may be seen twice; `InterfaceTable::apply` makes repeats harmless).

use std::io;
use std::net::IpAddr;

use futures::StreamExt;
use futures::TryStreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::SocketAddr;
use rtnetlink::{Handle, MulticastGroup};

use super::{InterfaceTable, NetEvent, address_event, link_event};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("opening the rtnetlink socket: {0}")]
    Connect(io::Error),
    #[error("listing {what} over rtnetlink: {source}")]
    Dump {
        what: &'static str,
        source: rtnetlink::Error,
    },
    #[error("interface lo not found")]
    NoLoopback,
    #[error("{action} {ip} on lo: {source}")]
    Address {
        action: &'static str,
        ip: IpAddr,
        source: rtnetlink::Error,
    },
}

pub struct NetWatcher {
    handle: Handle,
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    connection: tokio::task::JoinHandle<()>,
    /// A second connection for changes we make: the kernel does not report a socket's own
    /// changes back to it (`nlmsg_notify` excludes the requester), and we want to see them.
    requests: Handle,
    requests_connection: tokio::task::JoinHandle<()>,
}

impl Drop for NetWatcher {
    fn drop(&mut self) {
        self.connection.abort();
        self.requests_connection.abort();
    }
}

impl NetWatcher {
    /// Subscribes to link and IPv4/IPv6 address notifications, then lists the current links
    /// and addresses. Must run inside a tokio runtime (it spawns the connection task).
    pub async fn start() -> Result<(NetWatcher, InterfaceTable), NetError> {
        let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(NetError::Connect)?;
        let connection = tokio::spawn(conn);
        let (req_conn, requests, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
        let requests_connection = tokio::spawn(req_conn);
        let watcher = NetWatcher {
            handle,
            messages,
            connection,
            requests,
            requests_connection,
        };
        let mut table = InterfaceTable::default();
        let mut links = watcher.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(|source| NetError::Dump {
            what: "links",
            source,
        })? {
            table.apply(&link_event(&msg, false));
        }
        let mut addrs = watcher.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.map_err(|source| NetError::Dump {
            what: "addresses",
            source,
        })? {
            if let Some(ev) = address_event(&msg, false) {
                table.apply(&ev);
            }
        }
        Ok((watcher, table))
    }

    /// The next link or address event; `None` when the connection is gone.
    pub async fn next_event(&mut self) -> Option<NetEvent> {
        while let Some((msg, _)) = self.messages.next().await {
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    Some(link_event(&l, false))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                    Some(link_event(&l, true))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => {
                    address_event(&a, false)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => {
                    address_event(&a, true)
                }
                _ => None,
            };
            if event.is_some() {
                return event;
            }
        }
        None
    }

    /// A handle for requests; changes made through it are reported as events.
    pub fn request_handle(&self) -> &Handle {
        &self.requests
    }

    /// Adds `ip` (/32 or /128) to `lo`, for static services with `assign = true`. Already
    /// present is success.
    pub async fn add_address_to_lo(&self, ip: IpAddr) -> Result<(), NetError> {
        add_address_to_lo(&self.requests, ip).await
    }

    /// Removes `ip` from `lo`. Not present is success.
    pub async fn remove_address_from_lo(&self, ip: IpAddr) -> Result<(), NetError> {
        remove_address_from_lo(&self.requests, ip).await
    }
}

async fn lo_index(handle: &Handle) -> Result<u32, NetError> {
    let mut links = handle.link().get().match_name("lo".to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(l.header.index),
        Ok(None) => Err(NetError::NoLoopback),
        Err(source) => Err(NetError::Dump { what: "lo", source }),
    }
}

fn host_prefix(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

pub async fn add_address_to_lo(handle: &Handle, ip: IpAddr) -> Result<(), NetError> {
    let index = lo_index(handle).await?;
    match handle
        .address()
        .add(index, ip, host_prefix(&ip))
        .execute()
        .await
    {
        Err(e) if !is_errno(&e, libc::EEXIST) => Err(NetError::Address {
            action: "adding",
            ip,
            source: e,
        }),
        _ => Ok(()),
    }
}

pub async fn remove_address_from_lo(handle: &Handle, ip: IpAddr) -> Result<(), NetError> {
    let index = lo_index(handle).await?;
    let found: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(ip)
        .execute()
        .try_collect()
        .await
        .map_err(|source| NetError::Address {
            action: "looking up",
            ip,
            source,
        })?;
    for msg in found {
        match handle.address().del(msg).execute().await {
            Err(e) if !is_errno(&e, libc::EADDRNOTAVAIL) => {
                return Err(NetError::Address {
                    action: "removing",
                    ip,
                    source: e,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

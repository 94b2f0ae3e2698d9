//! The `org.lb.Daemon1` D-Bus service: read-only views of the [`Snapshot`] plus `Reload()`.
//!
//! Object `/org/lb/Daemon1`, interface `org.lb.Daemon1`:
//!
//! | member | kind | signature | |
//! |---|---|---|---|
//! | `Status` | property | `s` | the sd_notify STATUS= line |
//! | `Ready` | property | `b` | |
//! | `Leader` | property | `s` | raft-lite leader, `""` when none is known |
//! | `Term` | property | `t` | raft-lite term |
//! | `Node` | property | `s` | this node's name |
//! | `GetStatus` | method | `→ s` | JSON of the whole [`Snapshot`] |
//! | `GetServices`, `GetPools`, `GetPeers`, `GetCluster` | method | `→ s` | JSON of that part |
//! | `Reload` | method | `→ (b ok, s message)` | re-read lb.toml (the daemon decides) |
//! | `RemoveMember` | method | `s name → (s outcome, s message)` | `lbctl cluster remove`: outcome `removed`, `refused` or `not_leader` |
//! | `OwnershipChanged` | signal | `(s ip, s owner)` | owner `""`: nobody owns the IP |
//!
//! The getters return JSON rather than D-Bus structs: the snapshot is nested and grows with
//! the project, JSON keeps `lbctl --json` a pass-through of exactly what the daemon said, and
//! `busctl call … GetStatus | jq` works for people without lbctl. The scalar state a desktop
//! or monitoring tool would watch is also exposed as typed properties with
//! `PropertiesChanged` signals.
//!
//! Access control is the bus policy (`packaging/dbus/org.lb.Daemon1.conf`): everybody may
//! read, only root, group `adm` and user `lb` (the unit's `ExecReload`) may call `Reload` and
//! `RemoveMember`.

use std::net::IpAddr;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use zbus::object_server::{InterfaceRef, SignalEmitter};
use zbus::{Connection, connection, fdo, interface};

use super::ControlError;
use super::state::Snapshot;

pub const BUS_NAME: &str = "org.lb.Daemon1";
pub const OBJECT_PATH: &str = "/org/lb/Daemon1";
pub const INTERFACE: &str = "org.lb.Daemon1";

/// A `Reload()` call handed to the daemon. The daemon validates the file, applies the
/// difference and answers on `reply`; the D-Bus caller waits for that answer.
#[derive(Debug)]
pub struct ReloadRequest {
    pub reply: oneshot::Sender<ReloadReply>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReply {
    pub ok: bool,
    pub message: String,
}

/// A `RemoveMember(name)` call (`lbctl cluster remove NAME`) handed to the daemon, which asks
/// raft-lite and answers on `reply`.
#[derive(Debug)]
pub struct RemoveRequest {
    pub name: String,
    pub reply: oneshot::Sender<RemoveReply>,
}

/// How a `RemoveMember` call ended (the D-Bus `outcome` string).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveOutcome {
    /// The leader forgot the member; its IPs move.
    Removed,
    /// Not done (a voter, an unknown name, a member still alive, raft-lite stopped).
    Refused,
    /// This host does not lead raft-lite: run it on the leader (the message names it).
    NotLeader,
}

impl RemoveOutcome {
    pub fn label(self) -> &'static str {
        match self {
            RemoveOutcome::Removed => "removed",
            RemoveOutcome::Refused => "refused",
            RemoveOutcome::NotLeader => "not_leader",
        }
    }

    pub fn from_label(s: &str) -> Option<Self> {
        [
            RemoveOutcome::Removed,
            RemoveOutcome::Refused,
            RemoveOutcome::NotLeader,
        ]
        .into_iter()
        .find(|o| o.label() == s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoveReply {
    pub outcome: RemoveOutcome,
    pub message: String,
}

/// The served object. Public only so the generated `Daemon1Signals` trait is nameable.
pub struct Daemon1 {
    snapshot: watch::Receiver<Snapshot>,
    reload: mpsc::Sender<ReloadRequest>,
    /// `None`: this lbd takes no member removals (served by [`serve`]).
    remove: Option<mpsc::Sender<RemoveRequest>>,
}

impl Daemon1 {
    fn json<T: serde::Serialize>(value: &T) -> fdo::Result<String> {
        serde_json::to_string(value)
            .map_err(|e| fdo::Error::Failed(format!("cannot encode the daemon state as JSON: {e}")))
    }
}

#[interface(name = "org.lb.Daemon1")]
impl Daemon1 {
    #[zbus(property)]
    fn status(&self) -> String {
        self.snapshot.borrow().status_line.clone()
    }

    #[zbus(property)]
    fn ready(&self) -> bool {
        self.snapshot.borrow().ready
    }

    #[zbus(property)]
    fn leader(&self) -> String {
        self.snapshot
            .borrow()
            .cluster
            .leader
            .clone()
            .unwrap_or_default()
    }

    #[zbus(property)]
    fn term(&self) -> u64 {
        self.snapshot.borrow().cluster.term
    }

    #[zbus(property(emits_changed_signal = "const"))]
    fn node(&self) -> String {
        self.snapshot.borrow().node.clone()
    }

    fn get_status(&self) -> fdo::Result<String> {
        Self::json(&*self.snapshot.borrow())
    }

    fn get_services(&self) -> fdo::Result<String> {
        Self::json(&self.snapshot.borrow().services)
    }

    fn get_pools(&self) -> fdo::Result<String> {
        Self::json(&self.snapshot.borrow().pools)
    }

    fn get_peers(&self) -> fdo::Result<String> {
        Self::json(&self.snapshot.borrow().peers)
    }

    fn get_cluster(&self) -> fdo::Result<String> {
        Self::json(&self.snapshot.borrow().cluster)
    }

    /// Answers `(false, why)` rather than a D-Bus error when the daemon refuses the new
    /// configuration: a refused config is an expected outcome, not a failed call.
    #[zbus(out_args("ok", "message"))]
    async fn reload(&self) -> (bool, String) {
        let (tx, rx) = oneshot::channel();
        if self.reload.send(ReloadRequest { reply: tx }).await.is_err() {
            return (false, "lbd is shutting down; reload not performed".into());
        }
        match rx.await {
            Ok(r) => (r.ok, r.message),
            Err(_) => (
                false,
                "lbd dropped the reload request without answering".into(),
            ),
        }
    }

    /// `lbctl cluster remove NAME`: `(outcome, message)`, outcome `removed`, `refused` or
    /// `not_leader` (a refusal is an answer, not a failed call).
    #[zbus(out_args("outcome", "message"))]
    async fn remove_member(&self, name: String) -> (String, String) {
        let refused = |m: &str| (RemoveOutcome::Refused.label().to_owned(), m.to_owned());
        let Some(remove) = &self.remove else {
            return refused("this lbd does not take member removals");
        };
        let (tx, rx) = oneshot::channel();
        if remove
            .send(RemoveRequest { name, reply: tx })
            .await
            .is_err()
        {
            return refused("lbd is shutting down; nothing removed");
        }
        match rx.await {
            Ok(r) => (r.outcome.label().to_owned(), r.message),
            Err(_) => refused("lbd dropped the request without answering"),
        }
    }

    #[zbus(signal)]
    async fn ownership_changed(
        emitter: &SignalEmitter<'_>,
        ip: &str,
        owner: &str,
    ) -> zbus::Result<()>;
}

/// Keeps the service on the bus; dropping it stops the property-change task (the connection
/// closes when its last clone is gone).
pub struct ControlHandle {
    conn: Connection,
    iface: InterfaceRef<Daemon1>,
    watcher: JoinHandle<()>,
}

impl ControlHandle {
    /// Emit `OwnershipChanged(ip, owner)`; `owner = None` when no node owns `ip` any more.
    pub async fn ownership_changed(
        &self,
        ip: IpAddr,
        owner: Option<&str>,
    ) -> Result<(), ControlError> {
        Daemon1::ownership_changed(
            self.iface.signal_emitter(),
            &ip.to_string(),
            owner.unwrap_or(""),
        )
        .await
        .map_err(|e| ControlError::Signal {
            signal: "OwnershipChanged",
            source: e,
        })
    }

    /// The bus connection (e.g. to read its unique name in tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Give up the bus name, then drop the connection. Not `graceful_shutdown`: that waits
    /// for every clone of the connection (the object server holds some) to go away, and so
    /// never returned — lbd hung after SIGTERM until systemd killed it. Bounded, since a
    /// stuck bus must not hold up the exit.
    pub async fn shutdown(self) {
        self.watcher.abort();
        match tokio::time::timeout(RELEASE_BOUND, self.conn.release_name(BUS_NAME)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the D-Bus name failed"),
            Err(_) => tracing::warn!("releasing the D-Bus name timed out"),
        }
    }
}

/// How long shutdown waits for the bus to confirm the name release.
const RELEASE_BOUND: std::time::Duration = std::time::Duration::from_millis(500);

impl Drop for ControlHandle {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Put `org.lb.Daemon1` on the bus: the system bus, unless `bus_address` names another
/// (zbus also honours `DBUS_SYSTEM_BUS_ADDRESS`). Fails if the name is already owned (a
/// second lbd) or the policy forbids owning it. Must be called inside a tokio runtime.
pub async fn serve(
    bus_address: Option<String>,
    snapshot: watch::Receiver<Snapshot>,
    reload: mpsc::Sender<ReloadRequest>,
) -> Result<ControlHandle, ControlError> {
    serve_with_remove(bus_address, snapshot, reload, None).await
}

/// [`serve`], with `RemoveMember` calls handed to the daemon on `remove`.
pub async fn serve_with_remove(
    bus_address: Option<String>,
    snapshot: watch::Receiver<Snapshot>,
    reload: mpsc::Sender<ReloadRequest>,
    remove: Option<mpsc::Sender<RemoveRequest>>,
) -> Result<ControlHandle, ControlError> {
    let bus = match &bus_address {
        Some(a) => format!("bus at {a}"),
        None => "system bus".to_string(),
    };
    let builder = match &bus_address {
        Some(addr) => connection::Builder::address(addr.as_str()),
        None => connection::Builder::system(),
    };
    let daemon = Daemon1 {
        snapshot: snapshot.clone(),
        reload,
        remove,
    };
    let conn = builder
        .serve_at(OBJECT_PATH, daemon)
        .name(BUS_NAME)
        // zbus defaults to replacing an existing owner and letting itself be replaced: a
        // second lbd (or anything else allowed to own the name) must fail instead.
        .allow_name_replacements(false)
        .replace_existing_names(false)
        .build()
        .await
        .map_err(|e| match e {
            zbus::Error::NameTaken => ControlError::NameTaken { bus: bus.clone() },
            e => ControlError::Bus {
                bus: bus.clone(),
                source: e,
            },
        })?;
    let iface = conn
        .object_server()
        .interface::<_, Daemon1>(OBJECT_PATH)
        .await
        .map_err(|e| ControlError::Bus { bus, source: e })?;
    let watcher = tokio::spawn(emit_property_changes(snapshot, iface.clone()));
    Ok(ControlHandle {
        conn,
        iface,
        watcher,
    })
}

/// The scalar properties, compared to know which `PropertiesChanged` to send.
#[derive(PartialEq)]
struct Props {
    status: String,
    ready: bool,
    leader: Option<String>,
    term: u64,
}

impl Props {
    fn of(s: &Snapshot) -> Self {
        Self {
            status: s.status_line.clone(),
            ready: s.ready,
            leader: s.cluster.leader.clone(),
            term: s.cluster.term,
        }
    }
}

async fn emit_property_changes(mut rx: watch::Receiver<Snapshot>, iface: InterfaceRef<Daemon1>) {
    let mut last = Props::of(&rx.borrow_and_update());
    while rx.changed().await.is_ok() {
        let now = Props::of(&rx.borrow_and_update());
        if now == last {
            continue;
        }
        let emitter = iface.signal_emitter();
        let d = iface.get().await;
        // A failed emission (bus gone) is not worth more than a log line: readers poll anyway.
        let results = [
            if now.status != last.status {
                Some(d.status_changed(emitter).await)
            } else {
                None
            },
            if now.ready != last.ready {
                Some(d.ready_changed(emitter).await)
            } else {
                None
            },
            if now.leader != last.leader {
                Some(d.leader_changed(emitter).await)
            } else {
                None
            },
            if now.term != last.term {
                Some(d.term_changed(emitter).await)
            } else {
                None
            },
        ];
        for r in results.into_iter().flatten() {
            if let Err(e) = r {
                tracing::debug!(error = %e, "PropertiesChanged not sent");
            }
        }
        last = now;
    }
}

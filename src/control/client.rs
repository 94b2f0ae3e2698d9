//! `lbctl`'s side of `org.lb.Daemon1`: calls the daemon and prints tables or its JSON.

use std::process::ExitCode;

use zbus::proxy::CacheProperties;
use zbus::{Connection, connection, fdo, proxy};

use super::dbus::{ReloadReply, RemoveOutcome};
use super::render;
use super::state::{ClusterStatus, PeerStatus, PoolStatus, ServiceStatus, Snapshot};

/// Exit status when lbd is not on the bus (LSB "program is not running").
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit status of `lbctl cluster remove` on a host that does not lead raft-lite.
pub const EXIT_NOT_LEADER: u8 = 4;

#[proxy(
    interface = "org.lb.Daemon1",
    default_service = "org.lb.Daemon1",
    default_path = "/org/lb/Daemon1"
)]
trait Daemon1 {
    fn get_status(&self) -> zbus::Result<String>;
    fn get_services(&self) -> zbus::Result<String>;
    fn get_pools(&self) -> zbus::Result<String>;
    fn get_peers(&self) -> zbus::Result<String>;
    fn get_cluster(&self) -> zbus::Result<String>;
    fn reload(&self) -> zbus::Result<(bool, String)>;
    fn remove_member(&self, name: &str) -> zbus::Result<(String, String)>;
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the {bus}: {source}")]
    Connect {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    #[error("lbd is not running (no org.lb.Daemon1 on the system bus)")]
    NotRunning,
    #[error(
        "permission denied calling {method} (lbd's D-Bus policy lets only root and group adm reload or remove members): {detail}"
    )]
    AccessDenied {
        method: &'static str,
        detail: String,
    },
    #[error("{method} failed: {source}")]
    Call {
        method: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("{method} answered an outcome lbctl does not know: {outcome:?}")]
    BadOutcome {
        method: &'static str,
        outcome: String,
    },
    #[error("{method} returned JSON lbctl does not understand: {source}")]
    BadReply {
        method: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::NotRunning => EXIT_NOT_RUNNING,
            _ => 1,
        }
    }

    fn from_call(method: &'static str, e: zbus::Error) -> Self {
        match &e {
            zbus::Error::FDO(f) => match &**f {
                fdo::Error::ServiceUnknown(_) | fdo::Error::NameHasNoOwner(_) => {
                    ClientError::NotRunning
                }
                fdo::Error::AccessDenied(detail) => ClientError::AccessDenied {
                    method,
                    detail: detail.clone(),
                },
                _ => ClientError::Call { method, source: e },
            },
            _ => ClientError::Call { method, source: e },
        }
    }
}

pub struct Client {
    proxy: Daemon1Proxy<'static>,
}

impl Client {
    /// Connect to the system bus, or to `bus_address` (a D-Bus address such as
    /// `unix:path=/run/dbus/system_bus_socket`). Does not check that lbd is there yet.
    pub async fn connect(bus_address: Option<&str>) -> Result<Self, ClientError> {
        let bus = match bus_address {
            Some(a) => format!("bus at {a}"),
            None => "system bus".to_string(),
        };
        let conn: Connection = match bus_address {
            Some(a) => connection::Builder::address(a).build().await,
            None => Connection::system().await,
        }
        .map_err(|source| ClientError::Connect {
            bus: bus.clone(),
            source,
        })?;
        let proxy = Daemon1Proxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|source| ClientError::Connect { bus, source })?;
        Ok(Self { proxy })
    }

    pub async fn status_json(&self) -> Result<String, ClientError> {
        self.proxy
            .get_status()
            .await
            .map_err(|e| ClientError::from_call("GetStatus", e))
    }

    pub async fn services_json(&self) -> Result<String, ClientError> {
        self.proxy
            .get_services()
            .await
            .map_err(|e| ClientError::from_call("GetServices", e))
    }

    pub async fn pools_json(&self) -> Result<String, ClientError> {
        self.proxy
            .get_pools()
            .await
            .map_err(|e| ClientError::from_call("GetPools", e))
    }

    pub async fn peers_json(&self) -> Result<String, ClientError> {
        self.proxy
            .get_peers()
            .await
            .map_err(|e| ClientError::from_call("GetPeers", e))
    }

    pub async fn cluster_json(&self) -> Result<String, ClientError> {
        self.proxy
            .get_cluster()
            .await
            .map_err(|e| ClientError::from_call("GetCluster", e))
    }

    pub async fn reload(&self) -> Result<ReloadReply, ClientError> {
        let (ok, message) = self
            .proxy
            .reload()
            .await
            .map_err(|e| ClientError::from_call("Reload", e))?;
        Ok(ReloadReply { ok, message })
    }
}

impl Client {
    /// `RemoveMember(name)`: the outcome and the daemon's message.
    pub async fn remove_member(&self, name: &str) -> Result<(RemoveOutcome, String), ClientError> {
        let (outcome, message) = self
            .proxy
            .remove_member(name)
            .await
            .map_err(|e| ClientError::from_call("RemoveMember", e))?;
        let o = RemoveOutcome::from_label(&outcome).ok_or(ClientError::BadOutcome {
            method: "RemoveMember",
            outcome,
        })?;
        Ok((o, message))
    }
}

/// `lbctl cluster remove NAME`: prints what happened; exit status 0 removed, 1 refused or
/// failed, 3 lbd not running, [`EXIT_NOT_LEADER`] when this host does not lead.
pub fn remove_member(name: &str, bus_address: Option<&str>) -> ExitCode {
    let outcome = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(remove_member_async(name, bus_address)),
        Err(e) => Outcome {
            stdout: String::new(),
            stderr: format!("lbctl: cannot start the async runtime: {e}\n"),
            code: 1,
        },
    };
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    ExitCode::from(outcome.code)
}

/// What [`remove_member`] prints and its exit status.
pub async fn remove_member_async(name: &str, bus_address: Option<&str>) -> Outcome {
    let r = async {
        let client = Client::connect(bus_address).await?;
        client.remove_member(name).await
    }
    .await;
    match r {
        Ok((RemoveOutcome::Removed, message)) => Outcome {
            stdout: format!("removed {name}: {message}\n"),
            stderr: String::new(),
            code: 0,
        },
        Ok((o, message)) => Outcome {
            stdout: String::new(),
            stderr: format!("lbctl: {name} not removed: {message}\n"),
            code: if o == RemoveOutcome::NotLeader {
                EXIT_NOT_LEADER
            } else {
                1
            },
        },
        Err(e) => Outcome {
            stdout: String::new(),
            stderr: format!("lbctl: {e}\n"),
            code: e.exit_code(),
        },
    }
}

/// The status subcommands of lbctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    Status,
    Services,
    Pools,
    Peers,
    Cluster,
    Reload,
}

/// What a subcommand printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

/// Run one subcommand and print its output (errors to stderr as `lbctl: …`).
/// Exit status: 0 done, 1 error or refused reload, 3 lbd not running.
pub fn run(query: Query, json: bool, bus_address: Option<&str>) -> ExitCode {
    let outcome = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run_async(query, json, bus_address)),
        Err(e) => Outcome {
            stdout: String::new(),
            stderr: format!("lbctl: cannot start the async runtime: {e}\n"),
            code: 1,
        },
    };
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    ExitCode::from(outcome.code)
}

/// What `run` prints and its exit status, without touching stdout.
pub async fn run_async(query: Query, json: bool, bus_address: Option<&str>) -> Outcome {
    match query_daemon(query, json, bus_address).await {
        Ok(o) => o,
        Err(e) => Outcome {
            stdout: String::new(),
            stderr: format!("lbctl: {e}\n"),
            code: e.exit_code(),
        },
    }
}

async fn query_daemon(
    query: Query,
    json: bool,
    bus_address: Option<&str>,
) -> Result<Outcome, ClientError> {
    let client = Client::connect(bus_address).await?;
    let stdout = match query {
        Query::Status => {
            let raw = client.status_json().await?;
            if json {
                raw + "\n"
            } else {
                render::status(&parse::<Snapshot>("GetStatus", &raw)?)
            }
        }
        Query::Services => {
            let raw = client.services_json().await?;
            if json {
                raw + "\n"
            } else {
                render::services(&parse::<Vec<ServiceStatus>>("GetServices", &raw)?)
            }
        }
        Query::Pools => {
            let raw = client.pools_json().await?;
            if json {
                raw + "\n"
            } else {
                render::pools(&parse::<Vec<PoolStatus>>("GetPools", &raw)?)
            }
        }
        Query::Peers => {
            let raw = client.peers_json().await?;
            if json {
                raw + "\n"
            } else {
                render::peers(&parse::<Vec<PeerStatus>>("GetPeers", &raw)?)
            }
        }
        Query::Cluster => {
            let raw = client.cluster_json().await?;
            if json {
                raw + "\n"
            } else {
                render::cluster(&parse::<ClusterStatus>("GetCluster", &raw)?)
            }
        }
        Query::Reload => {
            let reply = client.reload().await?;
            let code = if reply.ok { 0 } else { 1 };
            return Ok(if json {
                let text =
                    serde_json::to_string(&reply).map_err(|source| ClientError::BadReply {
                        method: "Reload",
                        source,
                    })?;
                Outcome {
                    stdout: text + "\n",
                    stderr: String::new(),
                    code,
                }
            } else if reply.ok {
                Outcome {
                    stdout: format!("reloaded: {}\n", reply.message),
                    stderr: String::new(),
                    code,
                }
            } else {
                Outcome {
                    stdout: String::new(),
                    stderr: format!(
                        "lbctl: reload refused, lbd keeps the previous configuration: {}\n",
                        reply.message
                    ),
                    code,
                }
            });
        }
    };
    Ok(Outcome {
        stdout,
        stderr: String::new(),
        code: 0,
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    method: &'static str,
    raw: &str,
) -> Result<T, ClientError> {
    serde_json::from_str(raw).map_err(|source| ClientError::BadReply { method, source })
}

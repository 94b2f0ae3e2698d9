//! What systemd is doing with lbd's unit: is this SIGTERM a stop or the stop half of a
//! restart? A restart (`systemctl restart`, the package's restart after an upgrade) keeps
//! the BGP routes at graceful-restart peers; a stop (`systemctl stop`, `apt remove`, a
//! shutdown of the host) withdraws them first, so traffic leaves before the host does.
//!
//! systemd runs a restart as one job of type `restart` on the unit (its stop phase sends the
//! SIGTERM), a stop as a job of type `stop`. lbd asks for the job of the unit it runs in
//! (`GetUnitByPID`, the unit's `Job`, the job's `JobType`) over the system bus; the read-only
//! calls need no privilege. Anything that fails (not under systemd, no bus) answers "stop":
//! withdrawing is the safe default.

use std::time::Duration;

use tracing::debug;
use zbus::OwnedObjectPath;

const SYSTEMD: &str = "org.freedesktop.systemd1";

/// Job types that start the unit again after this stop.
const RESTARTING: &[&str] = &["restart", "try-restart", "reload-or-restart"];

/// Whether systemd is restarting lbd's unit right now (bounded by `within`).
pub async fn restart_pending(within: Duration) -> bool {
    // Only under systemd; a shell or a test harness is never "restarting".
    if std::env::var_os("INVOCATION_ID").is_none() {
        return false;
    }
    match tokio::time::timeout(within, job_type()).await {
        Ok(Ok(t)) => {
            debug!(job = %t, "systemd job on lbd's unit");
            RESTARTING.contains(&t.as_str())
        }
        Ok(Err(e)) => {
            debug!(error = %e, "cannot ask systemd about lbd's unit: treating the stop as final");
            false
        }
        Err(_) => false,
    }
}

async fn job_type() -> zbus::Result<String> {
    let bus = zbus::Connection::system().await?;
    let manager = zbus::Proxy::new(
        &bus,
        SYSTEMD,
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
    )
    .await?;
    let unit: OwnedObjectPath = manager.call("GetUnitByPID", &(std::process::id(),)).await?;
    let unit = zbus::Proxy::new(&bus, SYSTEMD, unit, "org.freedesktop.systemd1.Unit").await?;
    let (id, job): (u32, OwnedObjectPath) = unit.get_property("Job").await?;
    if id == 0 {
        return Ok(String::new());
    }
    let job = zbus::Proxy::new(&bus, SYSTEMD, job, "org.freedesktop.systemd1.Job").await?;
    job.get_property("JobType").await
}

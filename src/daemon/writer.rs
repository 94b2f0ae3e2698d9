//! The status writer task: carries the controller's `WriteStatus` and `Event` outputs to the
//! API server. Writes for one Service coalesce (the newest wins); a failed write is retried
//! with exponential backoff while the others proceed, so an API outage delays writes but
//! loses none and never reorders two writes of one Service.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::controller::Output;
use crate::kube::status::StatusWriter;
use crate::model::ServiceKey;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Output>,
}

impl WriterHandle {
    pub fn submit(&self, o: Output) {
        // The task only ends when the handle is dropped.
        let _ = self.tx.send(o);
    }
}

pub fn spawn(writer: StatusWriter) -> WriterHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(writer, rx));
    WriterHandle { tx }
}

struct Pending {
    ips: Vec<std::net::IpAddr>,
    pool: Option<String>,
    not_before: Instant,
    backoff: Duration,
}

async fn run(writer: StatusWriter, mut rx: mpsc::UnboundedReceiver<Output>) {
    let mut pending: BTreeMap<ServiceKey, Pending> = BTreeMap::new();
    loop {
        let next_due = pending.values().map(|p| p.not_before).min();
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            m = rx.recv() => match m {
                Some(o) => accept(&writer, &mut pending, o).await,
                None => return,
            },
            _ = tokio::time::sleep_until(next_due.unwrap_or(far)), if next_due.is_some() => {}
        }
        // Coalesce whatever else is queued before writing.
        while let Ok(o) = rx.try_recv() {
            accept(&writer, &mut pending, o).await;
        }
        write_due(&writer, &mut pending).await;
    }
}

async fn accept(writer: &StatusWriter, pending: &mut BTreeMap<ServiceKey, Pending>, o: Output) {
    match o {
        Output::WriteStatus { service, ips, pool } => {
            pending.insert(
                service,
                Pending {
                    ips,
                    pool,
                    not_before: Instant::now(),
                    backoff: BACKOFF_MIN,
                },
            );
        }
        Output::Event {
            service,
            warning,
            reason,
            message,
        } => {
            // Events are best effort: one try, a log line when it fails.
            if let Err(e) = writer.event(&service, warning, reason, &message).await {
                warn!(service = %service, error = %e, "event not posted");
            }
        }
        Output::StaticUnallocated { service, reason } => {
            error!(service = %service, %reason, "static service has no address");
        }
    }
}

async fn write_due(writer: &StatusWriter, pending: &mut BTreeMap<ServiceKey, Pending>) {
    let now = Instant::now();
    let due: Vec<ServiceKey> = pending
        .iter()
        .filter(|(_, p)| p.not_before <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for key in due {
        let Some(p) = pending.get_mut(&key) else {
            continue;
        };
        match writer.write(&key, &p.ips, p.pool.as_deref()).await {
            Ok(()) => {
                info!(service = %key, ips = ?p.ips, pool = ?p.pool, "status written");
                pending.remove(&key);
            }
            Err(e) if e.is_not_found() => {
                debug!(service = %key, "service gone before its status was written");
                pending.remove(&key);
            }
            Err(e) => {
                warn!(service = %key, error = %e, retry_in = ?p.backoff, "status write failed");
                p.not_before = Instant::now() + p.backoff;
                p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

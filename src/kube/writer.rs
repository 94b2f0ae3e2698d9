//! The status writer task: the pure write queue (`lb_core::writes`: status first, Events
//! behind, bounded writes in flight, per-Service order) run by [`crate::driver::run`], with
//! the API requests as futures in flight together.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::status::StatusWriter;
use crate::control::metrics::Metrics;
use crate::driver;
use crate::writes::{self, Input, Limits, Log, Output, Submission, Writes};

/// What the daemon hands the writer.
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Submission>,
}

impl WriterHandle {
    pub fn submit(&self, s: Submission) {
        // The task only ends when the handle is dropped.
        let _ = self.tx.send(s);
    }
}

pub fn spawn(writer: StatusWriter, limits: Limits, metrics: Metrics) -> WriterHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut shell = Shell {
        rx,
        writer: Arc::new(writer),
        requests: FuturesUnordered::new(),
        metrics,
    };
    tokio::spawn(async move {
        let mut queue = Writes::new(limits);
        driver::run(&mut queue, &mut shell).await;
    });
    WriterHandle { tx }
}

type Request = Pin<Box<dyn Future<Output = Input> + Send>>;

struct Shell {
    rx: mpsc::UnboundedReceiver<Submission>,
    writer: Arc<StatusWriter>,
    /// Writes and Events in flight; each ends as the input that reports it.
    requests: FuturesUnordered<Request>,
    metrics: Metrics,
}

impl driver::Shell<Writes> for Shell {
    async fn next_input(&mut self) -> Option<Input> {
        tokio::select! {
            Some(done) = self.requests.next(), if !self.requests.is_empty() => Some(done),
            s = self.rx.recv() => {
                // Everything queued goes in one step: an Event never overtakes its status.
                let mut items = vec![s?];
                while let Ok(s) = self.rx.try_recv() {
                    items.push(s);
                }
                Some(Input::Submit(items))
            }
        }
    }

    async fn carry(&mut self, _: Instant, _: &Writes, out: Vec<Output>) -> ControlFlow<()> {
        for o in out {
            match o {
                Output::Write {
                    id,
                    service,
                    ips,
                    pool,
                } => {
                    let w = self.writer.clone();
                    self.requests.push(Box::pin(async move {
                        let result = match w.write(&service, &ips, pool.as_deref()).await {
                            Ok(()) => writes::Result::Ok,
                            Err(e) if e.is_not_found() => writes::Result::Gone,
                            Err(e) => {
                                warn!(service = %service, error = %e, "status write failed");
                                writes::Result::Failed {
                                    retry_after: e.retry_after(),
                                }
                            }
                        };
                        Input::Written { id, result }
                    }));
                }
                Output::Annotate { id, service, value } => {
                    let w = self.writer.clone();
                    self.requests.push(Box::pin(async move {
                        let result = match w.announcers(&service, value.as_deref()).await {
                            Ok(()) => writes::Result::Ok,
                            Err(e) if e.is_not_found() => writes::Result::Gone,
                            Err(e) => {
                                warn!(service = %service, error = %e, "announcers annotation not written");
                                writes::Result::Failed {
                                    retry_after: e.retry_after(),
                                }
                            }
                        };
                        Input::Written { id, result }
                    }));
                }
                Output::Post { id, event } => {
                    let w = self.writer.clone();
                    self.requests.push(Box::pin(async move {
                        let r = w.event(&event).await;
                        if let Err(e) = &r {
                            warn!(service = %event.service, error = %e, "event not posted");
                        }
                        Input::Posted { id, ok: r.is_ok() }
                    }));
                }
                Output::Log(l) => self.log(l),
            }
        }
        ControlFlow::Continue(())
    }
}

impl Shell {
    fn log(&self, l: Log) {
        match l {
            Log::Written { service, ips, pool } => {
                info!(service = %service, ips = ?ips, pool = ?pool, "status written")
            }
            Log::Annotated { service, value } => {
                debug!(service = %service, announcing = ?value, "announcers annotation written")
            }
            Log::Gone { service } => {
                debug!(service = %service, "service gone before its status was written")
            }
            Log::WriteFailed { service, retry_in } => {
                self.metrics.kube_status_write_retried();
                debug!(service = %service, retry_in = ?retry_in, "status write will be retried");
            }
            Log::Paused { for_ } => {
                warn!(pause = ?for_, "API server asked to slow down: status writes paused")
            }
            Log::EventDropped {
                service,
                reason,
                overflow,
            } => {
                self.metrics.kube_event_dropped();
                if overflow {
                    debug!(service = %service, reason, "event dropped: queue full");
                }
            }
        }
    }
}

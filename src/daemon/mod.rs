//! `lbd`: wiring of the tasks, signals and sd_notify.
//!
//! ```text
//!  kube::watch ──KubeUpdate──▶ controller task ──Output──▶ kube::status writer ─▶ API server
//!  (3 watchers)               (owns controller::Controller,   (leader only; coalesces,
//!                              the allocator)                  retries with backoff)
//!  signals ─────────────────▶ controller task: SIGHUP reload, SIGTERM/SIGINT shutdown
//!  controller task ─────────▶ sd_notify READY=1 / STATUS= / WATCHDOG=1
//! ```
//! Protocol decisions live in the pure cores; the tasks here only carry messages.

pub mod logging;
pub mod writer;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{self, Config, Context};
use crate::controller::{self, Controller};
use crate::kube::watch::KubeUpdate;

/// How long start-up waits for the Kubernetes stores before saying READY anyway (with a
/// STATUS saying what it still waits for): an unreachable API server must not hang boot.
const READY_BOUND: Duration = Duration::from_secs(10);

fn notify(states: &[sd_notify::NotifyState]) {
    // Not running under systemd (no NOTIFY_SOCKET) is fine; a broken socket is worth a line.
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "sd_notify failed");
    }
}

/// Runs the daemon until SIGTERM/SIGINT. Returns the process exit code.
pub fn main(config_path: &Path) -> ExitCode {
    let ctx = Context::from_system();
    let checked = match config::load_file(config_path, &ctx) {
        Ok(c) => c,
        Err(diags) => {
            eprintln!("{diags}");
            eprintln!("lbd: {} is invalid; not starting", config_path.display());
            return ExitCode::from(1);
        }
    };
    logging::init(&checked.config.log);
    for w in &checked.warnings {
        warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(config_path.to_owned(), ctx, checked.config))
}

async fn run(config_path: PathBuf, ctx: Context, config: Config) -> ExitCode {
    info!(
        node = %config.node.name,
        pools = config.pools.len(),
        "lbd {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let mut signals = match Signals::new([SIGHUP, SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot install signal handlers");
            return ExitCode::from(1);
        }
    };

    let (kube_tx, mut kube_rx) = mpsc::channel::<KubeUpdate>(1024);
    let mut status_writer = None;
    if let Some(k) = &config.kubernetes {
        match crate::kube::client::connect(&k.kubeconfig).await {
            Ok((client, id)) => {
                info!(server = %id.server, user = %id.user, auth = id.auth, "Kubernetes API");
                tokio::spawn(crate::kube::watch::run(
                    client.clone(),
                    k.ignore_exclude_label,
                    kube_tx.clone(),
                ));
                status_writer = Some(writer::spawn(crate::kube::status::StatusWriter::new(
                    client,
                    &config.node.name,
                )));
            }
            Err(e) => {
                error!("{e}");
                return ExitCode::from(1);
            }
        }
    }
    drop(kube_tx);

    let mut ctl = Controller::new(
        config.pools.clone(),
        config.services.clone(),
        config
            .kubernetes
            .as_ref()
            .and_then(|k| k.load_balancer_class.clone()),
        config.kubernetes.is_some(),
    );
    // Until raft-lite runs between hosts, this host is the only writer.
    let mut outputs = ctl.step(controller::Input::Writer(true));
    let mut config = config;

    let started = tokio::time::Instant::now();
    let mut ready = false;
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    let mut kube_open = status_writer.is_some();
    loop {
        for o in outputs.drain(..) {
            if let Some(w) = &status_writer {
                w.submit(o);
            }
        }
        if !ready && (ctl.synced() || started.elapsed() >= READY_BOUND) {
            ready = true;
            let status = if ctl.synced() {
                format!("serving {} services", ctl.services().len())
            } else {
                "API server not reached yet; retrying".to_string()
            };
            info!(%status, "ready");
            notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ]);
        }
        tokio::select! {
            update = kube_rx.recv(), if kube_open => match update {
                Some(u) => outputs = ctl.step(controller::Input::Kube(u)),
                None => kube_open = false,
            },
            Some(sig) = signals.next() => match sig {
                SIGHUP => {
                    notify(&[sd_notify::NotifyState::Reloading]);
                    outputs = reload(&config_path, &ctx, &mut config, &mut ctl);
                    notify(&[sd_notify::NotifyState::Ready]);
                }
                _ => {
                    info!("shutting down");
                    notify(&[sd_notify::NotifyState::Stopping]);
                    return ExitCode::SUCCESS;
                }
            },
            _ = watchdog.tick() => notify(&[sd_notify::NotifyState::Watchdog]),
        }
    }
}

/// SIGHUP: validate the file, then apply only what changed. An invalid file changes
/// nothing and says why.
fn reload(
    path: &Path,
    ctx: &Context,
    running: &mut Config,
    ctl: &mut Controller,
) -> Vec<controller::Output> {
    match config::load_file(path, ctx) {
        Err(diags) => {
            error!("reload failed; keeping the running configuration:\n{diags}");
            let status = format!(
                "reload failed: {} errors; running the previous config",
                diags.0.len()
            );
            notify(&[sd_notify::NotifyState::Status(&status)]);
            Vec::new()
        }
        Ok(checked) => {
            for w in &checked.warnings {
                warn!("{w}");
            }
            let new = checked.config;
            let mut out = Vec::new();
            if new.pools != running.pools || new.services != running.services {
                out = ctl.step(controller::Input::Config {
                    pools: new.pools.clone(),
                    statics: new.services.clone(),
                });
            }
            info!("configuration reloaded");
            *running = new;
            out
        }
    }
}

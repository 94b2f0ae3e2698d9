//! A standalone BGP speaker on lb's code: reads an lb.toml (its `[[bgp_peer]]`s and pools)
//! and a list of IPs to announce, runs the speaker, re-reads both on SIGHUP, and on
//! SIGTERM/SIGINT withdraws everything and sends Cease with a shutdown communication.
//!
//! ```text
//! lb-bgp-speaker --config lb.toml [--node NAME] [--label k=v]... [--prefixes FILE] [IP...]
//! ```
//!
//! Each IP (from the command line, or one per line in FILE; `#` starts a comment) is
//! announced as a `Cluster` service with a ready endpoint on this node, using the
//! advertisements of the BGP pool that contains it. A line `IP local` announces it as a
//! `Local` service with the endpoint on this node too (same result here), `IP none` as a
//! service without ready endpoints (not announced).
//! SIGUSR1 logs every peer's state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lb::bgp::advertise::{AnnouncedIp, LocalNode};
use lb::bgp::speaker::{Speaker, SpeakerOptions};
use lb::config::{Config, Context, Role};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
struct Args {
    /// lb.toml
    #[arg(long)]
    config: PathBuf,
    /// Node name (default: `[node] name` of the config).
    #[arg(long)]
    node: Option<String>,
    /// Node labels, `key=value` (for node selectors).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// File with one IP per line, re-read on SIGHUP.
    #[arg(long)]
    prefixes: Option<PathBuf>,
    /// Port of the passive listener; 0: do not listen.
    #[arg(long, default_value_t = 179)]
    listen_port: u16,
    /// Shutdown communication sent with the Cease on SIGTERM (RFC 8203).
    #[arg(long, default_value = "lb-bgp-speaker shutting down")]
    shutdown_message: String,
    /// IPs to announce (in addition to the file's).
    ips: Vec<IpAddr>,
}

fn load_config(path: &Path) -> Result<Config, String> {
    let ctx = Context {
        check_files: false,
        ..Context::from_system()
    };
    lb::config::load_file(path, &ctx)
        .map(|c| c.config)
        .map_err(|d| d.to_string())
}

fn read_ips(args: &Args) -> Result<Vec<(IpAddr, String)>, String> {
    let mut out: Vec<(IpAddr, String)> = args.ips.iter().map(|ip| (*ip, String::new())).collect();
    if let Some(path) = &args.prefixes {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let ip = words.next().unwrap_or("");
            let ip: IpAddr = ip
                .parse()
                .map_err(|e| format!("{}:{}: {ip:?}: {e}", path.display(), n + 1))?;
            out.push((ip, words.next().unwrap_or("").to_string()));
        }
    }
    Ok(out)
}

fn announcements(config: &Config, node: &str, ips: &[(IpAddr, String)]) -> Vec<AnnouncedIp> {
    let mut out = Vec::new();
    for (ip, mode) in ips {
        let Some(pool) = config
            .pools
            .iter()
            .find(|p| p.protocol == lb::model::PoolProtocol::Bgp && p.contains(ip))
        else {
            warn!(%ip, "no BGP pool contains this IP: not announced");
            continue;
        };
        let endpoints: BTreeMap<String, usize> = if mode == "none" {
            BTreeMap::new()
        } else {
            [(node.to_string(), 1)].into()
        };
        out.push(AnnouncedIp {
            ip: *ip,
            pool: pool.name.clone(),
            local_only: mode == "local",
            endpoints,
            always_ready: false,
        });
    }
    out
}

fn local_node(args: &Args, config: &Config) -> LocalNode {
    LocalNode {
        name: args
            .node
            .clone()
            .unwrap_or_else(|| config.node.name.clone()),
        labels: args
            .labels
            .iter()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        eligible: config.node.role == Role::Member,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = match load_config(&args.config) {
        Ok(c) => c,
        Err(e) => {
            error!("invalid config: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ips = match read_ips(&args) {
        Ok(i) => i,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let node = local_node(&args, &config);
    let options = SpeakerOptions {
        listen_port: (args.listen_port != 0).then_some(args.listen_port),
        ..SpeakerOptions::default()
    };
    let speaker = Speaker::spawn(
        node.clone(),
        config.bgp_peers.clone(),
        config.pools.clone(),
        options,
    );
    speaker.set_announcements(announcements(&config, &node.name, &ips));
    info!(count = ips.len(), "announcing");

    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                match load_config(&args.config) {
                    Ok(c) => {
                        config = c;
                        speaker.set_pools(config.pools.clone());
                        speaker.update_peers(config.bgp_peers.clone());
                    }
                    Err(e) => warn!("reload: invalid config, keeping the previous one: {e}"),
                }
                match read_ips(&args) {
                    Ok(ips) => {
                        info!(count = ips.len(), "reloaded: announcing");
                        speaker.set_announcements(announcements(&config, &node.name, &ips));
                    }
                    Err(e) => warn!("reload: {e}"),
                }
            }
            _ = usr1.recv() => {
                for p in speaker.snapshot().await {
                    info!(
                        peer = %p.status.address,
                        state = ?p.status.state,
                        uptime = ?p.uptime,
                        prefixes = p.status.prefixes_advertised,
                        updates_in = p.status.updates_received,
                        last_error = ?p.status.last_error,
                        "peer status"
                    );
                }
            }
        }
    }
    info!("withdrawing and closing the sessions");
    match speaker
        .shutdown(&args.shutdown_message, Duration::from_secs(5))
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            warn!("{e}");
            ExitCode::SUCCESS
        }
    }
}

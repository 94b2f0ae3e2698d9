//! One raft-lite member on lb's code: reads an lb.toml (`[node]`, `[cluster]`), runs the
//! cluster driver with the given IPs as desired and eligible, and prints every published view
//! as a JSON line on stdout. SIGTERM/SIGINT: planned leave, then a last line and exit.
//!
//! ```text
//! lb-cluster-node --config lb.toml [--node NAME] [IP...]
//! ```
//!
//! Each line: `{"wall_ns", "me", "role", "term", "leader", "owned": {IP: deadline_wall_ns},
//! "owners", "alive", "stopped", "drops"}`. Times are wall-clock nanoseconds (`CLOCK_REALTIME`,
//! the same for every process on one machine), so lines of different processes compare;
//! `owned` deadlines are converted from the monotonic clock at the time of printing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use lb::cluster::driver::{self, ClusterDriver, ClusterSettings, ClusterView};
use lb::cluster::transport::TransportStats;
use lb::config::Context;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
struct Args {
    /// lb.toml
    #[arg(long)]
    config: PathBuf,
    /// Node name (default: `[node] name` of the config).
    #[arg(long)]
    node: Option<String>,
    /// Layer-2 IPs that need an owner; this node is eligible for all of them.
    ips: Vec<IpAddr>,
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn line(v: &ClusterView, stats: Option<&TransportStats>) -> String {
    let (now, wall) = (driver::now(), wall_ns());
    let to_wall = |t: Instant| -> i128 {
        if t >= now {
            (wall + t.duration_since(now).as_nanos()) as i128
        } else {
            wall as i128 - now.duration_since(t).as_nanos() as i128
        }
    };
    let owned: BTreeMap<String, i128> = v
        .owned
        .iter()
        .map(|(ip, until)| (ip.to_string(), to_wall(*until)))
        .collect();
    let drops: BTreeMap<String, u64> = stats
        .map(|s| {
            s.drops
                .iter()
                .map(|(r, n)| (format!("{r:?}"), *n))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "wall_ns": wall,
        "me": v.me,
        "role": format!("{:?}", v.role).to_lowercase(),
        "term": v.term,
        "leader": v.leader,
        "owned": owned,
        "owners": v.owners,
        "alive": v.members.iter().filter(|m| m.alive).map(|m| m.name.clone()).collect::<Vec<_>>(),
        "stopped": v.stopped,
        "drops": drops,
    })
    .to_string()
}

async fn changed_opt(
    rx: Option<&mut tokio::sync::watch::Receiver<TransportStats>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let ctx = Context {
        check_files: false,
        ..Context::from_system()
    };
    let mut config = match lb::config::load_file(&args.config, &ctx) {
        Ok(c) => c.config,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::from(2);
        }
    };
    if let Some(n) = args.node {
        config.node.name = n;
    }
    let settings = match ClusterSettings::from_config(&config.node, &config.cluster) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lb-cluster-node: {e}");
            return ExitCode::from(2);
        }
    };
    let handle = match ClusterDriver::spawn(settings).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("lb-cluster-node: {e}");
            return ExitCode::from(1);
        }
    };
    handle.set_desired(
        args.ips
            .iter()
            .map(|ip| (*ip, format!("test/{ip}")))
            .collect(),
    );
    handle.set_eligible(args.ips.iter().copied().collect());
    let mut view = handle.view();
    let stats = handle.stats();
    // Drops are printed when they change too (a follower owning nothing rarely publishes).
    let mut drops_rx = handle.stats();
    let mut drops_seen = BTreeMap::new();
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("lb-cluster-node: cannot install signal handlers");
        return ExitCode::from(1);
    };
    let print = |v: &ClusterView| {
        let s = stats.as_ref().map(|s| s.borrow().clone());
        println!("{}", line(v, s.as_ref()));
    };
    print(&view.borrow_and_update());
    loop {
        tokio::select! {
            r = view.changed() => {
                if r.is_err() {
                    eprintln!("lb-cluster-node: driver task ended");
                    return ExitCode::from(1);
                }
                print(&view.borrow_and_update());
            }
            r = changed_opt(drops_rx.as_mut()) => {
                if r.is_err() {
                    drops_rx = None;
                    continue;
                }
                let d = drops_rx.as_mut().map(|s| s.borrow_and_update().drops.clone());
                if let Some(d) = d && d != drops_seen {
                    drops_seen = d;
                    print(&view.borrow());
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let outcome = handle.shutdown().await;
    print(&view.borrow_and_update());
    println!(
        "{}",
        json!({"wall_ns": wall_ns(), "shutdown": format!("{outcome:?}")})
    );
    ExitCode::SUCCESS
}

//! lbctl: the lb command-line tool. See lbctl(8).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Parser, Subcommand};
use lb::control::client::{self, Query};

/// Control and inspect the lb load balancer daemon.
#[derive(Parser)]
#[command(name = "lbctl", version)]
struct Args {
    /// D-Bus address of the bus lbd is on (default: the system bus, or
    /// $DBUS_SYSTEM_BUS_ADDRESS).
    #[arg(long, global = true, value_name = "ADDRESS")]
    bus: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(ClapArgs)]
struct Output {
    /// Print the daemon's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(ClapArgs)]
#[command(args_conflicts_with_subcommands = true)]
struct ClusterCmd {
    #[command(flatten)]
    output: Output,
    #[command(subcommand)]
    action: Option<ClusterAction>,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Forget a member host that stopped for good without a planned stop (a dead machine):
    /// the leader drops it from the member list at once and moves its IPs, instead of after
    /// 100 election timeouts. Run it on the leader (root or group adm). Refused for a voter
    /// (voters change by reload), an unknown name, and a member still alive (stop its lbd:
    /// a planned stop moves its IPs and has it forgotten). Exit status: 0 removed, 1 refused,
    /// 3 lbd not running, 4 this host is not the leader (the message names it).
    Remove {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Summary of the running lbd: readiness, config, cluster, counts.
    Status(Output),
    /// Services with their IPs, pool, protocol, announcing nodes and state.
    Services(Output),
    /// Address pools: size, used, free.
    Pools(Output),
    /// BGP sessions.
    Peers(Output),
    /// raft-lite: term, leader and members; `cluster remove NAME` forgets a dead member.
    Cluster(ClusterCmd),
    /// Make lbd re-read its configuration (root or group adm).
    Reload(Output),
    /// Validate an lb.toml: errors and warnings with file, line and column.
    CheckConfig {
        #[arg(value_name = "FILE")]
        path: PathBuf,
    },
    /// Convert MetalLB configuration (ConfigMap, its config string, or CRDs) to lb.toml.
    ImportMetallb {
        /// The YAML file, or - for standard input.
        #[arg(value_name = "FILE")]
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bus = args.bus.as_deref();
    match args.command {
        Command::Status(o) => client::run(Query::Status, o.json, bus),
        Command::Services(o) => client::run(Query::Services, o.json, bus),
        Command::Pools(o) => client::run(Query::Pools, o.json, bus),
        Command::Peers(o) => client::run(Query::Peers, o.json, bus),
        Command::Cluster(ClusterCmd {
            action: Some(ClusterAction::Remove { name }),
            ..
        }) => client::remove_member(&name, bus),
        Command::Cluster(c) => client::run(Query::Cluster, c.output.json, bus),
        Command::Reload(o) => client::run(Query::Reload, o.json, bus),
        Command::CheckConfig { path } => {
            lb::config::check_config_main(&path, &lb::config::Context::from_system())
        }
        Command::ImportMetallb { path } => lb::control::offline::import_metallb_main(&path),
    }
}

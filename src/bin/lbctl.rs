//! lbctl: the lb command-line tool. See lbctl(8).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Control and inspect the lb load balancer daemon.
#[derive(Parser)]
#[command(name = "lbctl", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    match Args::parse().command {
        Command::CheckConfig { path } => {
            lb::config::check_config_main(&path, &lb::config::Context::from_system())
        }
        Command::ImportMetallb { path } => lb::config::metallb::import_main(&path),
    }
}

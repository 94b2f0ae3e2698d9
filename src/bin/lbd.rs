//! lbd: the lb daemon. See lbd(8).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Load balancer daemon for bare-metal Kubernetes clusters (layer-2 ARP/NDP and BGP).
#[derive(Parser)]
#[command(name = "lbd", version)]
struct Args {
    /// The configuration file.
    #[arg(long, value_name = "PATH", default_value = "/etc/lb.toml")]
    config: PathBuf,
    /// Validate the configuration, print errors and warnings, and exit (0 when valid).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        return lb::config::check_config_main(&args.config, &lb::config::Context::from_system());
    }
    lb::daemon::main(&args.config)
}

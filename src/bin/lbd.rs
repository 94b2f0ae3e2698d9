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
    /// Validate the configuration, print errors and warnings, and exit (0 when valid, 6 when
    /// not).
    #[arg(long)]
    check_config: bool,
    /// With --check-config: the file to check (default: --config's).
    #[arg(
        value_name = "FILE",
        requires = "check_config",
        conflicts_with = "config"
    )]
    file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        let path = args.file.as_deref().unwrap_or(&args.config);
        let ctx = lb::config::Context::from_system();
        let journal = lb::daemon::logging::stderr_is_journal();
        return if lb::config::check_config(path, &ctx, journal) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(lb::daemon::EXIT_INVALID_CONFIG)
        };
    }
    lb::daemon::main(&args.config)
}

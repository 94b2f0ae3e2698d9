//! /etc/lb.toml: schema and validation.
//!
//! [`parse_str`] / [`load_file`] turn the file into a validated [`Config`] or into
//! [`Diagnostics`] naming every problem with its line and column. The schema is annotated in
//! `etc/lb.toml`; the serde mirror is in `raw`, the checks in `validate`.

#![forbid(unsafe_code)]

mod diagnostic;
mod raw;
mod types;
mod validate;
pub mod values;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
// The domain types the config is made of (`crate::model::…` in this crate's modules).
use lb_core::model;
pub use types::*;

/// What validation needs from the host it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// Default `[node] name` (lowercased, as kubelet names its Node).
    pub hostname: String,
    /// Check that secret files exist with safe permissions, and that the kubeconfig exists.
    /// Off for tests and for checking a file meant for another host.
    pub check_files: bool,
}

impl Context {
    /// The kernel's hostname (`/proc/sys/kernel/hostname`, else `/etc/hostname`), files checked.
    pub fn from_system() -> Context {
        // uname(2), not /proc/sys/kernel/hostname: the unit's ProcSubset=pid hides /proc/sys,
        // and /etc/hostname can differ from the kernel's name (then `lbd --check-config` in a
        // shell and lbd under systemd would disagree about this host's name).
        let hostname = kernel_hostname()
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_default();
        Context {
            hostname,
            check_files: true,
        }
    }
}

/// The kernel's host name (uname(2)'s nodename) — works where `/proc/sys` is hidden (the
/// unit's `ProcSubset=pid`). `None` if empty or not UTF-8.
pub fn kernel_hostname() -> Option<String> {
    let uts = rustix::system::uname();
    let name = uts.nodename().to_str().ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// A valid config and the warnings found on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates lb.toml text. `file` is only used to label diagnostics. On error,
/// every error found is returned (with any warnings), in file order.
pub fn parse_str(text: &str, file: &Path, ctx: &Context) -> Result<Checked, Diagnostics> {
    validate::check(text, file, ctx)
}

/// Reads and validates a config file; a read failure is a diagnostic too.
pub fn load_file(path: &Path, ctx: &Context) -> Result<Checked, Diagnostics> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str(&text, path, ctx),
        Err(e) => Err(Diagnostics(vec![Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}: expected a readable TOML file"),
        }])),
    }
}

/// One-line summary of a valid config, e.g. "/etc/lb.toml: OK (2 pools, 1 BGP peer, 3 cluster
/// members)". The path is shown as given, as in the diagnostics.
pub fn summary(path: &Path, config: &Config) -> String {
    let count =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{}: OK ({}, {}, {})",
        path.display(),
        count(config.pools.len(), "pool", "pools"),
        count(config.bgp_peers.len(), "BGP peer", "BGP peers"),
        count(
            config.cluster.members.len(),
            "cluster member",
            "cluster members"
        ),
    )
}

/// `lbd --check-config` / `lbctl check-config PATH`: diagnostics to stderr, one per line; on
/// success a summary to stdout. Exit 0 when valid (warnings allowed), 1 otherwise.
pub fn check_config_main(path: &Path, ctx: &Context) -> ExitCode {
    if check_config(path, ctx, false) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints what [`check_config_main`] prints and says whether the file is valid. With
/// `priority_prefixes` (stderr is the journal: a unit runs the check) each diagnostic line
/// starts with its syslog priority (`<3>` error, `<4>` warning, sd-daemon(3)), so journald
/// files errors at err and `journalctl -p err` shows them.
pub fn check_config(path: &Path, ctx: &Context, priority_prefixes: bool) -> bool {
    let (diagnostics, summary_line) = match load_file(path, ctx) {
        Ok(checked) => (checked.warnings, Some(summary(path, &checked.config))),
        Err(Diagnostics(all)) => (all, None),
    };
    let mut stderr = std::io::stderr().lock();
    for d in &diagnostics {
        let prefix = match (priority_prefixes, d.severity) {
            (false, _) => "",
            (true, Severity::Error) => "<3>",
            (true, Severity::Warning) => "<4>",
        };
        // Nothing sensible to do if stderr is gone; the exit code still tells.
        let _ = writeln!(stderr, "{prefix}{d}");
    }
    match summary_line {
        Some(line) => {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_hostname_matches_procfs() {
        let expected = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("procfs");
        assert_eq!(super::kernel_hostname().as_deref(), Some(expected.trim()));
    }
}

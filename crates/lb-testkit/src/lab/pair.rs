//! The smallest lab: two namespaces `a` and `b` joined by one veth pair with fixed MACs and
//! addresses, no bridge — for the tests of lb's own packet socket and netlink watcher, which
//! run lb's code on a thread inside `b` (`lb::sys::netns::enter`) and need to know every
//! frame on the link.
//!
//! It shares the [`Lab`](super::Lab)'s conventions: namespaces are named
//! `lbl-<pid>-<n>-<tag>-{a,b}`, so parallel tests and runs never collide and
//! [`cleanup_stale`](super::cleanup_stale) removes those of a test process that died;
//! dropping the pair kills what is left inside and deletes both namespaces, also when the
//! test panicked. Test traffic stays inside them.

use std::process::Output;
use std::sync::atomic::Ordering;

use super::{LAB_COUNTER, NS_PREFIX, cleanup_stale, cmd, kill_ns_processes, ns_cmd, run_checked};

pub const MAC_A: &str = "02:00:00:00:00:0a";
pub const MAC_B: &str = "02:00:00:00:00:0b";

/// `a`: `va` 02:..:0a 10.98.0.1/24 fd98::1/64; `b`: `vb` 02:..:0b 10.98.0.2/24 fd98::2/64.
pub struct VethPair {
    /// Namespace names.
    pub a: String,
    pub b: String,
    /// veth names inside `a` and `b`.
    pub if_a: &'static str,
    pub if_b: &'static str,
}

impl VethPair {
    /// Both links up, DAD off, IPv6 addresses kept on link down, `arp_ignore=1`.
    pub fn new(tag: &str) -> VethPair {
        cleanup_stale();
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{NS_PREFIX}{}-{n}-{tag}", std::process::id());
        let pair = VethPair {
            a: format!("{prefix}-a"),
            b: format!("{prefix}-b"),
            if_a: "va",
            if_b: "vb",
        };
        // Create `pair` first so Drop cleans up whatever the steps below managed to make.
        check(run_checked(
            &pair.a,
            cmd("ip", &["netns", "add", &pair.a]),
            None,
        ));
        check(run_checked(
            &pair.b,
            cmd("ip", &["netns", "add", &pair.b]),
            None,
        ));
        for ns in [&pair.a, &pair.b] {
            pair.sysctl(
                ns,
                &[
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.all.keep_addr_on_down=1",
                    "net.ipv6.conf.default.keep_addr_on_down=1",
                    "net.ipv4.conf.all.arp_ignore=1",
                ],
            );
            pair.ip(ns, &["link", "set", "lo", "up"]);
        }
        pair.ip(
            &pair.a,
            &[
                "link", "add", "va", "address", MAC_A, "type", "veth", "peer", "name", "vb",
                "netns", &pair.b, "address", MAC_B,
            ],
        );
        pair.ip(&pair.a, &["addr", "add", "10.98.0.1/24", "dev", "va"]);
        pair.ip(
            &pair.a,
            &["addr", "add", "fd98::1/64", "dev", "va", "nodad"],
        );
        pair.ip(&pair.b, &["addr", "add", "10.98.0.2/24", "dev", "vb"]);
        pair.ip(
            &pair.b,
            &["addr", "add", "fd98::2/64", "dev", "vb", "nodad"],
        );
        pair.ip(&pair.a, &["link", "set", "va", "up"]);
        pair.ip(&pair.b, &["link", "set", "vb", "up"]);
        pair
    }

    /// Runs `ip -n NS ARGS`, panicking with its stderr on failure.
    #[track_caller]
    pub fn ip(&self, ns: &str, args: &[&str]) {
        let mut full = vec!["-n", ns];
        full.extend_from_slice(args);
        check(run_checked(ns, cmd("ip", &full), None));
    }

    /// Sets sysctls (`key=value`) in namespace `ns`, panicking on failure.
    #[track_caller]
    pub fn sysctl(&self, ns: &str, settings: &[&str]) {
        let mut args = vec!["sysctl", "-qw"];
        args.extend_from_slice(settings);
        check(run_checked(ns, ns_cmd(ns, &args), None));
    }

    /// Runs a command inside namespace `ns` to completion (every command given has its own
    /// timeout) and returns its output, whatever its exit status.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut c = ns_cmd(ns, args);
        c.output().unwrap_or_else(|e| panic!("spawning {c:?}: {e}"))
    }
}

#[track_caller]
fn check(r: super::Result<Output>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            kill_ns_processes(ns);
            let _ = cmd("ip", &["netns", "del", ns])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

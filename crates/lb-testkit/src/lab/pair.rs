//! Throwaway network namespaces for the layer-2 tests: two hosts `a` and `b` joined by a
//! veth pair with fixed MACs. Names carry the test's tag and the PID so parallel runs do not
//! collide; Drop deletes the namespaces (also when the test panics). Test traffic stays
//! inside them.

#![allow(dead_code)]

use std::process::{Command, Output};

pub const MAC_A: &str = "02:00:00:00:00:0a";
pub const MAC_B: &str = "02:00:00:00:00:0b";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Lab {
    pub a: String,
    pub b: String,
    /// veth names inside `a` and `b`.
    pub if_a: &'static str,
    pub if_b: &'static str,
}

impl Lab {
    /// `a`: va 02:..:0a 10.98.0.1/24 fd98::1/64; `b`: vb 02:..:0b 10.98.0.2/24 fd98::2/64.
    /// Both links up, DAD off, IPv6 addresses kept on link down.
    pub fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            a: format!("l2t-{tag}-{pid}-a"),
            b: format!("l2t-{tag}-{pid}-b"),
            if_a: "va",
            if_b: "vb",
        };
        // Create `lab` first so Drop cleans up whatever the steps below managed to make.
        ip(&["netns", "add", &lab.a]);
        ip(&["netns", "add", &lab.b]);
        for ns in [&lab.a, &lab.b] {
            lab.sysctl(
                ns,
                &[
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.all.keep_addr_on_down=1",
                    "net.ipv6.conf.default.keep_addr_on_down=1",
                    "net.ipv4.conf.all.arp_ignore=1",
                ],
            );
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", &lab.a, "link", "add", "va", "address", MAC_A, "type", "veth", "peer", "name",
            "vb", "netns", &lab.b, "address", MAC_B,
        ]);
        ip(&["-n", &lab.a, "addr", "add", "10.98.0.1/24", "dev", "va"]);
        ip(&[
            "-n",
            &lab.a,
            "addr",
            "add",
            "fd98::1/64",
            "dev",
            "va",
            "nodad",
        ]);
        ip(&["-n", &lab.b, "addr", "add", "10.98.0.2/24", "dev", "vb"]);
        ip(&[
            "-n",
            &lab.b,
            "addr",
            "add",
            "fd98::2/64",
            "dev",
            "vb",
            "nodad",
        ]);
        ip(&["-n", &lab.a, "link", "set", "va", "up"]);
        ip(&["-n", &lab.b, "link", "set", "vb", "up"]);
        lab
    }

    pub fn sysctl(&self, ns: &str, settings: &[&str]) {
        let out = run(Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-qw"])
            .args(settings));
        assert!(out.status.success(), "sysctl {settings:?} in {ns}: {out:?}");
    }

    /// Runs a command inside namespace `ns` to completion (every command given has its own
    /// timeout) and returns its output, whatever its exit status.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

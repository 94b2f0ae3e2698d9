//! Real routers and VRRP daemons started inside lab hosts: FRR, BIRD, GoBGP, exabgp,
//! keepalived. Each `start` returns once the daemon answers its control interface.
//! Command lines follow /work/shared/LAB-NOTES.md.

use super::{Host, LabError, Proc, Result, Signal, try_wait_until};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

const UP_TIMEOUT: Duration = Duration::from_secs(15);

fn json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| LabError::Parse {
        what: what.to_string(),
        detail: format!("{e}: {text}"),
    })
}

/// Kernel routes for `prefix` in `host` (`ip -j route show PREFIX`; v6 when it has ':').
pub fn kernel_routes(host: &Host, prefix: &str) -> Result<Value> {
    let fam = if prefix.contains(':') { "-6" } else { "-4" };
    json(
        "ip -j route",
        &host.stdout(&["ip", "-j", fam, "route", "show", prefix])?,
    )
}

/// Next hops of the kernel route for `prefix` (one for a plain route, several for ECMP).
pub fn kernel_nexthops(host: &Host, prefix: &str) -> Result<Vec<String>> {
    let routes = kernel_routes(host, prefix)?;
    let mut out = Vec::new();
    for r in routes.as_array().into_iter().flatten() {
        if let Some(gw) = r["gateway"].as_str() {
            out.push(gw.to_string());
        }
        for nh in r["nexthops"].as_array().into_iter().flatten() {
            if let Some(gw) = nh["gateway"].as_str() {
                out.push(gw.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------- FRR

/// A BGP neighbor of an FRR router.
#[derive(Debug, Clone, Default)]
pub struct FrrNeighbor {
    pub address: String,
    pub remote_as: u32,
    pub password: Option<String>,
    pub ebgp_multihop: Option<u8>,
    /// Only accept connections (never dial).
    pub passive: bool,
}

/// FRR configuration, rendered by [`FrrConfig::render`].
#[derive(Debug, Clone)]
pub struct FrrConfig {
    pub asn: u32,
    pub router_id: String,
    pub neighbors: Vec<FrrNeighbor>,
    /// `bgp listen range RANGE peer-group` with this remote AS (ranges must not overlap).
    pub listen_ranges: Vec<(String, u32)>,
    /// `maximum-paths N` (eBGP ECMP).
    pub maximum_paths: Option<u32>,
    /// `maximum-paths ibgp N`.
    pub maximum_paths_ibgp: Option<u32>,
    /// `bgp bestpath as-path multipath-relax` (ECMP across different neighbor ASNs).
    pub multipath_relax: bool,
    /// (keepalive, hold) seconds.
    pub timers: (u16, u16),
    /// Prefixes announced with `network` (v4 and v6; `no bgp network import-check` lets FRR
    /// announce them without a matching route in its RIB).
    pub networks: Vec<String>,
    /// Raw lines appended inside `router bgp`.
    pub extra: Vec<String>,
    /// BFD with every static neighbor: (receive ms, transmit ms, detect multiplier) as the
    /// bfdd profile `lb`; [`Frr::start`] then also runs bfdd.
    pub bfd: Option<(u32, u32, u8)>,
}

impl FrrConfig {
    pub fn new(asn: u32, router_id: &str) -> FrrConfig {
        FrrConfig {
            asn,
            router_id: router_id.to_string(),
            neighbors: Vec::new(),
            listen_ranges: Vec::new(),
            maximum_paths: None,
            maximum_paths_ibgp: None,
            multipath_relax: false,
            timers: (3, 9),
            networks: Vec::new(),
            extra: Vec::new(),
            bfd: None,
        }
    }

    pub fn neighbor(mut self, address: &str, remote_as: u32) -> FrrConfig {
        self.neighbors.push(FrrNeighbor {
            address: address.to_string(),
            remote_as,
            ..FrrNeighbor::default()
        });
        self
    }

    pub fn listen_range(mut self, range: &str, remote_as: u32) -> FrrConfig {
        self.listen_ranges.push((range.to_string(), remote_as));
        self
    }

    pub fn network(mut self, prefix: &str) -> FrrConfig {
        self.networks.push(prefix.to_string());
        self
    }

    /// The bfdd configuration text (the `lb` profile), when `bfd` is set.
    pub fn render_bfdd(&self, hostname: &str) -> Option<String> {
        let (rx, tx, mult) = self.bfd?;
        Some(format!(
            "frr defaults traditional\nhostname {hostname}\n!\nbfd\n profile lb\n  receive-interval {rx}\n  transmit-interval {tx}\n  detect-multiplier {mult}\n !\n!\n"
        ))
    }

    /// The bgpd configuration text.
    pub fn render(&self, hostname: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "frr defaults traditional\nhostname {hostname}\n!");
        let _ = writeln!(s, "router bgp {}", self.asn);
        let _ = writeln!(s, " bgp router-id {}", self.router_id);
        let _ = writeln!(s, " no bgp ebgp-requires-policy");
        let _ = writeln!(s, " no bgp network import-check");
        if self.multipath_relax {
            let _ = writeln!(s, " bgp bestpath as-path multipath-relax");
        }
        let _ = writeln!(s, " timers bgp {} {}", self.timers.0, self.timers.1);
        let mut peers: Vec<String> = Vec::new();
        for n in &self.neighbors {
            let a = &n.address;
            let _ = writeln!(s, " neighbor {a} remote-as {}", n.remote_as);
            // Retry fast and send updates at once: lab tests measure seconds, not minutes.
            let _ = writeln!(s, " neighbor {a} timers connect 1");
            let _ = writeln!(s, " neighbor {a} advertisement-interval 0");
            if let Some(p) = &n.password {
                let _ = writeln!(s, " neighbor {a} password {p}");
            }
            if let Some(h) = n.ebgp_multihop {
                let _ = writeln!(s, " neighbor {a} ebgp-multihop {h}");
            }
            if n.passive {
                let _ = writeln!(s, " neighbor {a} passive");
            }
            if self.bfd.is_some() {
                let _ = writeln!(s, " neighbor {a} bfd profile lb");
            }
            peers.push(a.clone());
        }
        for (i, (range, asn)) in self.listen_ranges.iter().enumerate() {
            let pg = format!("dyn{i}");
            let _ = writeln!(s, " neighbor {pg} peer-group");
            let _ = writeln!(s, " neighbor {pg} remote-as {asn}");
            let _ = writeln!(s, " neighbor {pg} advertisement-interval 0");
            let _ = writeln!(s, " bgp listen range {range} peer-group {pg}");
            peers.push(pg);
        }
        for line in &self.extra {
            let _ = writeln!(s, " {line}");
        }
        for (af, v6) in [("ipv4", false), ("ipv6", true)] {
            let _ = writeln!(s, " address-family {af} unicast");
            for n in self.networks.iter().filter(|n| n.contains(':') == v6) {
                let _ = writeln!(s, "  network {n}");
            }
            if let Some(m) = self.maximum_paths {
                let _ = writeln!(s, "  maximum-paths {m}");
            }
            if let Some(m) = self.maximum_paths_ibgp {
                let _ = writeln!(s, "  maximum-paths ibgp {m}");
            }
            for p in &peers {
                let _ = writeln!(s, "  neighbor {p} activate");
            }
            let _ = writeln!(s, " exit-address-family");
        }
        s += "!\n";
        s
    }
}

/// zebra + bgpd in a host namespace, with their own vty socket directory.
#[derive(Debug)]
pub struct Frr {
    host: Host,
    run_dir: PathBuf,
    bgpd: Proc,
    zebra: Proc,
    bfdd: Option<Proc>,
}

impl Frr {
    pub fn start(host: &Host, cfg: &FrrConfig) -> Result<Frr> {
        let run_dir = host.owned_dir("frr", "frr:frr")?;
        let conf = host.write_file("bgpd.conf", &cfg.render(host.name()))?;
        let zconf = host.write_file("zebra.conf", &format!("hostname {}\n", host.name()))?;
        let rd = run_dir.to_string_lossy().into_owned();
        let zsock = format!("{rd}/zserv.api");
        let daemon = |name: &str, conf: &PathBuf, extra: &[&str]| -> Result<Proc> {
            let pid = format!("{rd}/{name}.pid");
            let conf = conf.to_string_lossy().into_owned();
            let bin = format!("/usr/lib/frr/{name}");
            let mut args = vec![
                bin.as_str(),
                "-f",
                &conf,
                "-i",
                &pid,
                "-z",
                &zsock,
                "--vty_socket",
                &rd,
                "-P",
                "0",
                "--log",
                "stdout",
            ];
            args.extend_from_slice(extra);
            host.spawn_labeled(name, &args)
        };
        let zebra = daemon("zebra", &zconf, &[])?;
        // bfdd before bgpd so bgpd's BFD registrations find it.
        let bfdd = match cfg.render_bfdd(host.name()) {
            Some(text) => {
                let bconf = host.write_file("bfdd.conf", &text)?;
                let ctl = format!("{rd}/bfdd.sock");
                Some(daemon("bfdd", &bconf, &["--bfdctl", &ctl])?)
            }
            None => None,
        };
        let bgpd = daemon("bgpd", &conf, &["-p", "179"])?;
        let frr = Frr {
            host: host.clone(),
            run_dir,
            bgpd,
            zebra,
            bfdd,
        };
        try_wait_until(UP_TIMEOUT, "FRR zebra and bgpd to answer vtysh", || {
            frr.vtysh(&["show zebra client summary"])
                .map(|o| o.contains("bgp"))
                .unwrap_or(false)
                && frr.vtysh(&["show bgp summary json"]).is_ok()
        })
        .map_err(|e| LabError::Timeout {
            what: format!("FRR on {}", host.name()),
            after: UP_TIMEOUT,
            detail: format!("{e}\nzebra: {}\nbgpd: {}", frr.zebra.log(), frr.bgpd.log()),
        })?;
        Ok(frr)
    }

    /// Run vtysh commands (each one `-c`); returns stdout.
    pub fn vtysh(&self, cmds: &[&str]) -> Result<String> {
        let rd = self.run_dir.to_string_lossy().into_owned();
        let mut args = vec!["vtysh", "--vty_socket", &rd];
        for c in cmds {
            args.push("-c");
            args.push(c);
        }
        self.host.stdout(&args)
    }

    pub fn vtysh_json(&self, cmd: &str) -> Result<Value> {
        json(cmd, &self.vtysh(&[cmd])?)
    }

    /// Apply configuration lines (`configure terminal`, then each line).
    pub fn configure(&self, lines: &[&str]) -> Result<String> {
        let mut cmds = vec!["configure terminal"];
        cmds.extend_from_slice(lines);
        self.vtysh(&cmds)
    }

    /// `show bgp summary json`.
    pub fn bgp_summary_json(&self) -> Result<Value> {
        self.vtysh_json("show bgp summary json")
    }

    /// BGP table: `show bgp ipv4|ipv6 unicast [PREFIX] json` (family from the prefix).
    pub fn routes_json(&self, prefix: Option<&str>) -> Result<Value> {
        match prefix {
            Some(p) if p.contains(':') => {
                self.vtysh_json(&format!("show bgp ipv6 unicast {p} json"))
            }
            Some(p) => self.vtysh_json(&format!("show bgp ipv4 unicast {p} json")),
            None => self.vtysh_json("show bgp ipv4 unicast json"),
        }
    }

    /// zebra's RIB: `show ip|ipv6 route [PREFIX] json`.
    pub fn rib_json(&self, prefix: Option<&str>) -> Result<Value> {
        match prefix {
            Some(p) if p.contains(':') => self.vtysh_json(&format!("show ipv6 route {p} json")),
            Some(p) => self.vtysh_json(&format!("show ip route {p} json")),
            None => self.vtysh_json("show ip route json"),
        }
    }

    /// BGP state of a neighbor ("Established", "Active", ...).
    pub fn neighbor_state(&self, addr: &str) -> Option<String> {
        let v = self
            .vtysh_json(&format!("show bgp neighbors {addr} json"))
            .ok()?;
        v[addr]["bgpState"].as_str().map(str::to_string)
    }

    /// Number of neighbors in Established state (including dynamic ones).
    pub fn established_count(&self) -> usize {
        let Ok(v) = self.vtysh_json("show bgp neighbors json") else {
            return 0;
        };
        v.as_object()
            .map(|m| {
                m.values()
                    .filter(|n| n["bgpState"].as_str() == Some("Established"))
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn wait_established(&self, addr: &str, timeout: Duration) -> Result<Duration> {
        try_wait_until(
            timeout,
            &format!("BGP session to {addr} established"),
            || self.neighbor_state(addr).as_deref() == Some("Established"),
        )
        .map_err(|e| LabError::Timeout {
            what: format!("FRR on {}: session to {addr}", self.host.name()),
            after: timeout,
            detail: format!("{e}; bgpd log:\n{}", self.bgpd.log()),
        })
    }

    /// Paths FRR has for `prefix` in its BGP table (empty if none).
    pub fn paths(&self, prefix: &str) -> Vec<Value> {
        self.routes_json(Some(prefix))
            .ok()
            .and_then(|v| v["paths"].as_array().cloned())
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        let bfdd = self.bfdd.as_ref().map(|p| p.log()).unwrap_or_default();
        format!(
            "zebra:\n{}\nbgpd:\n{}\nbfdd:\n{bfdd}",
            self.zebra.log(),
            self.bgpd.log()
        )
    }

    /// `show bfd peers json`: the session with `peer`, if bfdd knows it.
    pub fn bfd_peer(&self, peer: &str) -> Option<Value> {
        let v = self.vtysh_json("show bfd peers json").ok()?;
        v.as_array()?
            .iter()
            .find(|p| p["peer"].as_str() == Some(peer))
            .cloned()
    }
}

// ---------------------------------------------------------------- BIRD

/// A BIRD 2 BGP neighbor (static address or `neighbor range`).
#[derive(Debug, Clone, Default)]
pub struct BirdNeighbor {
    /// An address, or a prefix when `range` is true.
    pub address: String,
    pub range: bool,
    pub remote_as: u32,
    pub password: Option<String>,
    pub passive: bool,
}

#[derive(Debug, Clone)]
pub struct BirdConfig {
    pub asn: u32,
    pub router_id: String,
    pub neighbors: Vec<BirdNeighbor>,
    /// Prefixes announced (static blackholes exported to BGP, not to the kernel).
    pub networks: Vec<String>,
    /// (keepalive, hold) seconds.
    pub timers: (u16, u16),
    /// Raw lines appended at the end.
    pub extra: Vec<String>,
}

impl BirdConfig {
    pub fn new(asn: u32, router_id: &str) -> BirdConfig {
        BirdConfig {
            asn,
            router_id: router_id.to_string(),
            neighbors: Vec::new(),
            networks: Vec::new(),
            timers: (3, 9),
            extra: Vec::new(),
        }
    }

    pub fn neighbor(mut self, address: &str, remote_as: u32) -> BirdConfig {
        self.neighbors.push(BirdNeighbor {
            address: address.to_string(),
            remote_as,
            ..BirdNeighbor::default()
        });
        self
    }

    pub fn neighbor_range(mut self, range: &str, remote_as: u32) -> BirdConfig {
        self.neighbors.push(BirdNeighbor {
            address: range.to_string(),
            range: true,
            remote_as,
            ..BirdNeighbor::default()
        });
        self
    }

    pub fn network(mut self, prefix: &str) -> BirdConfig {
        self.networks.push(prefix.to_string());
        self
    }

    /// Protocol name of the `i`-th neighbor (as in `birdc show protocols`).
    pub fn protocol_name(i: usize) -> String {
        format!("peer{i}")
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "router id {};", self.router_id);
        let _ = writeln!(s, "log stderr all;");
        let _ = writeln!(s, "protocol device {{ scan time 10; }}");
        for fam in ["ipv4", "ipv6"] {
            // `merge paths` turns equal BGP paths into one multipath kernel route (ECMP).
            let _ = writeln!(
                s,
                "protocol kernel k{fam} {{ {fam} {{ import none; export where source = RTS_BGP; }}; merge paths yes; }}"
            );
            let routes: String = self
                .networks
                .iter()
                .filter(|n| n.contains(':') == (fam == "ipv6"))
                .map(|n| format!(" route {n} blackhole;"))
                .collect();
            let _ = writeln!(s, "protocol static s{fam} {{ {fam};{routes} }}");
        }
        for (i, n) in self.neighbors.iter().enumerate() {
            let fam = if n.address.contains(':') {
                "ipv6"
            } else {
                "ipv4"
            };
            let _ = writeln!(s, "protocol bgp {} {{", BirdConfig::protocol_name(i));
            let _ = writeln!(s, "  local as {};", self.asn);
            if n.range {
                let _ = writeln!(s, "  neighbor range {} as {};", n.address, n.remote_as);
                let _ = writeln!(s, "  dynamic name \"dyn{i}_\";");
            } else {
                let _ = writeln!(s, "  neighbor {} as {};", n.address, n.remote_as);
            }
            let _ = writeln!(
                s,
                "  hold time {}; keepalive time {}; connect retry time 1;",
                self.timers.1, self.timers.0
            );
            if let Some(p) = &n.password {
                let _ = writeln!(s, "  password \"{p}\";");
            }
            if n.passive {
                let _ = writeln!(s, "  passive on;");
            }
            let _ = writeln!(s, "  {fam} {{ import all; export all; }};");
            let _ = writeln!(s, "}}");
        }
        for line in &self.extra {
            let _ = writeln!(s, "{line}");
        }
        s
    }
}

/// A BIRD 2 daemon in the foreground.
#[derive(Debug)]
pub struct Bird {
    host: Host,
    ctl: String,
    proc: Proc,
}

impl Bird {
    pub fn start(host: &Host, cfg: &BirdConfig) -> Result<Bird> {
        let conf = host.write_file("bird.conf", &cfg.render())?;
        let ctl = host
            .dir()
            .join(format!("{}-bird.ctl", host.name()))
            .to_string_lossy()
            .into_owned();
        let pid = format!("{ctl}.pid");
        let conf = conf.to_string_lossy().into_owned();
        let proc =
            host.spawn_labeled("bird", &["bird", "-f", "-c", &conf, "-s", &ctl, "-P", &pid])?;
        let bird = Bird {
            host: host.clone(),
            ctl,
            proc,
        };
        try_wait_until(UP_TIMEOUT, "BIRD to answer birdc", || {
            bird.birdc("show status")
                .map(|o| o.contains("Daemon is up and running"))
                .unwrap_or(false)
        })
        .map_err(|e| LabError::Timeout {
            what: format!("BIRD on {}", host.name()),
            after: UP_TIMEOUT,
            detail: format!("{e}; log:\n{}", bird.proc.log()),
        })?;
        Ok(bird)
    }

    /// `birdc -s CTL <cmd>` (cmd split on whitespace).
    pub fn birdc(&self, cmd: &str) -> Result<String> {
        let mut args = vec!["birdc", "-s", &self.ctl];
        args.extend(cmd.split_whitespace());
        self.host.stdout(&args)
    }

    /// `birdc show route all`.
    pub fn show_route_all(&self) -> Result<String> {
        self.birdc("show route all")
    }

    /// Does BIRD's table hold a route for exactly `prefix`?
    pub fn has_route(&self, prefix: &str) -> bool {
        self.birdc(&format!("show route {prefix}"))
            .map(|o| o.lines().any(|l| l.starts_with(prefix)))
            .unwrap_or(false)
    }

    /// State column + info of a protocol in `show protocols` ("up Established", ...).
    pub fn protocol_info(&self, name: &str) -> Option<String> {
        let out = self.birdc("show protocols").ok()?;
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
    }

    pub fn wait_established(&self, protocol: &str, timeout: Duration) -> Result<Duration> {
        try_wait_until(
            timeout,
            &format!("BIRD protocol {protocol} established"),
            || {
                self.protocol_info(protocol)
                    .is_some_and(|i| i.contains("Established"))
            },
        )
        .map_err(|e| LabError::Timeout {
            what: format!("BIRD on {}: {protocol}", self.host.name()),
            after: timeout,
            detail: format!("{e}; log:\n{}", self.proc.log()),
        })
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

// ---------------------------------------------------------------- GoBGP

#[derive(Debug, Clone)]
pub struct GobgpConfig {
    pub asn: u32,
    pub router_id: String,
    /// (address, remote AS)
    pub neighbors: Vec<(String, u32)>,
    /// Dynamic neighbors: (prefix, remote AS).
    pub dynamic: Vec<(String, u32)>,
    /// Don't dial (gobgpd's first dial comes only after 5-9 s: let the other side dial).
    pub passive: bool,
    pub timers: (u16, u16),
}

impl GobgpConfig {
    pub fn new(asn: u32, router_id: &str) -> GobgpConfig {
        GobgpConfig {
            asn,
            router_id: router_id.to_string(),
            neighbors: Vec::new(),
            dynamic: Vec::new(),
            passive: true,
            timers: (3, 9),
        }
    }

    pub fn neighbor(mut self, address: &str, remote_as: u32) -> GobgpConfig {
        self.neighbors.push((address.to_string(), remote_as));
        self
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = 179\n",
            self.asn, self.router_id
        );
        let neighbor_body = |s: &mut String, prefix: &str, v6: bool| {
            let _ = writeln!(
                s,
                "  [{prefix}.timers.config]\n    hold-time = {}\n    keepalive-interval = {}\n    connect-retry = 1",
                self.timers.1, self.timers.0
            );
            let _ = writeln!(
                s,
                "  [{prefix}.transport.config]\n    passive-mode = {}",
                self.passive
            );
            let afi = if v6 { "ipv6-unicast" } else { "ipv4-unicast" };
            let _ = writeln!(
                s,
                "  [[{prefix}.afi-safis]]\n    [{prefix}.afi-safis.config]\n      afi-safi-name = \"{afi}\"\n"
            );
        };
        for (addr, asn) in &self.neighbors {
            let _ = writeln!(
                s,
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{addr}\"\n    peer-as = {asn}"
            );
            neighbor_body(&mut s, "neighbors", addr.contains(':'));
        }
        for (i, (prefix, asn)) in self.dynamic.iter().enumerate() {
            let _ = writeln!(
                s,
                "[[peer-groups]]\n  [peer-groups.config]\n    peer-group-name = \"dyn{i}\"\n    peer-as = {asn}"
            );
            neighbor_body(&mut s, "peer-groups", prefix.contains(':'));
            let _ = writeln!(
                s,
                "[[dynamic-neighbors]]\n  [dynamic-neighbors.config]\n    prefix = \"{prefix}\"\n    peer-group = \"dyn{i}\"\n"
            );
        }
        s
    }
}

/// gobgpd with its gRPC API on 127.0.0.1:50051 of the host namespace.
#[derive(Debug)]
pub struct Gobgp {
    host: Host,
    proc: Proc,
}

impl Gobgp {
    pub fn start(host: &Host, cfg: &GobgpConfig) -> Result<Gobgp> {
        let conf = host.write_file("gobgpd.toml", &cfg.render())?;
        let conf = conf.to_string_lossy().into_owned();
        let proc = host.spawn_labeled(
            "gobgpd",
            &[
                "gobgpd",
                "-f",
                &conf,
                "-p",
                "--api-hosts",
                "127.0.0.1:50051",
                "--pprof-disable",
            ],
        )?;
        let g = Gobgp {
            host: host.clone(),
            proc,
        };
        try_wait_until(UP_TIMEOUT, "gobgpd to answer gobgp", || {
            g.gobgp(&["global"])
                .map(|o| o.contains(&cfg.router_id))
                .unwrap_or(false)
        })
        .map_err(|e| LabError::Timeout {
            what: format!("gobgpd on {}", host.name()),
            after: UP_TIMEOUT,
            detail: format!("{e}; log:\n{}", g.proc.log()),
        })?;
        Ok(g)
    }

    /// `gobgp -u 127.0.0.1 -p 50051 ARGS...`
    pub fn gobgp(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["gobgp", "-u", "127.0.0.1", "-p", "50051"];
        a.extend_from_slice(args);
        self.host.stdout(&a)
    }

    /// `gobgp neighbor -j`.
    pub fn neighbors_json(&self) -> Result<Value> {
        json("gobgp neighbor -j", &self.gobgp(&["neighbor", "-j"])?)
    }

    /// Session state of `addr` as gobgp reports it (e.g. "established").
    pub fn neighbor_state(&self, addr: &str) -> Option<String> {
        let v = self.neighbors_json().ok()?;
        v.as_array()?
            .iter()
            .find(|n| n["conf"]["neighbor_address"].as_str() == Some(addr))
            .and_then(|n| {
                let st = &n["state"]["session_state"];
                // gobgp -j prints the API enum: a number (or its name in other versions).
                st.as_str().map(str::to_lowercase).or_else(|| {
                    let names = [
                        "unknown",
                        "idle",
                        "connect",
                        "active",
                        "opensent",
                        "openconfirm",
                        "established",
                    ];
                    names.get(st.as_u64()? as usize).map(|s| s.to_string())
                })
            })
    }

    /// `gobgp global rib -a ipv4|ipv6 -j`.
    pub fn rib_json(&self, v6: bool) -> Result<Value> {
        let af = if v6 { "ipv6" } else { "ipv4" };
        json(
            "gobgp global rib -j",
            &self.gobgp(&["global", "rib", "-a", af, "-j"])?,
        )
    }

    /// Announce `prefix` with ORIGIN IGP (gobgp's default would be incomplete).
    pub fn announce(&self, prefix: &str) -> Result<()> {
        let af = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.gobgp(&["global", "rib", "add", prefix, "origin", "igp", "-a", af])
            .map(|_| ())
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

// ---------------------------------------------------------------- exabgp

#[derive(Debug, Clone)]
pub struct ExabgpConfig {
    pub local_as: u32,
    pub router_id: String,
    pub local_address: String,
    pub peer_address: String,
    pub peer_as: u32,
    pub hold_time: u16,
    /// Announced with `next-hop self`.
    pub routes: Vec<String>,
    pub passive: bool,
}

/// exabgp in the foreground; a helper process appends everything exabgp's API emits
/// (JSON: updates, neighbor state changes) to a file.
#[derive(Debug)]
pub struct Exabgp {
    proc: Proc,
    received: PathBuf,
}

const EXA_RECEIVER: &str = "import sys
out = open(sys.argv[1], 'a')
out.write('{\"lab\": \"ready\"}\\n')
out.flush()
for line in sys.stdin:
    out.write(line)
    out.flush()
";

impl Exabgp {
    pub fn start(host: &Host, cfg: &ExabgpConfig) -> Result<Exabgp> {
        let script = host.write_file("exa-recv.py", EXA_RECEIVER)?;
        let received = host
            .dir()
            .join(format!("{}-exa-received.jsonl", host.name()));
        let fam = if cfg.peer_address.contains(':') {
            "ipv6 unicast;"
        } else {
            "ipv4 unicast;"
        };
        let routes: String = cfg
            .routes
            .iter()
            .map(|r| format!("    route {r} next-hop self;\n"))
            .collect();
        let conf = format!(
            "process recv {{\n  run /usr/bin/python3 {} {};\n  encoder json;\n}}\n\
             neighbor {} {{\n  router-id {};\n  local-address {};\n  local-as {};\n  peer-as {};\n  \
             hold-time {};\n  passive {};\n  family {{ {fam} }}\n  \
             api {{ processes [ recv ]; receive {{ parsed; update; }} neighbor-changes; }}\n  \
             static {{\n{routes}  }}\n}}\n",
            script.display(),
            received.display(),
            cfg.peer_address,
            cfg.router_id,
            cfg.local_address,
            cfg.local_as,
            cfg.peer_as,
            cfg.hold_time,
            cfg.passive,
        );
        let conf = host.write_file("exabgp.conf", &conf)?;
        let conf = conf.to_string_lossy().into_owned();
        let proc = host.spawn_labeled(
            "exabgp",
            &[
                "env",
                "exabgp.daemon.daemonize=false",
                "exabgp.daemon.user=root",
                "exabgp.log.destination=stdout",
                "exabgp.api.cli=false",
                "exabgp",
                &conf,
            ],
        )?;
        proc.wait_for_log("loaded new configuration successfully", UP_TIMEOUT)?;
        let e = Exabgp { proc, received };
        try_wait_until(UP_TIMEOUT, "exabgp's API process", || {
            e.raw().contains("\"lab\": \"ready\"")
        })?;
        Ok(e)
    }

    fn raw(&self) -> String {
        std::fs::read_to_string(&self.received).unwrap_or_default()
    }

    /// Every JSON message exabgp's API emitted so far.
    pub fn messages(&self) -> Vec<Value> {
        self.raw()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("lab").is_none())
            .collect()
    }

    /// Last neighbor state reported ("up", "down", "connected"...).
    pub fn state(&self) -> Option<String> {
        self.messages()
            .iter()
            .rev()
            .find(|m| m["type"] == "state")
            .and_then(|m| m["neighbor"]["state"].as_str().map(str::to_string))
    }

    /// Prefixes currently announced to exabgp (announces minus withdraws, in order).
    pub fn routes(&self) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        for m in self.messages() {
            let update = &m["neighbor"]["message"]["update"];
            for (fam, nhs) in update["announce"].as_object().into_iter().flatten() {
                let _ = fam;
                for prefixes in nhs.as_object().into_iter().flat_map(|o| o.values()) {
                    for p in prefixes.as_array().into_iter().flatten() {
                        if let Some(n) = p["nlri"].as_str() {
                            set.insert(n.to_string());
                        }
                    }
                }
            }
            for (_fam, prefixes) in update["withdraw"].as_object().into_iter().flatten() {
                for p in prefixes.as_array().into_iter().flatten() {
                    if let Some(n) = p["nlri"].as_str() {
                        set.remove(n);
                    }
                }
            }
        }
        set
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

// ---------------------------------------------------------------- keepalived

#[derive(Debug, Clone)]
pub struct VrrpConfig {
    pub virtual_router_id: u8,
    pub priority: u8,
    /// Seconds; below 1 needs VRRPv3 (used always).
    pub advert_int: f64,
    /// VIPs with prefix length, e.g. "10.10.100.200/24".
    pub vips: Vec<String>,
    pub preempt: bool,
}

/// keepalived (VRRP only) in the foreground on the host's `eth0`.
#[derive(Debug)]
pub struct Keepalived {
    host: Host,
    proc: Proc,
    vips: Vec<String>,
}

impl Keepalived {
    pub fn start(host: &Host, cfg: &VrrpConfig) -> Result<Keepalived> {
        let vips: String = cfg
            .vips
            .iter()
            .map(|v| format!("    {v} dev {}\n", host.ifname()))
            .collect();
        let conf = format!(
            "global_defs {{\n  router_id {}\n  vrrp_version 3\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface {}\n  virtual_router_id {}\n  \
             priority {}\n  advert_int {}\n{}  virtual_ipaddress {{\n{vips}  }}\n}}\n",
            host.name(),
            host.ifname(),
            cfg.virtual_router_id,
            cfg.priority,
            cfg.advert_int,
            if cfg.preempt { "" } else { "  nopreempt\n" },
        );
        let conf = host.write_file("keepalived.conf", &conf)?;
        let base = host.dir().join(format!("{}-keepalived", host.name()));
        let b = base.to_string_lossy().into_owned();
        let (p, r, c) = (
            format!("{b}.pid"),
            format!("{b}-vrrp.pid"),
            format!("{b}-chk.pid"),
        );
        let conf = conf.to_string_lossy().into_owned();
        let proc = host.spawn_labeled(
            "keepalived",
            &[
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-P",
                "-f",
                &conf,
                "-p",
                &p,
                "-r",
                &r,
                "-c",
                &c,
            ],
        )?;
        proc.wait_for_log("Startup complete", UP_TIMEOUT)?;
        Ok(Keepalived {
            host: host.clone(),
            proc,
            vips: cfg.vips.clone(),
        })
    }

    /// Does this host currently hold every VIP (i.e. it is MASTER)?
    pub fn holds_vips(&self) -> bool {
        let Ok(out) = self
            .host
            .ip_json(&["addr", "show", "dev", self.host.ifname()])
        else {
            return false;
        };
        self.vips.iter().all(|v| {
            let ip = v.split('/').next().unwrap_or(v);
            out.contains(&format!("\"local\":\"{ip}\""))
        })
    }

    pub fn is_master(&self) -> bool {
        self.proc
            .log()
            .lines()
            .rev()
            .find(|l| l.contains("Entering") && l.contains("STATE"))
            .is_some_and(|l| l.contains("MASTER"))
    }

    /// Graceful stop (SIGTERM: keepalived sends priority 0 so a backup takes over at once).
    pub fn stop(&self) {
        self.proc.kill(Signal::Term);
        self.proc.wait_timeout(Duration::from_secs(5));
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

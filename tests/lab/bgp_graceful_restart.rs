//! BGP graceful restart (RFC 4724) with lbd as the restarting speaker and FRR 8.4 (and BIRD
//! 2.0) as the helper: their default mode for every neighbor, nothing to configure on the
//! router.
//!
//! The lab: router `10.10.100.1` (FRR or BIRD) with a client network `10.10.200.0/24` behind it;
//! node1 `10.10.100.3` runs lbd with a static service `172.19.100.10` in a BGP pool and
//! holds the IP on `lo` with a TCP server on port 8080 (the kube-proxy stand-in). While lbd
//! restarts, a FIB probe reads the router's kernel route for the /32 every 10 ms (and every
//! change the kernel announces) and the client opens a TCP connection to the VIP through
//! the router every 10 ms.
//!
//! - A planned restart (SIGUSR2, how lbd is told "stopping to restart" outside systemd;
//!   under systemd a `restart` job) and a crash (SIGKILL), each followed by a new lbd: the
//!   route and its next hop never leave the router's FIB, no connection fails, FRR keeps the
//!   path as stale meanwhile, receives End-of-RIB from the new lbd and no longer marks the
//!   path stale; a second service removed from lb.toml meanwhile is not sent again and FRR
//!   drops it at the End-of-RIB.
//! - A crash the router does not notice (node1's FIN and RST dropped): the old session is
//!   still Established when the new lbd connects; the same verdict.
//! - A deliberate stop (SIGTERM without the restart mark): the route leaves the FIB at once,
//!   with a Cease carrying lbd's shutdown communication.
//! - BIRD as the helper: the same planned restart, with SIGUSR2 followed at once by SIGTERM
//!   (a supervisor that marks the restart, then stops lbd its usual way).
//!
//! Each test prints its measurement (FIB samples, gaps, connections); docs/bench/bgp.md
//! records them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lb_testkit::lab::peers::{Bird, BirdConfig, Frr, FrrConfig, kernel_nexthops};
use lb_testkit::lab::probe::{self, ReachMode, RunningProbe};
use lb_testkit::lab::{Host, Lab, Proc, Signal, try_wait_until, wait_until};
use lb_testkit::lbd::lbd_binary;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const ROUTER: &str = "10.10.100.1";
const NODE: &str = "10.10.100.3";
const VIP: &str = "172.19.100.10";
const PREFIX: &str = "172.19.100.10/32";
/// A second service, removed from lb.toml while lbd is away: the new lbd does not send it,
/// so FRR drops it at our End-of-RIB (the stale routes that were not refreshed).
const VIP2: &str = "172.19.100.11";
const PREFIX2: &str = "172.19.100.11/32";
/// lbd's `restart_time`, to see it arrive at FRR.
const RESTART_TIME: u64 = 90;
/// The probes run until stopped; this only bounds a forgotten one.
const PROBE_MAX: Duration = Duration::from_secs(300);
const EVERY: Duration = Duration::from_millis(10);

/// The router's BGP daemon, our graceful restart helper.
enum Helper {
    Frr(Frr),
    Bird(Bird),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Router {
    Frr,
    Bird,
}

struct GrLab {
    _lab: Lab,
    router: Host,
    client: Host,
    node: Host,
    helper: Helper,
    config: PathBuf,
    state: PathBuf,
    _server: Proc,
}

fn gr_lab(name: &str, kind: Router) -> GrLab {
    let lab = Lab::new(name);
    let router = lab.router("router", &[&format!("{ROUTER}/24")]);
    let seg = lab.segment().unwrap();
    router.attach(&seg, "eth1", &["10.10.200.1/24"]).unwrap();
    let client = lab.host("client", &[]);
    client.attach(&seg, "eth1", &["10.10.200.9/24"]).unwrap();
    client
        .run(&["ip", "route", "add", "default", "via", "10.10.200.1"])
        .unwrap();
    let node = lab.node("node1", &[&format!("{NODE}/24")]);
    node.run(&["ip", "route", "add", "10.10.200.0/24", "via", ROUTER])
        .unwrap();
    // The VIP on lo and a server on it: what kube-proxy provides on a real node.
    node.add_lo_ip(PREFIX).unwrap();
    let server = node
        .spawn_labeled(
            "server",
            &[
                "socat",
                &format!("TCP-LISTEN:8080,bind={VIP},reuseaddr,fork"),
                "SYSTEM:echo node1",
            ],
        )
        .unwrap();
    wait_until(T, "the server listening on the VIP", || {
        node.sh(&format!("ss -ltn | grep -q '{VIP}:8080'")).is_ok()
    });
    let helper = match kind {
        Router::Frr => Helper::Frr(
            Frr::start(
                &router,
                &FrrConfig::new(64500, ROUTER).neighbor(NODE, 64500),
            )
            .unwrap(),
        ),
        Router::Bird => {
            let mut cfg = BirdConfig::new(64500, ROUTER).neighbor(NODE, 64500);
            // iBGP next hops resolve recursively: BIRD needs the connected route.
            cfg.extra.push("protocol direct { ipv4; }".into());
            Helper::Bird(Bird::start(&router, &cfg).unwrap())
        }
    };
    let state = node.owned_dir("state", "root:root").unwrap();
    let g = GrLab {
        _lab: lab,
        router,
        client,
        node,
        helper,
        config: PathBuf::new(),
        state,
        _server: server,
    };
    GrLab {
        config: g.write_config(&[VIP, VIP2]),
        ..g
    }
}

impl GrLab {
    /// lb.toml with a static service for each of `vips`; returns its path.
    fn write_config(&self, vips: &[&str]) -> PathBuf {
        let mut text = format!(
            r#"
[node]
name = "node1"
state_dir = "{}"

[[pool]]
name = "bgp-pool"
protocol = "bgp"
addresses = ["172.19.100.0/24"]

[[bgp_peer]]
my_asn = 64500
peer_asn = 64500
address = "{ROUTER}"
hold_time = "9s"
graceful_restart = true
restart_time = "{RESTART_TIME}s"
"#,
            self.state.display()
        );
        for (i, vip) in vips.iter().enumerate() {
            text += &format!("\n[[service]]\nname = \"web{i}\"\nip = \"{vip}\"\n");
        }
        self.node.write_file("lb.toml", &text).unwrap()
    }

    /// lbd on node1 (`env` execs it: the PID is lbd's). Never the machine's system bus.
    fn start_lbd(&self) -> Proc {
        let bin = lbd_binary();
        self.node
            .spawn_labeled(
                "lbd",
                &[
                    "env",
                    "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent",
                    "RUST_LOG=info,lb::bgp=debug",
                    bin.to_str().unwrap(),
                    "--config",
                    self.config.to_str().unwrap(),
                ],
            )
            .unwrap()
    }

    fn frr(&self) -> &Frr {
        match &self.helper {
            Helper::Frr(f) => f,
            Helper::Bird(_) => panic!("an FRR check on the BIRD lab"),
        }
    }

    /// FRR's view of the session with lbd (`show bgp neighbors NODE json`).
    fn neighbor(&self) -> Value {
        self.frr()
            .vtysh_json(&format!("show bgp neighbors {NODE} json"))
            .map(|v| v[NODE].clone())
            .unwrap_or_default()
    }

    /// The one path FRR has for `prefix` (Null if none).
    fn path(&self, prefix: &str) -> Value {
        self.frr()
            .paths(prefix)
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// BIRD's `show protocols all` for the session with lbd.
    fn bird_protocol(bird: &Bird) -> String {
        bird.birdc(&format!(
            "show protocols all {}",
            BirdConfig::protocol_name(0)
        ))
        .unwrap_or_default()
    }

    /// The helper has a path for `prefix` from node1.
    fn has_path(&self, prefix: &str) -> bool {
        match &self.helper {
            Helper::Frr(_) => self.path(prefix)["nexthops"][0]["ip"] == NODE,
            Helper::Bird(b) => b
                .birdc(&format!("show route {prefix} all"))
                .is_ok_and(|o| o.contains(&format!("BGP.next_hop: {NODE}"))),
        }
    }

    /// The session is up, graceful restart negotiated, our End-of-RIB received and the
    /// VIP's path fresh (not stale). The second value: what the helper said.
    fn fresh(&self) -> (bool, String) {
        match &self.helper {
            Helper::Frr(_) => {
                let (n, p) = (self.neighbor(), self.path(PREFIX));
                let ok = n["bgpState"] == "Established"
                    && eor_received(&n)
                    && p["nexthops"][0]["ip"] == NODE
                    && !is_stale(&p);
                (ok, format!("neighbor: {n}\npath: {p}"))
            }
            Helper::Bird(b) => {
                // BIRD shows "Neighbor GR: ..." on the channel until End-of-RIB ends the
                // graceful restart.
                let proto = Self::bird_protocol(b);
                let ok = proto.contains("BGP state:          Established")
                    && !proto.contains("graceful restart active")
                    && !proto.contains("Neighbor GR:")
                    && self.has_path(PREFIX);
                (ok, proto)
            }
        }
    }

    /// The session is down and the helper keeps our paths (stale, waiting for us).
    fn kept_stale(&self) -> (bool, String) {
        match &self.helper {
            Helper::Frr(_) => {
                let (p, p2) = (self.path(PREFIX), self.path(PREFIX2));
                let ok =
                    is_stale(&p) && is_stale(&p2) && self.neighbor()["bgpState"] != "Established";
                (ok, format!("path: {p}\nsecond: {p2}"))
            }
            Helper::Bird(b) => {
                let proto = Self::bird_protocol(b);
                let ok = !proto.contains("BGP state:          Established")
                    && proto.contains("Neighbor graceful restart active")
                    && self.has_path(PREFIX)
                    && self.has_path(PREFIX2);
                (ok, proto)
            }
        }
    }

    /// Graceful restart negotiated with our restart time, R bit and F bit for IPv4, as the
    /// helper saw our OPEN.
    fn assert_negotiated(&self) {
        match &self.helper {
            Helper::Frr(_) => {
                let n = self.neighbor();
                let gr = &n["gracefulRestartInfo"];
                assert_eq!(gr["remoteGrMode"], "Restart", "{gr}");
                assert_eq!(gr["rBit"], true, "R bit of a freshly started lbd: {gr}");
                assert_eq!(
                    gr["timers"]["receivedRestartTimer"].as_u64(),
                    Some(RESTART_TIME),
                    "{gr}"
                );
                assert_eq!(gr["ipv4Unicast"]["fBit"], true, "{gr}");
            }
            Helper::Bird(b) => {
                let proto = Self::bird_protocol(b);
                let theirs = proto
                    .split("Neighbor capabilities")
                    .nth(1)
                    .unwrap_or_default();
                for line in [
                    "Graceful restart".to_string(),
                    format!("Restart time: {RESTART_TIME}"),
                    "Restart recovery".to_string(),
                    "AF preserved: ipv4 ipv6".to_string(),
                ] {
                    assert!(theirs.contains(&line), "no `{line}` in:\n{proto}");
                }
            }
        }
    }

    fn helper_log(&self) -> String {
        match &self.helper {
            Helper::Frr(f) => f.log(),
            Helper::Bird(b) => b.log(),
        }
    }

    /// The router's FIB routes the VIP to node1, and only to it.
    fn in_fib(&self) -> bool {
        kernel_nexthops(&self.router, PREFIX).is_ok_and(|n| n == [NODE])
    }

    /// Until the helper has our End-of-RIB and a fresh path, in the router's FIB.
    fn wait_announced(&self, lbd: &Proc) {
        let mut last = String::new();
        let r = try_wait_until(
            T,
            "the route fresh at the router after our End-of-RIB",
            || {
                let (ok, said) = self.fresh();
                last = said;
                ok && self.in_fib()
            },
        );
        if let Err(e) = r {
            panic!("{e}\n{last}\nlbd:\n{}\n{}", lbd.log(), self.helper_log());
        }
    }

    /// Connections that succeeded so far.
    fn connected(reach: &RunningProbe) -> usize {
        reach.snapshot().iter().filter(|r| r.is_answer()).count()
    }

    /// Wait for `n` more successful connections than now (traffic flows at this point).
    fn more_connections(&self, reach: &RunningProbe, n: usize) {
        let before = Self::connected(reach);
        wait_until(T, "connections to the VIP succeed", || {
            Self::connected(reach) >= before + n
        });
    }
}

/// FRR received End-of-RIB for IPv4 unicast on the current session.
fn eor_received(neighbor: &Value) -> bool {
    neighbor["gracefulRestartInfo"]["ipv4Unicast"]["endOfRibStatus"]["endOfRibRecv"] == true
}

fn is_stale(path: &Value) -> bool {
    path["stale"] == true
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    /// SIGUSR2: "stopping to restart" (what a systemd `restart` job is told apart by).
    Planned,
    /// SIGUSR2 and at once the SIGTERM a supervisor sends to stop anything: the mark holds
    /// (the two arrive in that order; a SIGTERM after it changes nothing).
    PlannedThenTerm,
    /// SIGKILL: nothing sent, the kernel closes the connection.
    Crash,
    /// SIGKILL with node1 dropping its outgoing BGP FIN and RST segments (nft): the router
    /// learns nothing of the crash and still has the old session Established when the new
    /// lbd connects (RFC 4724 §4.2: it must then close the old one and keep the routes).
    /// FRR 8.4 answers the first new connection with Cease/Connection Collision Resolution,
    /// drops the old session keeping the routes stale, and takes lbd's next dial (~1 s later).
    CrashUnnoticed,
}

/// Restart lbd the `kind` way while probing, with `router` as the helper; returns the
/// measurement line.
fn restart_keeps_the_route(name: &str, router: Router, kind: Restart) -> String {
    let g = gr_lab(name, router);
    let lbd = g.start_lbd();
    g.wait_announced(&lbd);
    wait_until(T, "the second service in the router's FIB", || {
        kernel_nexthops(&g.router, PREFIX2).is_ok_and(|n| n == [NODE])
    });
    g.assert_negotiated();

    let fib = probe::fib(&g.router, PREFIX, PROBE_MAX, EVERY).unwrap();
    // 1 s per attempt: without a route the router refuses at once (ICMP unreachable); the
    // longer timeout only keeps a busy CI machine from failing a connection that works.
    let reach = probe::reach_with_timeout(
        &g.client,
        ReachMode::Tcp(8080),
        VIP.parse().unwrap(),
        PROBE_MAX,
        EVERY,
        Duration::from_secs(1),
    )
    .unwrap();
    g.more_connections(&reach, 20);

    let stopped_at = now_epoch();
    match kind {
        Restart::Planned | Restart::PlannedThenTerm => {
            lbd.kill(Signal::Usr2);
            if kind == Restart::PlannedThenTerm {
                lbd.kill(Signal::Term);
            }
            let status = lbd.wait_timeout(T).expect("lbd exits on SIGUSR2");
            assert!(status.success(), "exit status {status:?}\n{}", lbd.log());
            let log = lbd.log();
            assert!(
                log.contains("stopping for a restart")
                    && log.contains("BGP session closed for the restart, without a NOTIFICATION"),
                "{log}"
            );
        }
        Restart::Crash => {
            lbd.kill(Signal::Kill);
            lbd.wait_timeout(T).expect("lbd dies on SIGKILL");
        }
        Restart::CrashUnnoticed => {
            g.node
                .sh("nft add table inet grfin && nft add chain inet grfin out \
                     '{ type filter hook output priority 0; }' && nft add rule inet grfin out \
                     'tcp sport 179 tcp flags & (fin | rst) != 0 drop' && nft add rule inet \
                     grfin out 'tcp dport 179 tcp flags & (fin | rst) != 0 drop'")
                .unwrap();
            lbd.kill(Signal::Kill);
            lbd.wait_timeout(T).expect("lbd dies on SIGKILL");
        }
    }
    let stale_seen = if kind == Restart::CrashUnnoticed {
        // The router saw nothing: the old session is still up.
        assert_eq!(g.neighbor()["bgpState"], "Established");
        now_epoch()
    } else {
        // The helper helps: the session is down, the paths stay, stale.
        let mut last = String::new();
        let r = try_wait_until(T, "the router keeps our paths as stale", || {
            let (ok, said) = g.kept_stale();
            last = said;
            ok
        });
        if let Err(e) = r {
            panic!("{e}\n{last}\n{}\nlbd:\n{}", g.helper_log(), lbd.log());
        }
        now_epoch()
    };
    assert!(g.in_fib(), "the route left the FIB while stale");

    // lbd stays away while the client makes 50 more connections through the router (at
    // least half a second: far longer than FRR takes to remove a withdrawn route, ~70 ms).
    g.more_connections(&reach, 50);
    assert!(g.in_fib(), "the route left the FIB while stale");
    // The second service leaves lb.toml while lbd is away.
    g.write_config(&[VIP]);
    let lbd2 = g.start_lbd();
    g.wait_announced(&lbd2);
    let fresh_at = now_epoch();
    g.assert_negotiated();
    // Not refreshed before End-of-RIB: the helper drops it (its RIB, the router's FIB).
    wait_until(
        T,
        "the removed service gone from the helper and the router's FIB",
        || !g.has_path(PREFIX2) && kernel_nexthops(&g.router, PREFIX2).is_ok_and(|n| n.is_empty()),
    );
    // Traffic after the restart, then the verdict.
    g.more_connections(&reach, 20);
    let fib = fib.stop_fib().unwrap();
    let reach = reach.stop().unwrap();

    let failed: Vec<_> = reach.records.iter().filter(|r| !r.ok).collect();
    let ok = reach.answers().count();
    let line = format!(
        "{router:?}, {kind:?} restart: FIB samples {} ({} while lbd was away; every {:?}, longest interval \
         {:?}), samples without the route or with another next hop: {}, kernel route \
         removals/changes: {}; TCP connections {ok} ok, {} failed; stop to stale at the \
         router {:.3} s, stop to fresh again (End-of-RIB) {:.3} s",
        fib.samples.len(),
        fib.samples
            .iter()
            .filter(|(t, _)| *t >= stopped_at && *t < fresh_at)
            .count(),
        EVERY,
        fib.longest_sample_interval(),
        fib.gaps(&[NODE]),
        fib.departures(&[NODE]).len(),
        failed.len(),
        stale_seen - stopped_at,
        fresh_at - stopped_at,
    );
    println!("{line}");
    // The samples cover the restart: before the stop, while lbd was away, after it was back.
    let within = |from: f64, to: f64| {
        fib.samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .count()
    };
    assert!(
        within(0.0, stopped_at) >= 5
            && within(stopped_at, fresh_at) >= 5
            && within(fresh_at, f64::MAX) >= 5,
        "the FIB samples do not cover the restart: {line}"
    );
    assert_eq!(fib.gaps(&[NODE]), 0, "{line}\n{:?}", fib.changes);
    assert!(
        fib.departures(&[NODE]).is_empty(),
        "{line}\n{:?}",
        fib.changes
    );
    assert!(failed.is_empty(), "{line}\nfailed: {failed:?}");
    assert!(ok >= 40, "{line}");
    // The new lbd sent its route and End-of-RIB: nothing left stale, the same next hop.
    let (fresh, said) = g.fresh();
    assert!(fresh, "{said}");
    line
}

#[test]
fn planned_restart_keeps_the_route_in_frrs_fib_and_every_connection_succeeds() {
    restart_keeps_the_route("grplan", Router::Frr, Restart::Planned);
}

#[test]
fn crash_and_start_keeps_the_route_in_frrs_fib_and_every_connection_succeeds() {
    restart_keeps_the_route("grcrash", Router::Frr, Restart::Crash);
}

#[test]
fn crash_unnoticed_by_the_router_and_start_keeps_the_route_in_frrs_fib() {
    restart_keeps_the_route("grcrash2", Router::Frr, Restart::CrashUnnoticed);
}

#[test]
fn sigusr2_then_sigterm_restart_keeps_the_route_in_birds_fib_and_every_connection_succeeds() {
    restart_keeps_the_route("grbird", Router::Bird, Restart::PlannedThenTerm);
}

#[test]
fn deliberate_stop_withdraws_the_route_from_frrs_fib_at_once() {
    let g = gr_lab("grstop", Router::Frr);
    let lbd = g.start_lbd();
    g.wait_announced(&lbd);
    let fib = probe::fib(&g.router, PREFIX, PROBE_MAX, EVERY).unwrap();
    wait_until(T, "the FIB probe sees the route", || {
        fib.stdout_path().metadata().is_ok_and(|m| m.len() > 0)
            && std::fs::read_to_string(fib.stdout_path())
                .is_ok_and(|s| s.contains(&format!("\"nexthops\": [\"{NODE}\"]")))
    });
    let stopped_at = now_epoch();
    lbd.kill(Signal::Term);
    wait_until(T, "the route gone from the router's FIB", || {
        kernel_nexthops(&g.router, PREFIX).is_ok_and(|n| n.is_empty())
    });
    let status = lbd.wait_timeout(T).expect("lbd exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", lbd.log());
    assert!(
        lbd.log()
            .contains("shutting down: handing over owned IPs, withdrawing BGP routes"),
        "{}",
        lbd.log()
    );
    let fib = fib.stop_fib().unwrap();
    let removed = fib
        .changes
        .iter()
        .find(|c| c.deleted)
        .map(|c| c.t)
        .or(fib.first_absent())
        .expect("the probe saw the route leave");
    let after = removed - stopped_at;
    println!("deliberate stop: SIGTERM to route gone from the router's FIB {after:.3} s");
    assert!(after < 3.0, "the route took {after:.3} s to leave");
    // A withdrawal and a Cease, not a graceful restart: nothing kept as stale.
    assert!(g.frr().paths(PREFIX).is_empty());
    let n = g.neighbor();
    assert!(
        n.to_string().contains("lbd shutting down"),
        "FRR saw the shutdown communication: {n}"
    );
}

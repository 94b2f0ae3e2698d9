//! A layer-2 cluster of real lbd hosts that grows and shrinks while it runs (issue 14): three
//! voters (`[cluster] voters`), members that join later with the voters' addresses and an
//! `address` of their own, static layer-2 Services on every host, a client that ARP-probes
//! every VIP, and a private D-Bus per host so `lbctl` reads each lbd.
//!
//! Hosts are `node1`, `node2`, … at `10.10.100.(10 + i)`; the client is `10.10.100.2`; the
//! VIPs are `10.10.100.200` upwards (one pool, one static Service each).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::dbus::Bus;
use crate::guide::lbctl_binary;
use crate::lab::{Host, Lab, Proc, Signal};
use crate::lbd::lbd_binary;

/// Generous bound on anything the tests wait for.
pub const T: Duration = Duration::from_secs(30);
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
pub const VOTERS: usize = 3;
const PORT: u16 = 7946;
const KEY: &str = "lab-grow-cluster-shared-secret-0123456789\n";

/// The name of host `i` (0-based).
pub fn name(i: usize) -> String {
    format!("node{}", i + 1)
}

fn addr(i: usize) -> String {
    format!("10.10.100.{}", 10 + i)
}

/// The `n` VIPs of a lab.
pub fn vips(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("10.10.100.{}", 200 + k)).collect()
}

/// One lbd host: its namespace, its own D-Bus, its lbd (while it runs).
pub struct GrowHost {
    pub host: Host,
    pub name: String,
    pub lbd: Option<Proc>,
    pub config: PathBuf,
    pub bus: Bus,
}

pub struct GrowLab {
    pub hosts: Vec<GrowHost>,
    pub client: Host,
    pub vips: Vec<String>,
    metrics: bool,
    // Keeps the namespaces alive; dropped last.
    lab: Lab,
}

/// One line of `lbctl cluster --json`'s member list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    /// "member" (a voter), "witness" or "joined" (admitted, no vote).
    pub role: String,
    pub healthy: bool,
}

/// `lbctl cluster --json`, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub leader: Option<String>,
    pub role: String,
    pub members: Vec<Listed>,
}

impl ClusterInfo {
    pub fn get(&self, name: &str) -> Option<&Listed> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// What `lbctl` printed and its exit code.
#[derive(Clone, Debug)]
pub struct LbctlRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

fn config(i: usize, state: &str, key: &str, vips: &[String], metrics: bool) -> String {
    let voters: Vec<String> = (0..VOTERS)
        .map(|v| format!("{} = \"{}:{PORT}\"", name(v), addr(v)))
        .collect();
    let address = if i < VOTERS {
        String::new()
    } else {
        format!("address = \"{}:{PORT}\"\n", addr(i))
    };
    let metrics = if metrics {
        format!("\n[metrics]\nlisten = \"{}:9464\"\n", addr(i))
    } else {
        String::new()
    };
    let pool: Vec<String> = vips.iter().map(|v| format!("\"{v}/32\"")).collect();
    let services: String = vips
        .iter()
        .enumerate()
        .map(|(k, ip)| format!("\n[[service]]\nname = \"vip-{k}\"\nip = \"{ip}\"\nassign = true\n"))
        .collect();
    format!(
        "[node]\nname = \"{}\"\nstate_dir = \"{state}\"\n\n[cluster]\nvoters = {{ {} }}\n{address}secret_file = \"{key}\"\n\n[layer2]\ngratuitous_count = 3\ngratuitous_interval = \"100ms\"\n{metrics}\n[[pool]]\nname = \"l2\"\nprotocol = \"layer2\"\naddresses = [{}]\n{services}",
        name(i),
        voters.join(", "),
        pool.join(", "),
    )
}

impl GrowLab {
    /// A lab named `prefix` with the client and `hosts` lbd hosts started (the first
    /// [`VOTERS`] vote), `n_vips` static layer-2 Services; `metrics`: each lbd serves
    /// `/metrics` on its own address, port 9464.
    pub fn start(prefix: &str, hosts: usize, n_vips: usize, metrics: bool) -> GrowLab {
        let lab = Lab::new(prefix);
        let client = lab.host("client", &["10.10.100.2/24"]);
        let mut g = GrowLab {
            hosts: Vec::new(),
            client,
            vips: vips(n_vips),
            metrics,
            lab,
        };
        for _ in 0..hosts {
            g.add_host();
        }
        g
    }

    /// Builds the next host (`node{n+1}`), writes its lb.toml and starts its lbd; returns
    /// its index. A host after the voters is a member: it has the voters' addresses, the key
    /// and its own `address`, nothing else about the cluster.
    pub fn add_host(&mut self) -> usize {
        let i = self.hosts.len();
        let host = self.lab.node(&name(i), &[&format!("{}/24", addr(i))]);
        let key = host.write_file("cluster.key", KEY).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let state = host.owned_dir("state", "root:root").unwrap();
        let config = host
            .write_file(
                "lb.toml",
                &config(
                    i,
                    &state.display().to_string(),
                    &key.display().to_string(),
                    &self.vips,
                    self.metrics,
                ),
            )
            .unwrap();
        let bus = Bus::start();
        let mut h = GrowHost {
            host,
            name: name(i),
            lbd: None,
            config,
            bus,
        };
        h.start_lbd();
        self.hosts.push(h);
        i
    }

    /// Every lbd's log, host by host.
    pub fn logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| {
                format!(
                    "---- {} ----\n{}",
                    h.name,
                    h.lbd.as_ref().map(Proc::log).unwrap_or_default()
                )
            })
            .collect()
    }

    pub fn host_of_mac(&self, mac: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.host.mac() == mac)
    }

    /// The VIPs as addresses (for the probe).
    pub fn targets(&self) -> Vec<IpAddr> {
        self.vips.iter().map(|v| v.parse().unwrap()).collect()
    }

    /// The leader as host `i`'s lbctl reports it (`None` while unknown or lbctl fails).
    pub fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let c = self.hosts[i].cluster()?;
        let l = c.leader?;
        self.hosts.iter().position(|h| h.name == l)
    }

    /// Waits until every running host's lbctl names the same leader; returns it.
    pub fn wait_for_leader(&self) -> usize {
        let mut last = Vec::new();
        let done = crate::lab::try_wait_until(T, "one leader", || {
            last = self
                .hosts
                .iter()
                .enumerate()
                .filter(|(_, h)| h.lbd.as_ref().is_some_and(Proc::is_running))
                .map(|(i, _)| self.leader_seen_by(i))
                .collect();
            last.first().is_some_and(|l| l.is_some()) && last.iter().all(|l| *l == last[0])
        });
        assert!(done.is_ok(), "no agreed leader: {last:?}\n{}", self.logs());
        last[0].expect("a leader")
    }
}

impl GrowHost {
    /// Starts lbd on this host's configuration, on its own D-Bus: the build's lbd, or the
    /// one `$LB_LBD_BINARY` names (a benchmark built for debugging runs a release lbd).
    pub fn start_lbd(&mut self) {
        let bus = format!("DBUS_SYSTEM_BUS_ADDRESS={}", self.bus.address);
        let bin = std::env::var_os("LB_LBD_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(lbd_binary);
        self.lbd = Some(
            self.host
                .spawn_labeled(
                    "lbd",
                    &[
                        "env",
                        &bus,
                        bin.to_str().unwrap(),
                        "--config",
                        self.config.to_str().unwrap(),
                    ],
                )
                .unwrap(),
        );
    }

    pub fn pid(&self) -> Option<u32> {
        self.lbd.as_ref().map(Proc::pid)
    }

    pub fn signal(&self, sig: Signal) {
        if let Some(p) = &self.lbd {
            p.kill(sig);
        }
    }

    /// `lbctl --bus <this host's bus> ARGS`.
    pub fn lbctl(&self, args: &[&str]) -> LbctlRun {
        let out = std::process::Command::new(lbctl_binary())
            .arg("--bus")
            .arg(&self.bus.address)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run lbctl {args:?}: {e}"));
        LbctlRun {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `lbctl cluster --json`, parsed; `None` while lbd is not on the bus.
    pub fn cluster(&self) -> Option<ClusterInfo> {
        let run = self.lbctl(&["cluster", "--json"]);
        if run.code != Some(0) {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
        Some(ClusterInfo {
            leader: v["leader"].as_str().map(str::to_owned),
            role: v["role"].as_str().unwrap_or_default().to_owned(),
            members: v["members"]
                .as_array()?
                .iter()
                .map(|m| Listed {
                    name: m["name"].as_str().unwrap_or_default().to_owned(),
                    role: m["role"].as_str().unwrap_or_default().to_owned(),
                    healthy: m["healthy"].as_bool().unwrap_or(false),
                })
                .collect(),
        })
    }
}

/// Owner of each VIP (host index) as the probe saw it: the MAC of the last `tail` answers,
/// when they all agree. `None` until every VIP is answered steadily.
pub fn steady_owners(
    g: &GrowLab,
    recs: &[crate::lab::probe::Record],
    since: f64,
    tail: usize,
) -> Option<BTreeMap<String, usize>> {
    g.vips
        .iter()
        .map(|v| {
            let answers: Vec<&str> = recs
                .iter()
                .filter(|r| r.t >= since && r.is_answer() && r.target.as_deref() == Some(v))
                .filter_map(|r| r.mac.as_deref())
                .collect();
            let last = &answers[answers.len().saturating_sub(tail)..];
            if last.len() < tail || last.iter().any(|m| *m != last[0]) {
                return None;
            }
            Some((v.clone(), g.host_of_mac(last[0])?))
        })
        .collect()
}

/// Waits until the probe shows every VIP answered by `want`'s host for `tail` answers in a
/// row after `since` (seconds since the epoch); panics with the owners seen after [`T`].
pub fn wait_for_owners(
    g: &GrowLab,
    probe: &crate::lab::probe::RunningProbe,
    want: &BTreeMap<String, usize>,
    since: f64,
    tail: usize,
) {
    let deadline = Instant::now() + T;
    let mut seen = None;
    loop {
        let recs = probe.snapshot();
        seen = steady_owners(g, &recs, since, tail).or(seen);
        if seen.as_ref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the VIPs never settled on {want:?}; last steady owners {seen:?}\n{}",
            g.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Seconds since the epoch.
pub fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

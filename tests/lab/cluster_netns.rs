//! raft-lite between processes in network namespaces (`examples/lb-cluster-node`, one per
//! lab node), with nft faults from the lab harness. Run as root in plain `cargo test`.
//!
//! Each process prints its view as JSON lines with wall-clock times (one machine, one clock),
//! so the lines of different processes compare.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lb_testkit::lab::{Host, Lab, Proc, wait_until};
use serde_json::Value;
use std::cell::RefCell;

const WAIT: Duration = Duration::from_secs(30);
/// With members n1..n3, rendezvous hashing gives every member at least one of these at start,
/// so whichever host leads owns an IP (placement is over every host, the leader included).
const IPS: [&str; 4] = [
    "10.10.100.200",
    "10.10.100.201",
    "10.10.100.202",
    "10.10.100.203",
];
const PORT: u16 = 7946;

/// The raft-lite node example, built on first use.
fn node_bin() -> PathBuf {
    lb_testkit::examples::example_binary("lb-cluster-node")
}

fn wall_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// One printed view.
#[derive(Debug, Clone)]
struct Line {
    wall: i128,
    me: String,
    role: String,
    term: u64,
    leader: Option<String>,
    /// IP → lease deadline (wall ns).
    owned: BTreeMap<String, i128>,
    drops: BTreeMap<String, u64>,
}

fn parse(l: &str) -> Option<Line> {
    let v: Value = serde_json::from_str(l).ok()?;
    v.get("me")?;
    Some(Line {
        wall: v["wall_ns"]
            .as_i64()
            .map(i128::from)
            .or_else(|| v["wall_ns"].as_u64().map(i128::from))?,
        me: v["me"].as_str().unwrap_or_default().to_owned(),
        role: v["role"].as_str().unwrap_or_default().to_owned(),
        term: v["term"].as_u64().unwrap_or(0),
        leader: v["leader"].as_str().map(str::to_owned),
        owned: v["owned"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, d)| Some((k.clone(), i128::from(d.as_i64()?))))
                    .collect()
            })
            .unwrap_or_default(),
        drops: v["drops"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// A process's JSON lines, read incrementally (the test polls every 10 ms; re-parsing the
/// whole output each time would itself load the machine and delay the nodes).
struct Output {
    proc: Proc,
    read: usize,
    lines: Vec<Line>,
}

impl Output {
    fn new(proc: Proc) -> Output {
        Output {
            proc,
            read: 0,
            lines: Vec::new(),
        }
    }

    fn update(&mut self) -> &[Line] {
        if let Ok(bytes) = std::fs::read(self.proc.stdout_path())
            && bytes.len() > self.read
        {
            let new = &bytes[self.read..];
            // Only complete lines.
            if let Some(end) = new.iter().rposition(|b| *b == b'\n') {
                let text = String::from_utf8_lossy(&new[..end]);
                self.lines.extend(text.lines().filter_map(parse));
                self.read += end + 1;
            }
        }
        &self.lines
    }

    fn last(&mut self) -> Option<Line> {
        self.update().last().cloned()
    }
}

fn owns_at(l: &Line, ip: &str, t: i128) -> bool {
    l.owned.get(ip).is_some_and(|d| t < *d)
}

struct ClusterLab {
    lab: Lab,
    hosts: Vec<Host>,
    procs: Vec<RefCell<Output>>,
}

fn config(lab: &Lab, me: &str, members: &[(String, String)], key: &str) -> String {
    let members = members
        .iter()
        .map(|(n, a)| format!("{n} = \"{a}:{PORT}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[node]\nname = \"{me}\"\nstate_dir = \"{}\"\n\n[cluster]\nmembers = {{ {members} }}\nsecret_file = \"{key}\"\n\n[[pool]]\nname = \"l2\"\nprotocol = \"layer2\"\naddresses = [\"10.10.100.200-10.10.100.210\"]\n",
        lab.dir()
            .join(format!("state-{me}-{}", wall_ns()))
            .display()
    )
}

fn start_node(lab: &Lab, host: &Host, me: &str, members: &[(String, String)], key: &str) -> Proc {
    let path = host
        .write_file("lb.toml", &config(lab, me, members, key))
        .expect("write lb.toml");
    let bin = node_bin().to_string_lossy().into_owned();
    let p = path.to_string_lossy().into_owned();
    let mut args = vec![bin.as_str(), "--config", p.as_str()];
    args.extend(IPS);
    host.spawn(&args).expect("spawn lb-cluster-node")
}

fn key_file(lab: &Lab, name: &str, key: &str) -> String {
    let path = lab.dir().join(name);
    std::fs::write(&path, key).expect("write key");
    path.to_string_lossy().into_owned()
}

impl ClusterLab {
    fn start(name: &str) -> ClusterLab {
        let lab = Lab::new(name);
        let names = ["n1", "n2", "n3"];
        let hosts: Vec<Host> = names
            .iter()
            .enumerate()
            .map(|(i, n)| lab.node(n, &[&format!("10.10.100.{}/24", 3 + i)]))
            .collect();
        let members: Vec<(String, String)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| ((*n).to_owned(), format!("10.10.100.{}", 3 + i)))
            .collect();
        let key = key_file(&lab, "cluster.key", "netns cluster key\n");
        let procs = names
            .iter()
            .zip(&hosts)
            .map(|(n, h)| RefCell::new(Output::new(start_node(&lab, h, n, &members, &key))))
            .collect();
        ClusterLab { lab, hosts, procs }
    }

    fn latest(&self) -> Vec<Line> {
        self.procs
            .iter()
            .filter_map(|p| p.borrow_mut().last())
            .collect()
    }

    /// Every IP owned by exactly one node (by the latest lines, at the current time), one
    /// leader known to all.
    fn wait_stable(&self, what: &str) {
        wait_until(WAIT, what, || {
            let latest = self.latest();
            let now = wall_ns();
            latest.len() == self.procs.len()
                && latest.iter().filter(|l| l.role == "leader").count() == 1
                && latest.iter().all(|l| l.leader.is_some())
                && IPS
                    .iter()
                    .all(|ip| latest.iter().filter(|l| owns_at(l, ip, now)).count() == 1)
        });
    }
}

#[test]
fn cut_off_follower_stops_owning_before_another_host_takes_its_ip() {
    cut_owner_and_check("clcutf");
}

#[test]
fn the_leader_owns_ips_too_and_when_cut_off_the_others_keep_theirs_without_a_break() {
    let c = ClusterLab::start("clcutl");
    c.wait_stable("a leader and one owner per IP");
    let now = wall_ns();
    let latest = c.latest();
    let leader = latest
        .iter()
        .position(|l| l.role == "leader")
        .expect("a leader");
    // Placement is over every host: the leader owns IPs like the others.
    let leaders_own: Vec<&str> = IPS
        .iter()
        .copied()
        .filter(|ip| owns_at(&latest[leader], ip, now))
        .collect();
    assert!(
        !leaders_own.is_empty(),
        "the leader owns no IP: {:?}",
        latest[leader]
    );
    let kept: Vec<(usize, &str)> = (0..latest.len())
        .filter(|i| *i != leader)
        .flat_map(|i| {
            IPS.iter()
                .copied()
                .filter(|ip| owns_at(&latest[i], ip, now))
                .map(move |ip| (i, ip))
                .collect::<Vec<_>>()
        })
        .collect();
    let t_cut = wall_ns();
    c.hosts[leader].isolate().expect("isolate the leader");
    // The other two elect a leader among themselves, the leader's IPs are taken over, and
    // every IP is held again, once each.
    wait_until(
        WAIT,
        "a new leader and one owner per IP among the others",
        || {
            let now = wall_ns();
            let others: Vec<_> = c
                .latest()
                .into_iter()
                .enumerate()
                .filter(|(i, l)| *i != leader && l.wall > t_cut)
                .map(|(_, l)| l)
                .collect();
            others.len() == 2
                && others.iter().filter(|l| l.role == "leader").count() == 1
                && IPS
                    .iter()
                    .all(|ip| others.iter().filter(|l| owns_at(l, ip, now)).count() == 1)
        },
    );
    let t_end = wall_ns();
    // The IPs the other hosts owned never lapsed: every view they printed since the cut
    // owns the IP, and each lease was renewed before its deadline.
    for (h, ip) in kept {
        let lines = c.procs[h].borrow_mut().update().to_vec();
        let mut deadline = lines
            .iter()
            .filter(|l| l.wall <= t_cut)
            .filter_map(|l| l.owned.get(ip).copied())
            .max()
            .expect("held at the cut");
        for l in lines.iter().filter(|l| l.wall > t_cut && l.wall <= t_end) {
            let next = l.owned.get(ip).copied();
            assert!(
                l.wall < deadline && next.is_some(),
                "{}'s lease on {ip} lapsed after the leader was cut off: deadline {:.1} ms, view at {:.1} ms: {l:?}",
                l.me,
                (deadline - t_cut) as f64 / 1e6,
                (l.wall - t_cut) as f64 / 1e6
            );
            deadline = deadline.max(next.unwrap_or(deadline));
        }
        assert!(deadline > t_end, "{ip} lapsed at the end of the window");
    }
    c.hosts[leader].heal().expect("heal");
    c.wait_stable("stable again after healing");
    c.lab.teardown();
}

/// Isolates (nft, every frame) a follower owning an IP and checks from the printed views that
/// it stops owning before anyone else owns that IP.
fn cut_owner_and_check(lab_name: &str) {
    let c = ClusterLab::start(lab_name);
    c.wait_stable("a leader and one owner per IP");
    let now = wall_ns();
    let latest = c.latest();
    let (owner, ip) = latest
        .iter()
        .enumerate()
        .filter(|(_, l)| l.role != "leader")
        .find_map(|(i, l)| IPS.iter().find(|ip| owns_at(l, ip, now)).map(|ip| (i, *ip)))
        .expect("a host of the wanted role owning an IP");
    let cut_name = c.hosts[owner].name().to_owned();
    let t_cut = wall_ns();
    c.hosts[owner].isolate().expect("isolate the owner");
    // Another host takes the IP.
    let (taker, t_new) = wait_until_some(|| {
        c.procs.iter().enumerate().find_map(|(i, p)| {
            if i == owner {
                return None;
            }
            p.borrow_mut()
                .update()
                .iter()
                .find(|l| l.wall > t_cut && l.owned.contains_key(ip))
                .map(|l| (l.me.clone(), l.wall))
        })
    });
    // The cut host's own view drops it (its task publishes at the lease deadline).
    let cut_lines = || c.procs[owner].borrow_mut().update().to_vec();
    let t_stop = wait_until_some(|| {
        cut_lines()
            .into_iter()
            .find(|l| l.wall > t_cut && !l.owned.contains_key(ip))
            .map(|l| l.wall)
    });
    // The last lease the cut host was given for the IP before it stopped.
    let deadline = cut_lines()
        .into_iter()
        .filter(|l| l.wall < t_stop)
        .filter_map(|l| l.owned.get(ip).copied())
        .max()
        .expect("the cut host held a lease");
    let ms = |ns: i128| ns as f64 / 1e6;
    println!(
        "cut {cut_name} at 0; its lease ended at {:.1} ms, its view dropped {ip} at {:.1} ms; {taker} owns it from {:.1} ms",
        ms(deadline - t_cut),
        ms(t_stop - t_cut),
        ms(t_new - t_cut)
    );
    assert!(
        deadline <= t_new,
        "{taker} owned {ip} at {t_new} before {cut_name}'s lease ended at {deadline}"
    );
    assert!(
        t_stop < t_new,
        "{cut_name}'s view still showed {ip} at {t_new} (dropped at {t_stop})"
    );
    // Healed, the cut host rejoins and every IP again has one owner.
    c.hosts[owner].heal().expect("heal");
    c.wait_stable("stable again after healing");
    c.lab.teardown();
}

#[test]
fn member_with_the_wrong_key_is_ignored() {
    let c = ClusterLab::start("clkey");
    c.wait_stable("a leader and one owner per IP");
    let before: Vec<(String, u64)> = c.latest().into_iter().map(|l| (l.me, l.term)).collect();
    // A fourth host claiming to be n1, with the wrong key.
    let rogue = c.lab.node("rogue", &["10.10.100.6/24"]);
    let members: Vec<(String, String)> = vec![
        ("n1".into(), "10.10.100.6".into()),
        ("n2".into(), "10.10.100.4".into()),
        ("n3".into(), "10.10.100.5".into()),
    ];
    let key = key_file(&c.lab, "wrong.key", "not the cluster key\n");
    let mut r = Output::new(start_node(&c.lab, &rogue, "n1", &members, &key));
    // n2 and n3 count its datagrams as bad MACs.
    wait_until(WAIT, "bad-MAC drops at n2 and n3", || {
        c.procs[1..].iter().all(|p| {
            p.borrow_mut()
                .last()
                .is_some_and(|l| l.drops.get("BadMac").copied().unwrap_or(0) >= 2)
        })
    });
    let rl = r.update().to_vec();
    assert!(!rl.is_empty(), "the rogue printed its view");
    assert!(
        rl.iter().all(|l| l.leader.is_none() && l.owned.is_empty()),
        "the rogue never joined: {:?}",
        rl.last()
    );
    c.wait_stable("cluster unaffected");
    let after: Vec<(String, u64)> = c.latest().into_iter().map(|l| (l.me, l.term)).collect();
    assert_eq!(before, after, "no new term because of the rogue");
    drop(r);
    c.lab.teardown();
}

fn wait_until_some<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let mut out = None;
    wait_until(WAIT, "event in the JSON lines", || {
        out = f();
        out.is_some()
    });
    out.expect("set when the wait succeeded")
}

/// IPs of the join test: enough that the joining hosts are the placement choice of some.
const JOIN_IPS: [&str; 8] = [
    "10.10.100.200",
    "10.10.100.201",
    "10.10.100.202",
    "10.10.100.203",
    "10.10.100.204",
    "10.10.100.205",
    "10.10.100.206",
    "10.10.100.207",
];

/// `[cluster] voters` n1..n3; a host not among them gives its own `address`.
fn config_voters(
    lab: &Lab,
    me: &str,
    voters: &[(String, String)],
    own: Option<&str>,
    key: &str,
) -> String {
    let voters = voters
        .iter()
        .map(|(n, a)| format!("{n} = \"{a}:{PORT}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let address = own.map_or(String::new(), |a| format!("address = \"{a}:{PORT}\"\n"));
    format!(
        "[node]\nname = \"{me}\"\nstate_dir = \"{}\"\n\n[cluster]\nvoters = {{ {voters} }}\n{address}secret_file = \"{key}\"\n\n[[pool]]\nname = \"l2\"\nprotocol = \"layer2\"\naddresses = [\"10.10.100.200-10.10.100.210\"]\n",
        lab.dir()
            .join(format!("state-{me}-{}", wall_ns()))
            .display()
    )
}

/// Never two processes with a lease on one IP at the same wall time: each line says "owned
/// until d" from its time on, until the same process's next line.
fn assert_never_two_owners(lines: &[Vec<Line>]) {
    // Per process: intervals [line time, min(deadline, next line time)).
    let mut intervals: BTreeMap<&str, Vec<(i128, i128, &str)>> = BTreeMap::new();
    for ls in lines {
        for (k, l) in ls.iter().enumerate() {
            let next = ls.get(k + 1).map_or(i128::MAX, |n| n.wall);
            for (ip, d) in &l.owned {
                let end = (*d).min(next);
                if end > l.wall {
                    intervals
                        .entry(ip.as_str())
                        .or_default()
                        .push((l.wall, end, l.me.as_str()));
                }
            }
        }
    }
    for (ip, iv) in &intervals {
        for (i, a) in iv.iter().enumerate() {
            for b in &iv[i + 1..] {
                assert!(
                    a.2 == b.2 || a.1 <= b.0 || b.1 <= a.0,
                    "{ip} owned by {} and {} at once: {a:?} {b:?}",
                    a.2,
                    b.2
                );
            }
        }
    }
}

#[test]
fn hosts_join_a_running_cluster_of_three_voters_take_their_ips_and_one_leaves_without_a_restart() {
    let lab = Lab::new("cljoin");
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let addr = |i: usize| format!("10.10.100.{}", 3 + i);
    let hosts: Vec<Host> = names
        .iter()
        .enumerate()
        .map(|(i, n)| lab.node(n, &[&format!("{}/24", addr(i))]))
        .collect();
    let voters: Vec<(String, String)> = (0..3).map(|i| (names[i].to_owned(), addr(i))).collect();
    let key = key_file(&lab, "cluster.key", "netns cluster key\n");
    let start = |i: usize| {
        let own = (i >= 3).then(|| addr(i));
        let text = config_voters(&lab, names[i], &voters, own.as_deref(), &key);
        let path = hosts[i]
            .write_file("lb.toml", &text)
            .expect("write lb.toml");
        let bin = node_bin().to_string_lossy().into_owned();
        let p = path.to_string_lossy().into_owned();
        let mut args = vec![bin.as_str(), "--config", p.as_str()];
        args.extend(JOIN_IPS);
        RefCell::new(Output::new(
            hosts[i].spawn(&args).expect("spawn lb-cluster-node"),
        ))
    };
    let mut procs: Vec<RefCell<Output>> = (0..3).map(start).collect();
    let stable = |procs: &[RefCell<Output>], what: &str| {
        wait_until(WAIT, what, || {
            let latest: Vec<Line> = procs.iter().filter_map(|p| p.borrow_mut().last()).collect();
            let now = wall_ns();
            latest.len() == procs.len()
                && latest.iter().filter(|l| l.role == "leader").count() == 1
                && latest.iter().all(|l| l.leader.is_some())
                && JOIN_IPS
                    .iter()
                    .all(|ip| latest.iter().filter(|l| owns_at(l, ip, now)).count() == 1)
        });
    };
    stable(&procs, "three voters: a leader and one owner per IP");
    let pids: Vec<u32> = procs.iter().map(|p| p.borrow().proc.pid()).collect();
    let t0 = wall_ns();
    let owner_at = |procs: &[RefCell<Output>], t: i128| -> BTreeMap<&'static str, String> {
        let latest: Vec<Line> = procs.iter().filter_map(|p| p.borrow_mut().last()).collect();
        JOIN_IPS
            .iter()
            .filter_map(|ip| {
                latest
                    .iter()
                    .find(|l| owns_at(l, ip, t))
                    .map(|l| (*ip, l.me.clone()))
            })
            .collect()
    };
    let before = owner_at(&procs, t0);
    // A fourth and a fifth host join by starting; nothing else restarts.
    procs.push(start(3));
    procs.push(start(4));
    stable(&procs, "five hosts following one leader, one owner per IP");
    // The joining hosts take the IPs they are now the placement choice for.
    let chosen: BTreeMap<&str, &str> = JOIN_IPS
        .iter()
        .filter_map(|ip| {
            let ipa: std::net::IpAddr = ip.parse().expect("ip");
            lb::cluster::placement::choose_owner(&ipa, None, names)
                .filter(|n| *n == "n4" || *n == "n5")
                .map(|n| (*ip, n))
        })
        .collect();
    assert!(!chosen.is_empty(), "no IP prefers n4 or n5: pick other IPs");
    wait_until(WAIT, "n4 and n5 own the IPs placed on them", || {
        let now = owner_at(&procs, wall_ns());
        chosen
            .iter()
            .all(|(ip, n)| now.get(ip).map(String::as_str) == Some(*n))
    });
    println!("placed on the joining hosts: {chosen:?}");
    let mid = owner_at(&procs, wall_ns());
    for (p, pid) in procs.iter().zip(&pids) {
        assert!(p.borrow().proc.is_running(), "voter restarted or died");
        assert_eq!(p.borrow().proc.pid(), *pid);
    }
    // n5 leaves for good (SIGTERM: planned leave): its IPs move, the rest stays.
    procs[4].borrow().proc.kill(lb_testkit::lab::Signal::Term);
    wait_until(WAIT, "n5 stopped", || !procs[4].borrow().proc.is_running());
    let left = procs.remove(4);
    stable(&procs, "four hosts, one owner per IP after n5 left");
    let t1 = wall_ns();
    let after = owner_at(&procs, t1);
    let mut all: Vec<Vec<Line>> = procs
        .iter()
        .map(|p| p.borrow_mut().update().to_vec())
        .collect();
    all.push(left.borrow_mut().update().to_vec());
    assert_never_two_owners(&all);
    // An IP no join or leave moved (one owner throughout) was owned all along.
    let mut unmoved = 0;
    for (ip, owner) in &before {
        if after.get(ip) != Some(owner) || mid.get(ip) != Some(owner) {
            continue;
        }
        unmoved += 1;
        let mut ls: Vec<&Line> = all.iter().flatten().filter(|l| l.me == *owner).collect();
        ls.sort_by_key(|l| l.wall);
        let mut covered = t0;
        for (k, l) in ls.iter().enumerate() {
            let Some(d) = l.owned.get(*ip) else { continue };
            assert!(
                l.wall <= covered || covered >= t1,
                "{ip} (owner {owner}, not moved) not owned for {:.1} ms from {:.1} ms",
                (l.wall - covered) as f64 / 1e6,
                (covered - t0) as f64 / 1e6
            );
            let next = ls.get(k + 1).map_or(i128::MAX, |n| n.wall);
            covered = covered.max((*d).min(next));
        }
        assert!(covered >= t1, "{ip} (owner {owner}) not owned at the end");
    }
    println!(
        "{unmoved} of {} IPs kept their owner through the joins and the leave",
        JOIN_IPS.len()
    );
    // A moved IP: the longest time no host owned it (a planned move each way).
    for ip in JOIN_IPS {
        let mut iv: Vec<(i128, i128)> = Vec::new();
        for ls in &all {
            for (k, l) in ls.iter().enumerate() {
                if let Some(d) = l.owned.get(ip) {
                    let next = ls.get(k + 1).map_or(i128::MAX, |n| n.wall);
                    iv.push((l.wall, (*d).min(next)));
                }
            }
        }
        iv.sort();
        let (mut covered, mut gap) = (t0, 0);
        for (a, b) in iv {
            if b <= t0 || a >= t1 {
                continue;
            }
            gap = gap.max(a - covered);
            covered = covered.max(b);
        }
        gap = gap.max(t1 - covered.min(t1));
        if gap > 0 {
            println!(
                "{ip}: longest time without an owner {:.1} ms",
                gap as f64 / 1e6
            );
        }
        assert!(gap < 1_000_000_000, "{ip} without an owner for {gap} ns");
    }
    drop(procs);
    drop(left);
    lab.teardown();
}

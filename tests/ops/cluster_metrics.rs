//! raft-lite health in /metrics, from three lbd processes on loopback (distinct UDP ports,
//! no Kubernetes): datagrams forged under a wrong key are counted as `bad_mac`, exactly as
//! many as were sent; a stopped member goes unhealthy on the leader and healthy again when it
//! resumes, and a follower has no series for members it cannot judge.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use lb::cluster::message::{Body, Message};
use lb::cluster::transport::pair_key;
use lb::cluster::wire::Sealer;
use lb_testkit::lbd::{Lbd, scrape_loopback};

const T: Duration = Duration::from_secs(30);
const NAMES: [&str; 3] = ["n1", "n2", "n3"];

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Host {
    name: &'static str,
    raft: SocketAddr,
    metrics: SocketAddr,
    lbd: Lbd,
}

struct Cluster {
    hosts: Vec<Host>,
    _key_dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Self::start_with_wrong_key(None)
    }

    /// Three members; `wrong_key` (if any) gets another cluster key than the other two.
    fn start_with_wrong_key(wrong_key: Option<&str>) -> Cluster {
        let key_dir = tempfile::tempdir().unwrap();
        let write_key = |file: &str, key: &str| {
            let path = key_dir.path().join(file);
            std::fs::write(&path, key).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            path
        };
        let key = write_key("cluster.key", "metrics-test-cluster-key-0123456789\n");
        let other_key = write_key("other.key", "a-key-copied-from-another-cluster\n");
        let addrs: Vec<(SocketAddr, SocketAddr)> = NAMES
            .iter()
            .map(|_| {
                (
                    SocketAddr::from(([127, 0, 0, 1], free_udp())),
                    SocketAddr::from(([127, 0, 0, 1], free_tcp())),
                )
            })
            .collect();
        let members: Vec<String> = NAMES
            .iter()
            .zip(&addrs)
            .map(|(n, (raft, _))| format!("{n} = \"{raft}\""))
            .collect();
        let hosts = NAMES
            .iter()
            .zip(&addrs)
            .map(|(name, (raft, metrics))| {
                let config = format!(
                    r#"
[node]
name = "{name}"

[cluster]
members = {{ {} }}
secret_file = "{}"

[metrics]
listen = "{metrics}"

[[pool]]
name = "bgp-pool"
protocol = "bgp"
addresses = ["172.19.100.0/28"]
"#,
                    members.join(", "),
                    if wrong_key == Some(*name) {
                        &other_key
                    } else {
                        &key
                    }
                    .display()
                );
                Host {
                    name,
                    raft: *raft,
                    metrics: *metrics,
                    lbd: Lbd::start(&config),
                }
            })
            .collect();
        Cluster {
            hosts,
            _key_dir: key_dir,
        }
    }

    fn host(&mut self, name: &str) -> &mut Host {
        self.hosts.iter_mut().find(|h| h.name == name).unwrap()
    }

    /// Polls `name`'s /metrics until `ok` holds; returns that scrape.
    fn wait_metrics(
        &mut self,
        name: &str,
        what: &str,
        ok: impl Fn(&BTreeMap<String, f64>) -> bool,
    ) -> BTreeMap<String, f64> {
        let deadline = Instant::now() + T;
        loop {
            let h = self.host(name);
            let m = scrape_loopback(h.metrics);
            if ok(&m) {
                return m;
            }
            for h in &mut self.hosts {
                assert!(h.lbd.alive(), "{} exited:\n{}", h.name, h.lbd.log());
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {what}; last scrape: {m:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host whose /metrics says it leads, once one does.
    fn wait_leader(&mut self) -> &'static str {
        let deadline = Instant::now() + T;
        loop {
            for h in &self.hosts {
                if scrape_loopback(h.metrics).get("lb_cluster_is_leader") == Some(&1.0) {
                    return h.name;
                }
            }
            assert!(Instant::now() < deadline, "no raft-lite leader");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `lb_cluster_*` lines of a scrape, for the test's output (docs/operate.md quotes them).
fn cluster_lines(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .filter(|(k, _)| k.starts_with("lb_cluster_"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn healthy(member: &str) -> String {
    format!("lb_cluster_member_healthy{{member=\"{member}\"}}")
}

fn last_seen(member: &str) -> String {
    format!("lb_cluster_member_last_seen_seconds{{member=\"{member}\"}}")
}

const BAD_MAC: &str = "lb_cluster_datagrams_dropped_total{reason=\"bad_mac\"}";

#[test]
fn datagrams_under_a_wrong_key_raise_bad_mac_by_exactly_as_many_as_were_sent() {
    let mut c = Cluster::start();
    let leader = c.wait_leader();
    let victim = NAMES.iter().copied().find(|n| *n != leader).unwrap();
    let before = c.wait_metrics(victim, "drop counters exported from the start", |m| {
        m.contains_key(BAD_MAC)
    });
    let base = before[BAD_MAC];
    assert_eq!(base, 0.0, "the members share one key: {before:#?}");

    // Datagrams in raft-lite's own format, claiming to come from the leader, sealed under a
    // wrong key (as a host with another cluster.key would send them).
    const SENT: u64 = 25;
    let mut sealer =
        Sealer::new(leader, &pair_key(b"not the cluster key", leader, victim), 1).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = c.host(victim).raft;
    for _ in 0..SENT {
        let msg = Message {
            term: 1,
            body: Body::PreVote { version: 0 },
        };
        sock.send_to(&sealer.seal(&msg).unwrap(), to).unwrap();
    }
    let after = c.wait_metrics(victim, "the forged datagrams counted", |m| {
        m.get(BAD_MAC).is_some_and(|v| *v >= base + SENT as f64)
    });
    assert_eq!(after[BAD_MAC], base + SENT as f64, "{after:#?}");
    // Nothing else was dropped, and the cluster did not notice.
    for (series, v) in &after {
        if series.starts_with("lb_cluster_datagrams_dropped_total") && series != BAD_MAC {
            assert_eq!(*v, 0.0, "{series}");
        }
    }
    assert_eq!(c.wait_leader(), leader);
    eprintln!(
        "{victim} after {SENT} forged datagrams:\n{}",
        cluster_lines(&after)
    );
}

#[test]
fn a_stopped_member_goes_unhealthy_on_the_leader_and_healthy_again_when_it_resumes() {
    let mut c = Cluster::start();
    let leader = c.wait_leader();
    let followers: Vec<&str> = NAMES.iter().copied().filter(|n| *n != leader).collect();
    let (stopped, other) = (followers[0], followers[1]);
    c.wait_metrics(leader, "every member healthy on the leader", |m| {
        NAMES.iter().all(|n| m.get(&healthy(n)) == Some(&1.0))
    });
    // A follower judges only itself and the leader it hears.
    let seen_by_other = c.wait_metrics(other, "the follower's own view", |m| {
        m.get(&healthy(other)) == Some(&1.0) && m.get(&healthy(leader)) == Some(&1.0)
    });
    assert!(
        !seen_by_other.contains_key(&healthy(stopped))
            && !seen_by_other.contains_key(&last_seen(stopped)),
        "a follower has no series for another follower: {seen_by_other:#?}"
    );

    c.host(stopped).lbd.signal("STOP");
    let down = c.wait_metrics(leader, "the stopped member unhealthy", |m| {
        m.get(&healthy(stopped)) == Some(&0.0)
            && m.get(&last_seen(stopped)).is_some_and(|s| *s >= 1.0)
    });
    assert_eq!(down.get(&healthy(other)), Some(&1.0), "{down:#?}");
    assert_eq!(down.get("lb_cluster_is_leader"), Some(&1.0));
    eprintln!("{leader} with {stopped} stopped:\n{}", cluster_lines(&down));

    c.host(stopped).lbd.signal("CONT");
    c.wait_metrics(leader, "the resumed member healthy again", |m| {
        m.get(&healthy(stopped)) == Some(&1.0)
            && m.get(&last_seen(stopped)).is_some_and(|s| *s < 1.0)
    });
}

#[test]
fn a_host_with_another_key_is_unhealthy_on_the_leader_and_both_sides_count_bad_mac() {
    let mut c = Cluster::start_with_wrong_key(Some("n3"));
    // n1 and n2 are a majority without n3.
    let leader = c.wait_leader();
    assert_ne!(leader, "n3");
    let follower = if leader == "n1" { "n2" } else { "n1" };
    let on_leader = c.wait_metrics(leader, "n3 unhealthy, its datagrams dropped", |m| {
        m.get(&healthy("n3")) == Some(&0.0)
            && m.get(&healthy(follower)) == Some(&1.0)
            && m.get(BAD_MAC).is_some_and(|v| *v >= 3.0)
    });
    assert!(
        !on_leader.contains_key(&last_seen("n3")),
        "n3 was never heard: {on_leader:#?}"
    );
    let on_n3 = c.wait_metrics("n3", "n3 drops what the others send", |m| {
        m.get(BAD_MAC).is_some_and(|v| *v >= 3.0)
    });
    assert_eq!(on_n3.get("lb_cluster_is_leader"), Some(&0.0), "{on_n3:#?}");
    assert_eq!(on_n3.get(&healthy("n3")), Some(&1.0), "{on_n3:#?}");
    assert!(
        !on_n3.contains_key(&healthy(leader)),
        "n3 hears no leader: {on_n3:#?}"
    );
    eprintln!("{leader} (leader):\n{}", cluster_lines(&on_leader));
    eprintln!("n3 (wrong key):\n{}", cluster_lines(&on_n3));
}

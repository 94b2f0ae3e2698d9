//! lbctl's human output: aligned tables and the status summary. Pure functions of the
//! snapshot types, so they are tested without a bus.

use super::state::{
    ClusterStatus, MemberStatus, PeerStatus, PoolStatus, ServiceState, ServiceStatus, Snapshot,
};

/// A left-aligned text table; columns are as wide as their widest cell (counted in chars),
/// separated by two spaces, no trailing blanks.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() { "-".to_string() } else { s }
}

fn join<T: ToString>(items: &[T]) -> String {
    dash_if_empty(
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    )
}

pub fn services(services: &[ServiceStatus]) -> String {
    let mut t = Table::new([
        "SERVICE",
        "IPS",
        "POOL",
        "PROTOCOL",
        "ANNOUNCED BY",
        "STATE",
    ]);
    for s in services {
        t.row(vec![
            format!("{}/{}", s.namespace, s.name),
            join(&s.ips),
            s.pool.clone(),
            s.protocol.to_string(),
            join(&s.announced_by),
            s.state.to_string(),
        ]);
    }
    t.render()
}

pub fn pools(pools: &[PoolStatus]) -> String {
    let mut t = Table::new(["POOL", "PROTOCOL", "TOTAL", "USED", "FREE"]);
    for p in pools {
        t.row(vec![
            p.name.clone(),
            p.protocol.to_string(),
            p.total.to_string(),
            p.used.to_string(),
            p.free.to_string(),
        ]);
    }
    t.render()
}

pub fn peers(peers: &[PeerStatus]) -> String {
    let mut t = Table::new([
        "PEER",
        "MY ASN",
        "PEER ASN",
        "STATE",
        "UPTIME",
        "ADVERTISED",
        "UPDATES RECEIVED",
    ]);
    for p in peers {
        t.row(vec![
            p.address.to_string(),
            p.my_asn.to_string(),
            // 0: dynamic_asn = "external", the peer's OPEN not in yet.
            match p.peer_asn {
                0 => "external".to_string(),
                asn => asn.to_string(),
            },
            p.state.to_string(),
            duration(p.uptime_s),
            p.prefixes_advertised.to_string(),
            p.updates_received.to_string(),
        ]);
    }
    t.render()
}

pub fn cluster(c: &ClusterStatus) -> String {
    let mut out = format!(
        "term {}, leader {}, this node is {}\n\n",
        c.term,
        c.leader.as_deref().unwrap_or("(none)"),
        c.role
    );
    out.push_str(&members(&c.members, c.leader.as_deref()));
    out
}

fn members(members: &[MemberStatus], leader: Option<&str>) -> String {
    let mut t = Table::new(["MEMBER", "ADDRESS", "ROLE", "HEALTHY", "LAST SEEN"]);
    for m in members {
        let role = if leader == Some(m.name.as_str()) {
            format!("{} (leader)", m.role)
        } else {
            m.role.to_string()
        };
        t.row(vec![
            m.name.clone(),
            // A cluster of one listens nowhere: no address to show.
            m.address.map_or_else(|| "-".to_string(), |a| a.to_string()),
            role,
            if m.healthy { "yes" } else { "no" }.to_string(),
            match m.last_seen_ms {
                Some(ms) => format!("{ms}ms ago"),
                None => "-".to_string(),
            },
        ]);
    }
    t.render()
}

pub fn status(s: &Snapshot) -> String {
    let mut out = String::new();
    let announced = s
        .services
        .iter()
        .filter(|x| x.state == ServiceState::Announced)
        .count();
    let failed = s
        .services
        .iter()
        .filter(|x| matches!(x.state, ServiceState::Failed(_)))
        .count();
    let established = s
        .peers
        .iter()
        .filter(|p| p.state == super::state::BgpState::Established)
        .count();
    let reload = match &s.config.last_reload {
        None => "none".to_string(),
        Some(r) => format!(
            "{} at {}: {}",
            if r.ok { "ok" } else { "FAILED" },
            timestamp(r.at),
            r.message
        ),
    };
    let mut t = Table::default();
    let mut kv = |k: &str, v: String| t.row(vec![format!("{k}:"), v]);
    kv(
        "node",
        format!("{} ({}), lbd {}", s.node, s.role, s.version),
    );
    kv(
        "state",
        format!(
            "{}: {}",
            if s.ready { "ready" } else { "not ready" },
            s.status_line
        ),
    );
    kv(
        "config",
        format!(
            "{}, loaded {}",
            s.config.path,
            timestamp(s.config.loaded_at)
        ),
    );
    kv("last reload", reload);
    kv(
        "cluster",
        format!(
            "term {}, leader {}, this node is {}",
            s.cluster.term,
            s.cluster.leader.as_deref().unwrap_or("(none)"),
            s.cluster.role
        ),
    );
    kv(
        "services",
        format!(
            "{} ({announced} announced, {failed} failed)",
            s.services.len()
        ),
    );
    kv("pools", s.pools.len().to_string());
    kv(
        "peers",
        format!("{} ({established} established)", s.peers.len()),
    );
    out.push_str(&t.render());
    out
}

/// `3725` → `1h2m5s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m{s}s"),
        _ => format!("{d}d{h}h{m}m"),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, proleptic Gregorian).
pub fn timestamp(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::state::sample;

    #[test]
    fn table_columns_align_to_widest_cell() {
        let mut t = Table::new(["A", "LONG HEADER", "C"]);
        t.row(vec!["wide cell".into(), "x".into(), "".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "A          LONG HEADER  C");
        assert_eq!(lines[1], "wide cell  x");
    }

    #[test]
    fn services_table_shows_every_service_with_state() {
        let out = services(&sample().services);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SERVICE"));
        assert!(
            lines[1].contains("default/nginx") && lines[1].contains("10.10.100.200,fd00:10::1")
        );
        assert!(lines[1].contains("worker-1") && lines[1].ends_with("announced"));
        assert!(lines[2].ends_with("failed: no available IPs in pool ip-pool-1"));
        // The STATE column starts at the same offset on every line.
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(&lines[1][col..], "announced");
    }

    #[test]
    fn pools_table_prints_huge_counts_exactly() {
        let out = pools(&sample().pools);
        assert!(out.contains("18446744073709551616"), "{out}");
        assert!(out.lines().nth(1).unwrap().split_whitespace().eq([
            "ip-space-1",
            "layer2",
            "258",
            "1",
            "257"
        ]));
    }

    #[test]
    fn peers_table_says_external_for_a_dynamic_asn_not_yet_learned() {
        let mut snapshot = sample();
        snapshot.peers[0].peer_asn = 0;
        let out = peers(&snapshot.peers);
        let row = out.lines().nth(1).unwrap();
        assert_eq!(row.split_whitespace().nth(2), Some("external"), "{out}");
    }

    #[test]
    fn peers_table_shows_uptime_human_readable() {
        let out = peers(&sample().peers);
        assert!(out.lines().nth(1).unwrap().split_whitespace().eq([
            "10.10.100.1",
            "64500",
            "64501",
            "Established",
            "1h2m5s",
            "2",
            "5"
        ]));
    }

    #[test]
    fn cluster_marks_leader_and_unhealthy_members() {
        let out = cluster(&sample().cluster);
        assert!(out.starts_with("term 7, leader worker-1, this node is leader\n"));
        assert!(out.contains("member (leader)"));
        let w2 = out.lines().find(|l| l.starts_with("worker-2")).unwrap();
        assert!(w2.contains("witness") && w2.contains("no") && w2.ends_with("4200ms ago"));
    }

    #[test]
    fn cluster_of_one_shows_no_listen_address() {
        let mut c = sample().cluster;
        c.members.truncate(1);
        c.members[0].address = None;
        let out = cluster(&c);
        let row = out.lines().find(|l| l.starts_with("worker-1")).unwrap();
        assert_eq!(row.split_whitespace().nth(1), Some("-"), "{out}");
        assert!(!out.contains("7946"), "{out}");
    }

    #[test]
    fn status_summarises_and_flags_failed_reload() {
        let out = status(&sample());
        assert!(out.contains("worker-1 (member), lbd 0.1.0"));
        assert!(out.contains("ready: leader of term 7"));
        assert!(out.contains("FAILED at 2026-01-01 01:00:00 UTC: pool web"));
        assert!(out.contains("2 (1 announced, 1 failed)"));
        assert!(out.contains("1 (1 established)"));
    }

    #[test]
    fn timestamp_formats_known_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(timestamp(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(timestamp(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn duration_picks_units() {
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(61), "1m1s");
        assert_eq!(duration(90_061), "1d1h1m");
    }
}

//! Every Event docs/troubleshoot.md quotes is one lbd produces: each message in the Event
//! column of its tables must match (`…` standing for any text) an Event that the controller
//! posts, under the reason the table names, when the scenarios below are played. The
//! scenarios go the daemon's way: Service YAML → `kube::translate` → `Controller`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use lb::controller::{Controller, Input, Output};
use lb::kube::translate::service_from_k8s;
use lb::model::kube::{Kind, KubeUpdate};
use lb::model::{IpRange, Pool, PoolProtocol, ServiceKey};

const DOC: &str = include_str!("../../docs/troubleshoot.md");

fn pool(name: &str, ranges: &[(&str, &str)], auto_assign: bool) -> Pool {
    Pool {
        name: name.into(),
        protocol: PoolProtocol::Layer2,
        ranges: ranges
            .iter()
            .map(|(a, b)| {
                let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
                IpRange::new(a, b).unwrap()
            })
            .collect(),
        auto_assign,
        avoid_buggy_ips: false,
        interfaces: vec![],
        node_selectors: vec![],
        bgp_advertisements: vec![],
        service_allocation: Default::default(),
    }
}

enum Step {
    /// A Service (YAML, as `kubectl apply` would send it) created or changed.
    Apply(String),
    /// `namespace/name` deleted.
    Delete(&'static str),
}

/// A Service `ns/name` of type LoadBalancer with `meta` lines under metadata and `spec`
/// lines under spec.
fn svc(ns: &str, name: &str, meta: &str, spec: &str) -> Step {
    Step::Apply(format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  namespace: {ns}\n  name: {name}\n{meta}spec:\n  type: LoadBalancer\n  ports:\n  - port: 80\n    protocol: TCP\n{spec}"
    ))
}

/// Plays `steps` against a writer that has synced, returning (reason, message) of every
/// Event posted. Status writes come back as watch updates, as from the API server.
fn play(pools: Vec<Pool>, steps: &[Step]) -> Vec<(&'static str, String)> {
    let mut c = Controller::new(pools, vec![], None, true);
    let mut out = c.step(Input::Writer(true));
    for kind in [Kind::Services, Kind::EndpointSlices, Kind::Nodes] {
        out.extend(c.step(Input::Kube(KubeUpdate::Synced(kind))));
    }
    for step in steps {
        let input = match step {
            Step::Apply(yaml) => {
                let k8s: k8s_openapi::api::core::v1::Service =
                    serde_yaml::from_str(yaml).expect("scenario Service YAML");
                let svc = service_from_k8s(&k8s).expect("a LoadBalancer Service");
                KubeUpdate::Service(svc)
            }
            Step::Delete(key) => {
                let (ns, name) = key.split_once('/').expect("namespace/name");
                KubeUpdate::ServiceGone(ServiceKey::new(ns, name))
            }
        };
        let mut pending = c.step(Input::Kube(input));
        while !pending.is_empty() {
            let mut echoes = Vec::new();
            for o in &pending {
                if let Output::WriteStatus { service, ips, .. } = o
                    && let Some(s) = c.services().get(service)
                {
                    let mut s = s.clone();
                    s.current_ips = ips.clone();
                    echoes.push(s);
                }
            }
            out.append(&mut pending);
            for s in echoes {
                pending.extend(c.step(Input::Kube(KubeUpdate::Service(s))));
            }
        }
    }
    out.into_iter()
        .filter_map(|o| match o {
            Output::Event {
                reason, message, ..
            } => Some((reason, message)),
            _ => None,
        })
        .collect()
}

/// Every Event the scenarios produce: one scenario per situation the page describes, with
/// the page's example names (`ns/name`, `ip-space-1`, `10.10.100.200`, …).
fn produced() -> BTreeSet<(&'static str, String)> {
    let space1 = || pool("ip-space-1", &[("10.10.100.200", "10.10.100.200")], true);
    let dual = || {
        pool(
            "ip-space-1",
            &[
                ("10.10.100.200", "10.10.100.201"),
                ("fd00:10::5", "fd00:10::5"),
            ],
            true,
        )
    };
    let named = "  annotations:\n    metallb.io/address-pool: ip-space-1\n";
    let ipv6_only = "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n";
    let shared = |key: &str| format!("  annotations:\n    metallb.io/allow-shared-ip: {key}\n");
    let at_200 = "  loadBalancerIP: 10.10.100.200\n";
    let scenarios: Vec<(Vec<Pool>, Vec<Step>)> = vec![
        // Every auto-assign pool full; then the named pool full.
        (
            vec![space1()],
            vec![
                svc("default", "first", "", ""),
                svc("ns", "name", "", ""),
                svc("ns", "named", named, ""),
            ],
        ),
        // Unknown pool; an IP in no pool; an IP from another pool than the named one.
        (
            vec![
                space1(),
                pool("ip-space-2", &[("10.10.100.210", "10.10.100.210")], false),
            ],
            vec![
                svc(
                    "ns",
                    "unknown",
                    "  annotations:\n    metallb.io/address-pool: ip-space-9\n",
                    "",
                ),
                svc("ns", "outside", "", "  loadBalancerIP: 10.9.9.9\n"),
                svc("ns", "mismatch", named, "  loadBalancerIP: 10.10.100.210\n"),
            ],
        ),
        // Sharing: the same port twice; another sharing key.
        (
            vec![space1()],
            vec![
                svc("default", "first", &shared("k"), at_200),
                svc("ns", "same-port", &shared("k"), at_200),
                svc("ns", "name", &shared("other"), at_200),
            ],
        ),
        // The IPv6 range full: RequireDualStack fails; PreferDualStack gets IPv4 only, then
        // the IPv6 once it is freed.
        (
            vec![dual()],
            vec![
                svc("default", "v6-holder", "", ipv6_only),
                svc(
                    "ns",
                    "require",
                    "",
                    "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n",
                ),
                svc(
                    "ns",
                    "prefer",
                    "",
                    "  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv4, IPv6]\n",
                ),
                Step::Delete("default/v6-holder"),
            ],
        ),
        // A requested IP of a pool that chooses other Services (service_selectors).
        (
            vec![{
                let mut p = space1();
                p.service_allocation.service_selectors = vec![lb::model::LabelSelector {
                    match_labels: [("tier".to_string(), "db".to_string())].into(),
                    match_expressions: vec![],
                }];
                p
            }],
            vec![svc("ns", "name", "", at_200)],
        ),
        // Malformed specs; a status holding an address in no pool.
        (
            vec![space1()],
            vec![
                svc("ns", "bad-ip", "", "  loadBalancerIP: garbage\n"),
                svc(
                    "ns",
                    "bad-annotation",
                    "  annotations:\n    metallb.io/loadBalancerIPs: x\n",
                    "",
                ),
                svc(
                    "ns",
                    "two-v4",
                    "  annotations:\n    metallb.io/loadBalancerIPs: 10.10.100.200,10.10.100.201\n",
                    "",
                ),
                svc("ns", "bad-family", "", "  ipFamilies: [IPv7]\n"),
                with_status(svc("ns", "name", "", ""), "10.9.9.9"),
            ],
        ),
    ];
    scenarios
        .into_iter()
        .flat_map(|(pools, steps)| play(pools, &steps))
        .collect()
}

/// `step` as the API server shows it with `ip` already in its status (e.g. written by
/// MetalLB before).
fn with_status(step: Step, ip: &str) -> Step {
    match step {
        Step::Apply(yaml) => Step::Apply(format!(
            "{yaml}status:\n  loadBalancer:\n    ingress:\n    - ip: {ip}\n"
        )),
        other => other,
    }
}

/// `quote` with `…` matching any text (possibly empty), anchored at both ends.
fn matches(quote: &str, message: &str) -> bool {
    let parts: Vec<&str> = quote.split('…').collect();
    let (first, rest) = parts.split_first().expect("split yields one part");
    let Some(mut tail) = message.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return tail.is_empty();
    };
    for part in middle {
        match tail.find(part) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

/// The backtick-quoted spans of a Markdown table cell.
fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// (reason, quoted message) for every message in an `Event` column of the page's tables. The
/// reason is the table header's (`reason `X``) or the row's `reason` column.
fn documented() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut lines = DOC.lines().peekable();
    while let Some(line) = lines.next() {
        let is_header =
            line.starts_with('|') && lines.peek().is_some_and(|next| next.starts_with("|---"));
        if !is_header {
            continue;
        }
        let header: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(event_col) = header.iter().position(|h| h.starts_with("Event")) else {
            continue;
        };
        let reason_col = header.iter().position(|h| h.starts_with("reason"));
        let header_reason = header[event_col]
            .split_once("reason `")
            .and_then(|(_, r)| r.split_once('`'))
            .map(|(r, _)| r.to_string());
        lines.next();
        while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let reason = match (reason_col, &header_reason) {
                (Some(i), _) => quoted(cells[i]).first().map(|r| r.to_string()),
                (None, r) => r.clone(),
            }
            .unwrap_or_else(|| panic!("no reason for the row {row}"));
            for q in quoted(cells[event_col]) {
                found.push((reason.clone(), q.to_string()));
            }
        }
    }
    found
}

#[test]
fn every_event_troubleshoot_md_quotes_is_one_lbd_posts() {
    let documented = documented();
    assert!(
        documented.len() >= 14,
        "the page's Event tables were not found: {documented:?}"
    );
    let produced = produced();
    let missing: Vec<&(String, String)> = documented
        .iter()
        .filter(|(reason, quote)| {
            !produced
                .iter()
                .any(|(r, m)| r == reason && matches(quote, m))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshoot.md quotes Events lbd does not post:\n{missing:#?}\nlbd posts:\n{produced:#?}"
    );
}

#[test]
fn the_ellipsis_stands_for_any_text_and_nothing_else_is_loose() {
    assert!(matches("… no available IPs", "Failed: no available IPs"));
    assert!(!matches(
        "… no available IPs",
        "Failed: no available IPs in pool"
    ));
    assert!(matches("a …b… c", "a xbx c"));
    assert!(matches("exact", "exact"));
    assert!(!matches("exact", "exactly"));
    assert!(!matches("ab…ba", "aba"));
}

//! What a reload changes (pure): the difference between the running configuration and a
//! valid new one, which the main loop then carries out. Sections the running tasks were
//! started with ([node], [cluster], [kubernetes], [layer2], [metrics], [log]) are kept as
//! they run until the next restart.

use std::net::IpAddr;

use crate::config::Config;
use crate::model::ServiceKey;

/// What to do for one reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The configuration to run from now on: the new one with the restart-only sections
    /// kept as running.
    pub adopted: Config,
    /// Pools or static services changed: the controller and the BGP speaker get them.
    pub pools_changed: bool,
    pub peers_changed: bool,
    /// Pools that are gone: their series leave /metrics.
    pub removed_pools: Vec<String>,
    /// A restart-only section differs (said in the reply).
    pub restart_needed: bool,
    /// `[cluster] voters` differ from the running file's: raft-lite checks the list against
    /// its running voter set and proposes one voter added or removed (docs/operate.md,
    /// "Replace a voter"). Nothing else in `[cluster]` changes without a restart.
    pub voters: Option<std::collections::BTreeMap<String, std::net::SocketAddr>>,
}

impl Plan {
    pub fn new(running: &Config, new: Config) -> Plan {
        let pools_changed = new.pools != running.pools || new.services != running.services;
        let peers_changed = new.bgp_peers != running.bgp_peers;
        let removed_pools = running
            .pools
            .iter()
            .filter(|p| !new.pools.iter().any(|n| n.name == p.name))
            .map(|p| p.name.clone())
            .collect();
        let voters =
            (new.cluster.members != running.cluster.members).then(|| new.cluster.members.clone());
        let cluster_rest_differs = crate::config::ClusterConfig {
            members: running.cluster.members.clone(),
            ..new.cluster.clone()
        } != running.cluster;
        let restart_needed = cluster_rest_differs
            || new.node != running.node
            || new.kubernetes != running.kubernetes
            || new.metrics != running.metrics
            || new.layer2 != running.layer2
            || new.log != running.log;
        // Adopt only what is applied: the running tasks (raft-lite, kube watch, responder,
        // metrics server, logging) still use the old sections, and the rest of lbd must
        // agree with them — e.g. a new [node] name would make the announcers look up another
        // Node than raft-lite speaks for.
        // Unchanged pools stay the running value (the one the controller and the speaker
        // share); changed ones become its successor, numbered one up.
        let pools = if pools_changed {
            new.pools.succeeding(&running.pools)
        } else {
            running.pools.clone()
        };
        let adopted = Config {
            pools,
            node: running.node.clone(),
            kubernetes: running.kubernetes.clone(),
            cluster: running.cluster.clone(),
            layer2: running.layer2.clone(),
            metrics: running.metrics.clone(),
            log: running.log.clone(),
            ..new
        };
        Plan {
            adopted,
            pools_changed,
            peers_changed,
            removed_pools,
            restart_needed,
            voters,
        }
    }

    /// The reply to `lbctl reload` (and the log line).
    pub fn message(&self) -> String {
        let mut changed = Vec::new();
        if self.pools_changed {
            changed.push("pools/services");
        }
        if self.peers_changed {
            changed.push("BGP peers");
        }
        let mut message = if changed.is_empty() {
            "configuration reloaded: no changes applied".to_string()
        } else {
            format!("configuration reloaded: {} applied", changed.join(", "))
        };
        if self.restart_needed {
            message.push_str(
                "; [node], [cluster], [kubernetes], [layer2], [metrics] and [log] changes take effect at the next restart",
            );
        }
        message
    }
}

/// Why a reload that would take IPs from Kubernetes Services is refused (MetalLB refuses
/// such a configuration too): the user moves or deletes those Services first.
pub fn refusal(orphaned: &[(ServiceKey, Vec<IpAddr>)]) -> String {
    let list: Vec<String> = orphaned
        .iter()
        .take(5)
        .map(|(key, ips)| {
            let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
            format!("{key} ({})", ips.join(", "))
        })
        .collect();
    let more = orphaned.len().saturating_sub(list.len());
    format!(
        "reload refused, running the previous configuration: the new pools would take the IP of {}{}; delete those Services or give them addresses in the new pools first",
        list.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Context, parse_str};
    use std::path::Path;

    fn config(text: &str) -> Config {
        let ctx = Context {
            hostname: "n1".into(),
            check_files: false,
        };
        parse_str(text, Path::new("lb.toml"), &ctx)
            .expect("valid")
            .config
    }

    const BASE: &str = r#"
[[pool]]
name = "a"
protocol = "layer2"
addresses = ["10.0.0.10-10.0.0.20"]
"#;

    #[test]
    fn an_identical_file_changes_nothing() {
        let running = config(BASE);
        let plan = Plan::new(&running, config(BASE));
        assert!(!plan.pools_changed && !plan.peers_changed && !plan.restart_needed);
        assert_eq!(plan.adopted, running);
        assert_eq!(plan.message(), "configuration reloaded: no changes applied");
    }

    #[test]
    fn a_removed_pool_is_named_and_restart_only_sections_are_kept_as_running() {
        let running = config(BASE);
        let new = config(
            r#"
[log]
level = "debug"

[[pool]]
name = "b"
protocol = "bgp"
addresses = ["10.0.1.0/24"]
"#,
        );
        let plan = Plan::new(&running, new.clone());
        assert!(plan.pools_changed && plan.restart_needed);
        assert_eq!(plan.removed_pools, ["a"]);
        assert_eq!(plan.adopted.log, running.log, "[log] waits for a restart");
        assert_eq!(plan.adopted.pools, new.pools);
        assert!(plan.message().contains("pools/services applied"));
        assert!(plan.message().contains("next restart"));
    }

    #[test]
    fn a_new_voter_list_is_handed_to_raft_lite_without_a_restart() {
        let cluster = |voters: &str| {
            format!(
                "[node]\nname = \"n1\"\n[cluster]\nmembers = {{ {voters} }}\nsecret_file = \"/k\"\n{BASE}"
            )
        };
        let three = r#"n1 = "10.0.0.1:7946", n2 = "10.0.0.2:7946", n3 = "10.0.0.3:7946""#;
        let four = format!(r#"{three}, n4 = "10.0.0.4:7946""#);
        let running = config(&cluster(three));
        let plan = Plan::new(&running, config(&cluster(&four)));
        assert!(!plan.restart_needed, "{}", plan.message());
        assert_eq!(plan.voters.as_ref().map(|v| v.len()), Some(4));
        assert_eq!(
            plan.adopted.cluster, running.cluster,
            "raft-lite changes it, not the file"
        );
        // Another [cluster] key still waits for a restart.
        let faster = cluster(three).replace("secret_file", "heartbeat = \"40ms\"\nsecret_file");
        let plan = Plan::new(&running, config(&faster));
        assert!(plan.restart_needed && plan.voters.is_none());
    }

    #[test]
    fn a_refusal_names_five_services_and_counts_the_rest() {
        let orphaned: Vec<(ServiceKey, Vec<IpAddr>)> = (0..7)
            .map(|i| {
                (
                    ServiceKey::new("default", format!("s{i}")),
                    vec![format!("10.0.0.{i}").parse().unwrap()],
                )
            })
            .collect();
        let m = refusal(&orphaned);
        assert!(
            m.contains("default/s4 (10.0.0.4)") && !m.contains("s5 ("),
            "{m}"
        );
        assert!(m.contains("and 2 more"), "{m}");
    }
}

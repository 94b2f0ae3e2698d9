//! The demo: the MetalLB lab guide run by lb, end to end, in network namespaces on this
//! machine. Every lab of the guide with its own addresses and ConfigMaps (imported with
//! `lbctl import-metallb`), its kubectl commands against a test API server, three lbd nodes
//! and an FRR router; it prints each step, the IP each Service got, which node answers ARP,
//! the failover gap, the router's routes and the dig answers.
//!
//! Run as root on Debian 12: `scripts/demo` (installs what it needs, builds, runs this), or
//! `cargo build --bins --example demo && target/debug/examples/demo`.

use std::time::Instant;

use lb_testkit::guide::{Guide, GuideConfig, Report};

fn banner(text: &str) {
    let line = "=".repeat(text.len() + 6);
    println!("\n{line}\n== {text} ==\n{line}");
}

fn fmt_ips(r: &Report) -> String {
    r.services
        .iter()
        .map(|(s, ips)| format!("{s} -> {}", ips.join(",")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn main() {
    if not_root() {
        eprintln!("demo: run as root (it creates network namespaces)");
        std::process::exit(1);
    }
    let started = Instant::now();
    let mut reports = Vec::new();

    banner("Part 1: MetalLB in layer 2 mode (Lab 1 and Lab 2)");
    {
        let mut g = Guide::start("demo-l2", GuideConfig::Layer2);
        reports.push(g.layer2());
        reports.push(g.failover());
    } // the lab is torn down here: every process stopped, every namespace deleted

    banner("Part 2: MetalLB in layer 3 mode (BGP to the router)");
    {
        let mut g = Guide::start("demo-l3", GuideConfig::Bgp);
        reports.push(g.layer3());
        reports.push(g.multiple_pools());
        println!(
            "\n--- Before the IP sharing lab: nginx-metallb-13 holds 172.19.100.0 (the lowest \
             address of ip-pool-1), which the guide's coredns-udp-svc asks for; free it"
        );
        g.delete_services("default", &["nginx-metallb-13", "nginx-metallb-13-ip-pool"]);
        reports.push(g.ip_sharing());
    }

    banner("Summary");
    for r in &reports {
        println!("{}", r.lab);
        println!("    Service IPs:     {}", fmt_ips(r));
        if let Some(n) = &r.arp_node {
            println!("    answers ARP:     {n}");
        }
        if let (Some(old), Some(new)) = (&r.failed_node, &r.new_arp_node) {
            let after = r
                .takeover
                .map(|d| format!(" {:.0} ms later", d.as_secs_f64() * 1000.0))
                .unwrap_or_default();
            println!("    failover:        {old} link down -> {new} answers ARP{after}");
        }
        if let (Some(gap), Some(tcp)) = (r.gap, r.tcp_gap) {
            println!(
                "    client gap:      {:.0} ms without ping answers (one every 10 ms); \
                 {:.0} ms between answered TCP connects ({} of {} answered)",
                gap.as_secs_f64() * 1000.0,
                tcp.as_secs_f64() * 1000.0,
                r.probe_ok,
                r.probe_attempts
            );
        }
        if !r.nexthops.is_empty() {
            println!("    router next hops: {}", r.nexthops.join(", "));
        }
        if !r.http_answered_by.is_empty() {
            let by: Vec<&str> = r.http_answered_by.iter().map(String::as_str).collect();
            println!("    HTTP answered by: {}", by.join(", "));
        }
        for (cmd, answer) in &r.dig {
            println!("    {cmd} -> {answer}");
        }
        for n in &r.notes {
            println!("    note: {n}");
        }
    }
    let left = lb_testkit::lab::namespaces_with_prefix(&format!(
        "{}{}-",
        lb_testkit::lab::NS_PREFIX,
        std::process::id()
    ));
    println!(
        "\ndemo finished in {:.1} s; network namespaces left behind: {}",
        started.elapsed().as_secs_f64(),
        if left.is_empty() {
            "none".to_string()
        } else {
            left.join(" ")
        }
    );
    if !left.is_empty() {
        std::process::exit(1);
    }
}

/// Root check without unsafe: /proc/self/status `Uid:` real uid.
fn not_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u != "0"))
        })
        .unwrap_or(true)
}

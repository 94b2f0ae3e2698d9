//! BFD benchmark in the namespace lab (root): node link down → route gone at the router,
//! without BFD (BGP hold timer 9 s) and with BFD 300 ms × 3. Prints numbers; see
//! docs/bench/bfd.md.
//!
//! `cargo run --release --example bench_bfd [-- --trials 5]`
//!
//! The speaker (with its BFD task) runs in this process on a thread moved into the node's
//! namespace, as in bench_bgp. FRR (zebra + bgpd, + bfdd with profile 300 ms / 300 ms / 3 for
//! the BFD run) is the router; `ip monitor route` in the router's namespace timestamps the
//! kernel route's deletion. Each trial: route in the FIB (and BFD Up), `ip link set down`
//! on the node's veth, time until the route is deleted, link up, wait for recovery.

use std::time::{Duration, Instant};

use lb::config::BfdConfig;
use lb_testkit::bench::{arg, ms};
use lb_testkit::bgp_lab::{
    NODE, ROUTER, announced, drain, ip, monitor, peer, start_speaker, wait_route,
};
use lb_testkit::lab::peers::{Frr, FrrConfig, kernel_nexthops};
use lb_testkit::lab::{Lab, wait_until};

fn run(bfd: bool, trials: usize) -> Vec<Duration> {
    let lab = Lab::new(if bfd { "bfdbench" } else { "bfdbnone" });
    let router = lab.router("router", &[&format!("{ROUTER}/24")]);
    let node = lab.node("node1", &[&format!("{NODE}/24")]);
    let mut cfg = FrrConfig::new(64500, ROUTER).neighbor(NODE, 64500);
    if bfd {
        cfg.bfd = Some((300, 300, 3));
    }
    let frr = Frr::start(&router, &cfg).expect("FRR");
    let mon = monitor(&router);
    let bfd_config = bfd.then(|| BfdConfig {
        receive_interval: Duration::from_millis(300),
        transmit_interval: Duration::from_millis(300),
        detect_multiplier: 3,
    });
    let (h, _) = start_speaker(node.ns(), peer(9, bfd_config));
    h.set_announcements(announced(0..1));
    let vip = ip(0).to_string();
    let mut took = Vec::new();
    for r in 0..trials {
        wait_until(Duration::from_secs(60), "route in FRR's FIB", || {
            kernel_nexthops(&router, &format!("{vip}/32"))
                .map(|n| !n.is_empty())
                .unwrap_or(false)
        });
        if bfd {
            wait_until(Duration::from_secs(30), "BFD Up at FRR", || {
                frr.bfd_peer(NODE)
                    .is_some_and(|p| p["status"].as_str() == Some("up"))
            });
        }
        drain(&mon);
        let t0 = Instant::now();
        node.link_down().expect("link down");
        match wait_route(&mon, &vip, true, Duration::from_secs(30)) {
            Some(t) => took.push(t - t0),
            None => eprintln!("trial {r}: route never left the FIB"),
        }
        node.link_up().expect("link up");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rt.block_on(h.shutdown("bench done", Duration::from_secs(2)));
    drop(frr);
    drop(lab);
    took.sort();
    took
}

fn main() {
    let trials = arg("--trials", 5);
    for bfd in [true, false] {
        let t = run(bfd, trials);
        let what = if bfd {
            "BFD 300 ms x 3"
        } else {
            "no BFD, hold 9 s"
        };
        if t.is_empty() {
            println!("link down -> route gone from FRR's FIB ({what}): no successful trial");
            continue;
        }
        println!(
            "link down -> route gone from FRR's FIB ({what}): n={} min {} median {} max {}",
            t.len(),
            ms(t[0]),
            ms(t[t.len() / 2]),
            ms(t[t.len() - 1])
        );
    }
}

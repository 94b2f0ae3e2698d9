//! BGP speaker benchmarks in the namespace lab (root). Prints numbers; see docs/bench/bgp.md.
//!
//! `cargo run --release --example bench_bgp [-- --rounds 100 --scale 10000 --link-rounds 3]`
//!
//! The speaker runs in this process, on a thread moved into the node's namespace with a
//! current-thread tokio runtime, so its CPU time is that thread's. FRR (zebra + bgpd) is the
//! router; `ip monitor route` in the router's namespace timestamps kernel route changes.
//!
//! 1. announce → route in FRR's kernel FIB: one more IP per round (median, p99).
//! 2. N prefixes → all in FRR's BGP RIB: time, speaker CPU seconds, peak RSS of this process.
//! 3. graceful shutdown (withdraw + Cease, what SIGTERM does) → route gone from the FIB.
//! 4. node link down → route gone from the FIB (FRR timers 3 s / 9 s, no BFD).

use std::time::{Duration, Instant};

use lb_testkit::bench::{arg, cpu_seconds, ms, status_kib};
use lb_testkit::bgp_lab::{
    NODE, ROUTER, announced, drain, ip, monitor, peer, start_speaker, wait_route,
};
use lb_testkit::lab::peers::{Frr, FrrConfig};
use lb_testkit::lab::{Lab, wait_until};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn frr_prefixes(frr: &Frr) -> u64 {
    frr.bgp_summary_json()
        .ok()
        .and_then(|v| v["ipv4Unicast"]["peers"][NODE]["pfxRcd"].as_u64())
        .unwrap_or(0)
}

fn main() {
    let rounds = arg("--rounds", 100) as u32;
    let scale = arg("--scale", 10_000) as u32;
    let link_rounds = arg("--link-rounds", 3);
    let lab = Lab::new("bgpbench");
    let router = lab.router("router", &[&format!("{ROUTER}/24")]);
    let node = lab.node("node1", &[&format!("{NODE}/24")]);
    let frr = Frr::start(
        &router,
        &FrrConfig::new(64500, ROUTER).neighbor(NODE, 64500),
    )
    .expect("FRR");
    let mon = monitor(&router);

    // 1. announce → FIB latency.
    let (h, tid) = start_speaker(node.ns(), peer(9, None));
    wait_until(Duration::from_secs(20), "session up", || {
        frr.neighbor_state(NODE).as_deref() == Some("Established")
    });
    let mut lat = Vec::new();
    for i in 0..rounds {
        drain(&mon);
        let t0 = Instant::now();
        h.set_announcements(announced(0..i + 1));
        let p = format!("{}", ip(i));
        match wait_route(&mon, &p, false, Duration::from_secs(10)) {
            Some(t) => lat.push(t - t0),
            None => eprintln!("round {i}: {p} never reached the FIB"),
        }
    }
    lat.sort();
    println!(
        "announce -> FRR kernel FIB: n={} median {} p99 {} max {}",
        lat.len(),
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(lat[lat.len() - 1])
    );

    // 2. scale.
    let speaker_stat = format!("/proc/self/task/{tid}/stat");
    let cpu0 = cpu_seconds(&speaker_stat);
    let t0 = Instant::now();
    h.set_announcements(announced(0..scale));
    wait_until(
        Duration::from_secs(300),
        "all prefixes in FRR's RIB",
        || frr_prefixes(&frr) >= u64::from(scale),
    );
    let took = t0.elapsed();
    println!(
        "{scale} prefixes -> FRR RIB: {} ; speaker CPU {:.2} s ; peak RSS of the bench process {} MiB",
        ms(took),
        cpu_seconds(&speaker_stat) - cpu0,
        status_kib("/proc/self/status", "VmHWM:") / 1024
    );
    // Back to one prefix for the shutdown rounds.
    h.set_announcements(announced(0..1));
    wait_until(Duration::from_secs(120), "RIB shrinks", || {
        frr_prefixes(&frr) == 1
    });

    // 3. graceful shutdown → route gone.
    let mut gone = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let p0 = format!("{}", ip(0));
    let mut handle = h;
    for r in 0..5 {
        if r > 0 {
            let (h2, _) = start_speaker(node.ns(), peer(9, None));
            drain(&mon);
            h2.set_announcements(announced(0..1));
            wait_route(&mon, &p0, false, Duration::from_secs(20)).expect("route back");
            handle = h2;
        }
        drain(&mon);
        let t0 = Instant::now();
        let _ = rt.block_on(handle.shutdown("bench", Duration::from_secs(5)));
        match wait_route(&mon, &p0, true, Duration::from_secs(20)) {
            Some(t) => gone.push(t - t0),
            None => eprintln!("shutdown round {r}: route never left the FIB"),
        }
    }
    gone.sort();
    println!(
        "shutdown (withdraw + Cease) -> route gone from FIB: n={} median {} max {}",
        gone.len(),
        ms(pct(&gone, 0.5)),
        ms(gone[gone.len() - 1])
    );

    // 4. link down → route gone (hold 9 s at FRR, 3 s keepalives).
    let (h, _) = start_speaker(node.ns(), peer(9, None));
    h.set_announcements(announced(0..1));
    let mut down = Vec::new();
    for r in 0..link_rounds {
        wait_until(Duration::from_secs(30), "route in FIB", || {
            lb_testkit::lab::peers::kernel_nexthops(&router, &p0)
                .map(|n| !n.is_empty())
                .unwrap_or(false)
        });
        drain(&mon);
        let t0 = Instant::now();
        node.link_down().expect("link down");
        match wait_route(&mon, &p0, true, Duration::from_secs(30)) {
            Some(t) => down.push(t - t0),
            None => eprintln!("link round {r}: route never left the FIB"),
        }
        node.link_up().expect("link up");
    }
    down.sort();
    if !down.is_empty() {
        println!(
            "link down -> route gone from FIB (hold 9 s): n={} median {} max {}",
            down.len(),
            ms(pct(&down, 0.5)),
            ms(down[down.len() - 1])
        );
    }
    let _ = rt.block_on(h.shutdown("bench done", Duration::from_secs(2)));
    drop(frr);
    drop(lab);
}

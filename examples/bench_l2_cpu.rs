//! Benchmark: lbd's CPU on the layer-2 owner while iperf3 pushes traffic to the VIP through
//! that node, compared with an idle window of the same length. lbd's packet socket carries a
//! classic BPF filter (ARP and NS/NA only), so data traffic should never reach it.
//!
//! The 3-node lab of the failover tests: iperf3 server on the owner bound to the VIP, iperf3
//! client on the client host. Per repetition: an idle window, a TCP window (one stream,
//! unlimited), a UDP window (64-byte datagrams, unlimited: the most packets per second).
//! CPU is utime+stime of lbd's process (all threads) from /proc/PID/stat.
//!
//! Run as root:
//!   cargo build --release --bin lbd && cargo run --release --example bench_l2_cpu [-- --seconds 10 --reps 3]

use std::time::{Duration, Instant};

use lb_testkit::l2cluster::{Cluster, VIP, start_cluster};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid` in ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("lbd is running");
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}

#[derive(Clone, Copy, PartialEq)]
enum Window {
    Idle,
    Tcp,
    Udp,
}

/// One window: (lbd CPU seconds, throughput in Mbit/s, packets per second).
fn window(c: &Cluster, pid: u32, kind: Window, secs: u64) -> (f64, f64, f64) {
    let t = secs.to_string();
    let before = cpu_ticks(pid);
    let start = Instant::now();
    let (mbps, pps) = match kind {
        Window::Idle => {
            std::thread::sleep(Duration::from_secs(secs));
            (0.0, 0.0)
        }
        Window::Tcp | Window::Udp => {
            let mut args = vec!["iperf3", "-c", VIP, "-t", &t, "-J"];
            if kind == Window::Udp {
                args.extend(["-u", "-b", "0", "-l", "64"]);
            }
            let out = c.client.stdout(&args).expect("iperf3 client");
            let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
            let end = &v["end"];
            if kind == Window::Tcp {
                let bps = end["sum_received"]["bits_per_second"]
                    .as_f64()
                    .unwrap_or(0.0);
                (bps / 1e6, 0.0)
            } else {
                let sum = &end["sum"];
                let secs = sum["seconds"].as_f64().unwrap_or(1.0);
                let pkts = sum["packets"].as_f64().unwrap_or(0.0);
                let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
                let received = pkts - lost;
                (received * 64.0 * 8.0 / secs / 1e6, received / secs)
            }
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - before) as f64 / clk_tck();
    // Normalise to the nominal window length (iperf3 takes a little longer to set up).
    (cpu * secs as f64 / elapsed, mbps, pps)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let secs = arg("--seconds", 10);
    let reps = arg("--reps", 3);
    let c = start_cluster("bcpu");
    let (p, owner) = c.probe_until_owned(Duration::from_secs(2));
    drop(p);
    let pid = c.lbds[owner].as_ref().expect("owner's lbd").pid();
    let server = c.nodes[owner]
        .spawn(&["iperf3", "-s", "--forceflush", "-B", VIP, "-p", "5201"])
        .expect("iperf3 server");
    server
        .wait_for_log("Server listening", Duration::from_secs(10))
        .expect("iperf3 server listens");
    eprintln!(
        "owner node{} (lbd pid {pid}); windows of {secs} s, {reps} repetitions",
        owner + 1
    );
    println!(
        "| rep | lbd CPU idle | lbd CPU, TCP | TCP throughput | lbd CPU, UDP 64 B | UDP packets/s |"
    );
    println!("|---|---|---|---|---|---|");
    let (mut idle, mut tcp, mut udp) = (vec![], vec![], vec![]);
    let ms = |s: f64| format!("{:.0} ms", s * 1e3);
    for r in 1..=reps {
        let (ci, _, _) = window(&c, pid, Window::Idle, secs);
        let (ct, mbps, _) = window(&c, pid, Window::Tcp, secs);
        let (cu, _, pps) = window(&c, pid, Window::Udp, secs);
        println!(
            "| {r} | {} | {} | {:.1} Gbit/s | {} | {:.0} k |",
            ms(ci),
            ms(ct),
            mbps / 1e3,
            ms(cu),
            pps / 1e3
        );
        idle.push(ci);
        tcp.push(ct);
        udp.push(cu);
    }
    // The traffic really went to the owner, and it still holds the VIP.
    let still = c.curl(VIP);
    assert_eq!(
        still,
        Some(c.name(owner)),
        "curl http://{VIP}/ after the run"
    );
    println!(
        "\nmedian lbd CPU per {secs} s window: idle {}, TCP {}, UDP {}",
        ms(median(idle)),
        ms(median(tcp)),
        ms(median(udp)),
    );
}

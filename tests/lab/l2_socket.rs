//! The filtered packet socket and the responder on a real link (root, namespaces made here).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lb::control::metrics::Metrics;
use lb::l2::iface::Interface;
use lb::l2::responder::{Claim, Input, Params, Responder};
use lb::l2::socket::{self, AsyncPacketSocket};
use lb::l2::{ETHERTYPE_ARP, ETHERTYPE_IPV6, MacAddr, arp, ndp};
use lb::model::ServiceKey;
use lb::sys;
use lb_testkit::lab::pair::{MAC_B, VethPair};
use tokio::sync::mpsc;

/// Runs `f` on a fresh thread inside namespace `ns` with a current-thread tokio runtime.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        sys::netns::enter(&ns).expect("entering the test namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f())
    })
}

#[test]
fn socket_receives_arp_and_ns_but_not_echo_or_udp() {
    let lab = VethPair::new("sock");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(&lab.b, move || {
        Box::pin(async move {
            let ifindex = sys::if_nametoindex("vb").expect("vb exists");
            let sock = AsyncPacketSocket::open(ifindex, "vb").expect("open packet socket");
            ready_tx.send(()).expect("main thread waits");
            let mut frames: Vec<Vec<u8>> = Vec::new();
            let mut buf = vec![0u8; 2048];
            // The marker ARP request for 10.98.0.99 is sent last: once it is here, every
            // earlier frame on the link has been seen (one link delivers in order).
            let marker = async {
                loop {
                    let (n, in_if) = sock.recv(&mut buf).await.expect("recv");
                    assert_eq!(in_if, ifindex);
                    let f = buf[..n].to_vec();
                    let is_marker = arp::decode(&f).is_ok_and(|a| {
                        a.target_ip == "10.98.0.99".parse::<std::net::Ipv4Addr>().unwrap()
                    });
                    frames.push(f);
                    if is_marker {
                        return;
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(20), marker)
                .await
                .expect("marker ARP request never arrived");
            frames
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("socket opened");

    // Data traffic that must not reach the socket: ICMP echo both families, UDP.
    let ping = lab.exec(
        &lab.a,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.98.0.2"],
    );
    assert!(ping.status.success(), "ping: {ping:?}");
    let ping6 = lab.exec(
        &lab.a,
        &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "fd98::2"],
    );
    assert!(ping6.status.success(), "ping6: {ping6:?}");
    for _ in 0..5 {
        let udp = lab.exec(
            &lab.a,
            &[
                "bash",
                "-c",
                "echo data > /dev/udp/10.98.0.2/9999; echo data > /dev/udp/fd98::2/9999",
            ],
        );
        assert!(udp.status.success(), "udp: {udp:?}");
    }
    // What it must receive: ARP (arping) and NS (ndisc6), then the marker.
    let arping = lab.exec(
        &lab.a,
        &["arping", "-c", "1", "-w", "3", "-I", "va", "10.98.0.2"],
    );
    assert!(arping.status.success(), "arping: {arping:?}");
    let ndisc = lab.exec(&lab.a, &["ndisc6", "-1", "-r", "3", "fd98::2", "va"]);
    assert!(ndisc.status.success(), "ndisc6: {ndisc:?}");
    let _ = lab.exec(
        &lab.a,
        &["arping", "-c", "1", "-w", "1", "-I", "va", "10.98.0.99"],
    );

    let frames = receiver.join().expect("receiver thread");
    let mut arp_requests = 0;
    let mut ns = 0;
    for f in &frames {
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        match ethertype {
            ETHERTYPE_ARP => {
                let a = arp::decode(f).expect("ARP decodes");
                if a.op == arp::ArpOp::Request {
                    arp_requests += 1;
                }
            }
            ETHERTYPE_IPV6 => {
                let n = ndp::decode(f).unwrap_or_else(|e| panic!("non-NDP IPv6 got through: {e}"));
                if matches!(n.message, ndp::NdpMessage::Solicitation(_)) {
                    ns += 1;
                }
            }
            other => panic!("frame with EtherType {other:#06x} got through the filter"),
        }
    }
    assert!(arp_requests >= 2, "ARP requests seen: {arp_requests}");
    assert!(ns >= 1, "NS seen: {ns}");
}

#[test]
fn joining_a_solicited_node_group_adds_the_multicast_mac_to_the_link() {
    let lab = VethPair::new("mcast");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let worker = in_netns(&lab.b, move || {
        Box::pin(async move {
            let ifindex = sys::if_nametoindex("vb").expect("vb exists");
            let sock = AsyncPacketSocket::open(ifindex, "vb").expect("open");
            let mac: MacAddr = "33:33:ff:12:34:56".parse().unwrap();
            sock.join_multicast(ifindex, mac).expect("join");
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
            sock.leave_multicast(ifindex, mac).expect("leave");
        })
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("joined");
    let maddr = lab.exec(&lab.b, &["ip", "maddr", "show", "dev", "vb"]);
    let text = String::from_utf8_lossy(&maddr.stdout).to_string();
    done_tx.send(()).unwrap();
    worker.join().expect("worker");
    assert!(text.contains("33:33:ff:12:34:56"), "ip maddr: {text}");
    let after = lab.exec(&lab.b, &["ip", "maddr", "show", "dev", "vb"]);
    assert!(!String::from_utf8_lossy(&after.stdout).contains("33:33:ff:12:34:56"));
}

#[test]
fn arping_and_ndisc6_get_answers_from_the_responder_for_a_vip_no_kernel_owns() {
    let lab = VethPair::new("resp");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<Input>(16);
    let metrics = Metrics::new();
    let task_metrics = metrics.clone();
    let responder = in_netns(&lab.b, move || {
        Box::pin(async move {
            let ifindex = sys::if_nametoindex("vb").expect("vb exists");
            let sock = AsyncPacketSocket::open(ifindex, "vb").expect("open");
            let mut r = Responder::new(Params::default());
            r.step(
                Instant::now(),
                Input::LinkChanged(Interface {
                    index: ifindex,
                    name: "vb".into(),
                    mac: MAC_B.parse().unwrap(),
                    up: true,
                    addresses: vec![
                        "10.98.0.2/24".parse().unwrap(),
                        "fd98::2/64".parse().unwrap(),
                    ],
                }),
            );
            // The gate is asked at the moment each frame leaves: the first gratuitous NA
            // for fd98::200 says the driver has taken the IPs (and joined their groups).
            let (sending_tx, mut sending_rx) = mpsc::unbounded_channel::<IpAddr>();
            let gate: lb::l2::socket::Gate = std::sync::Arc::new(move |ip| {
                let _ = sending_tx.send(ip);
                true
            });
            let inputs = stop_rx;
            let claims = ["10.98.0.200", "fd98::200"]
                .iter()
                .map(|ip| Claim {
                    ip: ip.parse::<IpAddr>().unwrap(),
                    interfaces: vec![],
                    services: vec![ServiceKey::new("default", "nginx")],
                })
                .collect();
            // Feed the ownership through the driver so its multicast joins are applied.
            let (in_tx, in_rx) = mpsc::channel(16);
            in_tx.send(Input::OwnershipChanged(claims)).await.unwrap();
            let forward = tokio::spawn(async move {
                let mut inputs = inputs;
                while let Some(i) = inputs.recv().await {
                    if in_tx.send(i).await.is_err() {
                        break;
                    }
                }
            });
            let driver = tokio::spawn(socket::run(r, sock, in_rx, gate, task_metrics));
            let v6: IpAddr = "fd98::200".parse().unwrap();
            loop {
                match sending_rx.recv().await {
                    Some(ip) if ip == v6 => break,
                    Some(_) => {}
                    None => panic!("driver ended"),
                }
            }
            ready_tx.send(()).unwrap();
            forward.await.unwrap();
            let r = driver.await.unwrap();
            r.counters()
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("responder ready");

    let arping = lab.exec(
        &lab.a,
        &["arping", "-c", "1", "-w", "3", "-I", "va", "10.98.0.200"],
    );
    let arping_out = String::from_utf8_lossy(&arping.stdout).to_uppercase();
    let ndisc = lab.exec(&lab.a, &["ndisc6", "-1", "-r", "3", "fd98::200", "va"]);
    let ndisc_out = String::from_utf8_lossy(&ndisc.stdout).to_uppercase();
    // An address nobody owns stays unanswered.
    let unowned = lab.exec(
        &lab.a,
        &["arping", "-c", "1", "-w", "1", "-I", "va", "10.98.0.201"],
    );
    let owned_text = metrics.encode();
    // Releasing the IPs drops their series; the task ends after handling that input.
    stop_tx
        .blocking_send(Input::OwnershipChanged(Vec::new()))
        .expect("driver still running");
    drop(stop_tx);
    let counters = responder.join().expect("responder thread");
    let released_text = metrics.encode();

    assert!(arping.status.success(), "arping: {arping:?}");
    assert!(
        arping_out.contains(&MAC_B.to_uppercase()),
        "arping: {arping_out}"
    );
    assert!(ndisc.status.success(), "ndisc6: {ndisc:?}");
    assert!(
        ndisc_out.contains(&MAC_B.to_uppercase()),
        "ndisc6: {ndisc_out}"
    );
    assert!(
        !unowned.status.success(),
        "10.98.0.201 was answered: {unowned:?}"
    );
    assert!(
        counters.arp_replies_sent >= 1 && counters.na_replies_sent >= 1,
        "{counters:?}"
    );
    assert!(counters.gratuitous_arp_sent >= 1 && counters.unsolicited_na_sent >= 1);

    for ip in ["10.98.0.200", "fd98::200"] {
        for series in [
            "lb_layer2_requests_received_total",
            "lb_layer2_responses_sent_total",
            "lb_layer2_gratuitous_sent_total",
        ] {
            let v = sample(&owned_text, &format!("{series}{{ip=\"{ip}\"}}"));
            assert!(v.is_some_and(|v| v >= 1.0), "{series} {ip}: {owned_text}");
        }
    }
    assert!(
        !owned_text.contains("10.98.0.201"),
        "an IP not owned has no series: {owned_text}"
    );
    assert!(
        !released_text.contains("ip=\""),
        "released IPs keep series: {released_text}"
    );
}

/// The value of one sample line (`name{labels} value`) of an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

//! rtnetlink events in a namespace made here: link down/up and address changes arrive as
//! typed events; addresses on lo are added and removed.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use lb::net::NetEvent;
use lb::net::netlink::NetWatcher;
use lb::sys;
use lb_testkit::lab::pair::{MAC_B, VethPair};

/// Waits (bounded) for the first event matching `pred`, returning the ones skipped.
async fn wait_for(
    w: &mut NetWatcher,
    what: &str,
    pred: impl Fn(&NetEvent) -> bool,
) -> Vec<NetEvent> {
    let mut skipped = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = w.next_event().await {
            if pred(&e) {
                return;
            }
            skipped.push(e);
        }
        panic!("netlink connection ended while waiting for {what}");
    })
    .await;
    assert!(found.is_ok(), "no {what} event; saw {skipped:?}");
    skipped
}

#[test]
fn link_down_up_and_address_add_produce_events() {
    let lab = VethPair::new("nl");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let ns = lab.b.clone();
    let watcher = std::thread::spawn(move || {
        sys::netns::enter(&ns).expect("enter namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut w, table) = NetWatcher::start().await.expect("netlink start");
            let vb = table.by_name("vb").expect("vb in the initial dump").clone();
            assert!(vb.up, "{vb:?}");
            assert_eq!(vb.mac.to_string(), MAC_B);
            assert!(
                vb.addresses.contains(&"10.98.0.2/24".parse().unwrap()),
                "{vb:?}"
            );
            assert!(
                vb.addresses.contains(&"fd98::2/64".parse().unwrap()),
                "{vb:?}"
            );
            let index = vb.index;
            ready_tx.send(index).unwrap();
            go_rx.recv().unwrap();
            wait_for(&mut w, "LinkDown vb", |e| {
                matches!(e, NetEvent::LinkDown { ifindex, name, mac }
                    if *ifindex == index && name == "vb" && mac.to_string() == MAC_B)
            })
            .await;
            wait_for(
                &mut w,
                "LinkUp vb",
                |e| matches!(e, NetEvent::LinkUp { ifindex, .. } if *ifindex == index),
            )
            .await;
            wait_for(&mut w, "AddressAdded 10.98.0.77/24", |e| {
                matches!(e, NetEvent::AddressAdded { ifindex, address }
                    if *ifindex == index && address.to_string() == "10.98.0.77/24")
            })
            .await;
            wait_for(&mut w, "AddressRemoved 10.98.0.77/24", |e| {
                matches!(e, NetEvent::AddressRemoved { ifindex, address }
                    if *ifindex == index && address.to_string() == "10.98.0.77/24")
            })
            .await;
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("watcher started");
    lab.ip(&lab.b, &["link", "set", "vb", "down"]);
    lab.ip(&lab.b, &["link", "set", "vb", "up"]);
    lab.ip(&lab.b, &["addr", "add", "10.98.0.77/24", "dev", "vb"]);
    lab.ip(&lab.b, &["addr", "del", "10.98.0.77/24", "dev", "vb"]);
    go_tx.send(()).unwrap();
    watcher.join().expect("watcher thread");
}

fn lo_addresses() -> String {
    // Run from the namespace thread: children inherit the thread's network namespace.
    let out = Command::new("ip")
        .args(["-o", "addr", "show", "dev", "lo"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn static_service_ip_is_added_to_and_removed_from_lo_idempotently() {
    let lab = VethPair::new("lo");
    let ns = lab.b.clone();
    std::thread::spawn(move || {
        sys::netns::enter(&ns).expect("enter namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut w, table) = NetWatcher::start().await.expect("netlink start");
            let lo = table.by_name("lo").expect("lo").index;
            for ip in ["10.98.9.9", "fd98:9::9"] {
                let ip: IpAddr = ip.parse().unwrap();
                w.add_address_to_lo(ip).await.expect("add");
                w.add_address_to_lo(ip).await.expect("adding twice is fine");
                wait_for(&mut w, "AddressAdded on lo", |e| {
                    matches!(e, NetEvent::AddressAdded { ifindex, address }
                        if *ifindex == lo && address.addr() == ip && address.prefix_len() == address.max_prefix_len())
                })
                .await;
                assert!(lo_addresses().contains(&ip.to_string()));
                w.remove_address_from_lo(ip).await.expect("remove");
                w.remove_address_from_lo(ip).await.expect("removing twice is fine");
                wait_for(&mut w, "AddressRemoved on lo", |e| {
                    matches!(e, NetEvent::AddressRemoved { ifindex, address }
                        if *ifindex == lo && address.addr() == ip)
                })
                .await;
                assert!(!lo_addresses().contains(&ip.to_string()));
            }
        })
    })
    .join()
    .expect("namespace thread");
}

//! org.lb.Daemon1 on a private dbus-daemon (our policy file included) and the real `lbctl`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use lb::control::dbus::{self, ReloadReply, ReloadRequest};
use lb::control::state::*;
use lb::control::{ControlError, ControlHandle};
use tokio::sync::{mpsc, watch};

use lb_testkit::dbus::{Bus, signal_stream};

const TIMEOUT: Duration = Duration::from_secs(20);

/// The shared fixture (`lb::control::state::sample`), also used by the render unit tests.
fn snapshot() -> Snapshot {
    sample()
}

struct Served {
    handle: ControlHandle,
    tx: watch::Sender<Snapshot>,
}

/// Serve `snapshot()`; reloads are answered with `reply` by a stand-in for the daemon.
async fn serve(bus: &Bus, reply: ReloadReply) -> Served {
    let (tx, rx) = watch::channel(snapshot());
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    tokio::spawn(async move {
        while let Some(req) = reload_rx.recv().await {
            let _ = req.reply.send(reply.clone());
        }
    });
    let handle = tokio::time::timeout(
        TIMEOUT,
        dbus::serve(Some(bus.address.clone()), rx, reload_tx),
    )
    .await
    .expect("serve in time")
    .expect("serve");
    Served { handle, tx }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run the real lbctl, optionally as another user via setpriv.
async fn lbctl_as(user: Option<&[&str]>, args: &[&str]) -> Run {
    let lbctl = env!("CARGO_BIN_EXE_lbctl");
    let mut cmd = match user {
        Some(setpriv_args) => {
            let mut c = tokio::process::Command::new("setpriv");
            c.args(setpriv_args).arg("--").arg(lbctl);
            c
        }
        None => tokio::process::Command::new(lbctl),
    };
    cmd.args(args)
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
        .kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .expect("lbctl finishes")
        .expect("lbctl runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn lbctl(bus: &Bus, args: &[&str]) -> Run {
    let mut all = vec!["--bus", &bus.address];
    all.extend_from_slice(args);
    lbctl_as(None, &all).await
}

fn ok_reply() -> ReloadReply {
    ReloadReply {
        ok: true,
        message: "1 pool changed".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_is_the_served_snapshot() {
    let bus = Bus::start();
    let _s = serve(&bus, ok_reply()).await;
    let r = lbctl(&bus, &["status", "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: Snapshot = serde_json::from_str(&r.stdout).expect("lbctl printed a Snapshot");
    assert_eq!(got, snapshot());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["pools"][1]["total"], "18446744073709551616");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_part_json_matches_its_slice_of_the_snapshot() {
    let bus = Bus::start();
    let _s = serve(&bus, ok_reply()).await;
    let want = snapshot();
    let r = lbctl(&bus, &["services", "--json"]).await;
    assert_eq!(
        serde_json::from_str::<Vec<ServiceStatus>>(&r.stdout).unwrap(),
        want.services
    );
    let r = lbctl(&bus, &["pools", "--json"]).await;
    assert_eq!(
        serde_json::from_str::<Vec<PoolStatus>>(&r.stdout).unwrap(),
        want.pools
    );
    let r = lbctl(&bus, &["peers", "--json"]).await;
    assert_eq!(
        serde_json::from_str::<Vec<PeerStatus>>(&r.stdout).unwrap(),
        want.peers
    );
    let r = lbctl(&bus, &["cluster", "--json"]).await;
    assert_eq!(
        serde_json::from_str::<ClusterStatus>(&r.stdout).unwrap(),
        want.cluster
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_aligned_and_complete() {
    let bus = Bus::start();
    let _s = serve(&bus, ok_reply()).await;

    let r = lbctl(&bus, &["services"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    let state_col = lines[0].find("STATE").unwrap();
    assert_eq!(&lines[1][state_col..], "announced");
    assert_eq!(
        &lines[2][state_col..],
        "failed: no available IPs in pool ip-pool-1"
    );
    assert!(lines[1].starts_with("default/nginx") && lines[1].contains("worker-1"));

    let r = lbctl(&bus, &["pools"]).await;
    let rows: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["POOL", "PROTOCOL", "TOTAL", "USED", "FREE"]);
    assert_eq!(rows[1], ["ip-space-1", "layer2", "258", "1", "257"]);
    assert_eq!(rows[2][2], "18446744073709551616");

    let r = lbctl(&bus, &["peers"]).await;
    assert!(r.stdout.lines().nth(1).unwrap().split_whitespace().eq([
        "10.10.100.1",
        "64500",
        "64501",
        "Established",
        "1h2m5s",
        "2",
        "5"
    ]));

    let r = lbctl(&bus, &["cluster"]).await;
    assert!(
        r.stdout
            .starts_with("term 7, leader worker-1, this node is leader"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("worker-2") && r.stdout.contains("4200ms ago"));

    let r = lbctl(&bus, &["status"]).await;
    assert!(r.stdout.contains("ready: leader of term 7"), "{}", r.stdout);
    assert!(r.stdout.contains("2 (1 announced, 1 failed)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_round_trip_reports_success() {
    let bus = Bus::start();
    let _s = serve(&bus, ok_reply()).await;
    let r = lbctl(&bus, &["reload"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "reloaded: 1 pool changed\n");
    let r = lbctl(&bus, &["reload", "--json"]).await;
    let reply: ReloadReply = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(reply, ok_reply());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reload_exits_1_with_the_reason() {
    let bus = Bus::start();
    let refused = ReloadReply {
        ok: false,
        message: "/etc/lb.toml:3:12: expected a CIDR".into(),
    };
    let _s = serve(&bus, refused.clone()).await;
    let r = lbctl(&bus, &["reload"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains("reload refused")
            && r.stderr.contains("/etc/lb.toml:3:12: expected a CIDR"),
        "{}",
        r.stderr
    );
    let r = lbctl(&bus, &["reload", "--json"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        serde_json::from_str::<ReloadReply>(&r.stdout).unwrap(),
        refused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_when_daemon_loop_is_gone_answers_false() {
    let bus = Bus::start();
    let (_tx, rx) = watch::channel(snapshot());
    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(1);
    drop(reload_rx);
    let _h = dbus::serve(Some(bus.address.clone()), rx, reload_tx)
        .await
        .unwrap();
    let r = lbctl(&bus, &["reload"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("shutting down"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lbd_every_query_says_not_running_and_exits_3() {
    let bus = Bus::start();
    for cmd in ["status", "services", "pools", "peers", "cluster", "reload"] {
        let r = lbctl(&bus, &[cmd]).await;
        assert_eq!(r.code, 3, "{cmd}: {}", r.stderr);
        assert_eq!(
            r.stderr,
            "lbctl: lbd is not running (no org.lb.Daemon1 on the system bus)\n"
        );
        assert!(r.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_bus_is_an_error_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:path={}", dir.path().join("none").display());
    let r = lbctl_as(None, &["--bus", &addr, "status"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("lbctl: cannot connect to the bus at unix:path="),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_bus_address_comes_from_the_environment() {
    let bus = Bus::start();
    let _s = serve(&bus, ok_reply()).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["peers", "--json"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Vec<PeerStatus>>(&out.stdout).unwrap(),
        snapshot().peers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busctl_introspection_shows_the_interface() {
    let bus = Bus::start();
    let _s = serve(&bus, ok_reply()).await;
    let out = tokio::process::Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args([
            "introspect",
            "org.lb.Daemon1",
            "/org/lb/Daemon1",
            "org.lb.Daemon1",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let member = |name: &str, kind: &str, sig: &str| {
        text.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[0] == name && f[1] == kind && f[2] == sig
        })
    };
    for m in [
        "GetStatus",
        "GetServices",
        "GetPools",
        "GetPeers",
        "GetCluster",
    ] {
        assert!(
            member(&format!(".{m}"), "method", "-"),
            "{m} missing:\n{text}"
        );
    }
    assert!(member(".Reload", "method", "-"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(".Reload") && l.contains("bs")),
        "{text}"
    );
    for (p, sig) in [
        ("Status", "s"),
        ("Ready", "b"),
        ("Leader", "s"),
        ("Term", "t"),
        ("Node", "s"),
    ] {
        assert!(
            member(&format!(".{p}"), "property", sig),
            "{p} missing:\n{text}"
        );
    }
    assert!(member(".OwnershipChanged", "signal", "ss"), "{text}");

    let term = tokio::process::Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args([
            "get-property",
            "org.lb.Daemon1",
            "/org/lb/Daemon1",
            "org.lb.Daemon1",
            "Term",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&term.stdout).trim(), "t 7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_changed_signal_reaches_listeners() {
    let bus = Bus::start();
    let s = serve(&bus, ok_reply()).await;
    let (_conn, mut stream) = signal_stream(&bus, "org.lb.Daemon1", "OwnershipChanged").await;
    s.handle
        .ownership_changed("10.10.100.200".parse().unwrap(), Some("worker-2"))
        .await
        .unwrap();
    s.handle
        .ownership_changed("fd00:10::1".parse().unwrap(), None)
        .await
        .unwrap();
    for want in [("10.10.100.200", "worker-2"), ("fd00:10::1", "")] {
        let msg = tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let (ip, owner): (String, String) = msg.body().deserialize().unwrap();
        assert_eq!((ip.as_str(), owner.as_str()), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_change_emits_properties_changed() {
    let bus = Bus::start();
    let s = serve(&bus, ok_reply()).await;
    let (_conn, mut stream) =
        signal_stream(&bus, "org.freedesktop.DBus.Properties", "PropertiesChanged").await;
    s.tx.send_modify(|snap| {
        snap.cluster.term = 8;
        snap.cluster.leader = Some("worker-2".into());
    });
    let mut changed = Vec::new();
    while changed.len() < 2 {
        let msg = tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let (iface, props, _): (
            String,
            std::collections::HashMap<String, zbus::OwnedVariant>,
            Vec<String>,
        ) = msg.body().deserialize().unwrap();
        assert_eq!(iface, "org.lb.Daemon1");
        changed.extend(props.into_iter().map(|(k, v)| format!("{k}={v:?}")));
    }
    changed.sort();
    assert!(
        changed[0].starts_with("Leader=") && changed[0].contains("worker-2"),
        "{changed:?}"
    );
    assert!(
        changed[1].starts_with("Term=") && changed[1].contains('8'),
        "{changed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_server_gets_name_taken_and_first_keeps_it() {
    let bus = Bus::start();
    let _s = serve(&bus, ok_reply()).await;
    let (_tx, rx) = watch::channel(snapshot());
    let (reload_tx, _reload_rx) = mpsc::channel(1);
    let err = dbus::serve(Some(bus.address.clone()), rx, reload_tx)
        .await
        .err()
        .expect("second serve fails");
    assert!(matches!(err, ControlError::NameTaken { .. }), "{err}");
    // The first server keeps the name and still answers.
    let r = lbctl(&bus, &["cluster", "--json"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
}

fn nobody(groups: &str) -> Vec<String> {
    let mut v = vec!["--reuid=65534".to_string(), "--regid=65534".to_string()];
    if groups.is_empty() {
        v.push("--clear-groups".into());
    } else {
        v.push(format!("--groups={groups}"));
    }
    v
}

fn can_switch_users() -> bool {
    // Needs root (CAP_SETUID); this suite runs as root in CI.
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_lets_anyone_read_but_only_root_and_adm_reload() {
    assert!(
        can_switch_users(),
        "the policy test needs root to run lbctl as nobody"
    );
    let bus = Bus::start();
    let _s = serve(&bus, ok_reply()).await;
    let lbctl_path = PathBuf::from(env!("CARGO_BIN_EXE_lbctl"));
    assert!(lbctl_path.exists());

    let plain = nobody("");
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let r = lbctl_as(Some(&plain), &["--bus", &bus.address, "services", "--json"]).await;
    assert_eq!(r.code, 0, "nobody may read: {}", r.stderr);
    assert_eq!(
        serde_json::from_str::<Vec<ServiceStatus>>(&r.stdout).unwrap(),
        snapshot().services
    );

    let r = lbctl_as(Some(&plain), &["--bus", &bus.address, "reload"]).await;
    assert_eq!(
        r.code, 1,
        "nobody must not reload: {} {}",
        r.stdout, r.stderr
    );
    assert!(
        r.stderr
            .starts_with("lbctl: permission denied calling Reload"),
        "{}",
        r.stderr
    );

    let adm = nobody("4");
    let adm: Vec<&str> = adm.iter().map(String::as_str).collect();
    let r = lbctl_as(Some(&adm), &["--bus", &bus.address, "reload"]).await;
    assert_eq!(r.code, 0, "group adm may reload: {}", r.stderr);
    assert_eq!(r.stdout, "reloaded: 1 pool changed\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_lets_only_root_and_adm_remove_members() {
    assert!(
        can_switch_users(),
        "the policy test needs root to run lbctl as nobody"
    );
    let bus = Bus::start();
    let _s = serve(&bus, ok_reply()).await;
    let plain = nobody("");
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let r = lbctl_as(
        Some(&plain),
        &["--bus", &bus.address, "cluster", "remove", "worker-9"],
    )
    .await;
    assert_eq!(
        r.code, 1,
        "nobody must not remove: {} {}",
        r.stdout, r.stderr
    );
    assert!(
        r.stderr
            .starts_with("lbctl: permission denied calling RemoveMember"),
        "{}",
        r.stderr
    );
    // Group adm reaches lbd (this test server takes no removals: refused, exit 1).
    let adm = nobody("4");
    let adm: Vec<&str> = adm.iter().map(String::as_str).collect();
    let r = lbctl_as(
        Some(&adm),
        &["--bus", &bus.address, "cluster", "remove", "worker-9"],
    )
    .await;
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("worker-9 not removed: this lbd does not take member removals"),
        "{}",
        r.stderr
    );
}

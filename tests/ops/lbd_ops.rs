//! Operating a running lbd: lbctl reads its real state over a private D-Bus, /metrics and
//! /ready answer, SIGHUP applies a good file and refuses a bad one (saying why), and
//! sd_notify READY/STATUS/WATCHDOG/STOPPING reach a notify socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use lb_testkit::dbus::Bus;
use lb_testkit::lbd::Lbd;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(port: u16, extra_pool: bool) -> String {
    let extra = if extra_pool {
        "\n[[pool]]\nname = \"extra\"\nprotocol = \"bgp\"\naddresses = [\"172.19.101.0/24\"]\n"
    } else {
        ""
    };
    format!(
        r#"
[node]
name = "ops-node"

[metrics]
listen = "127.0.0.1:{port}"

[[pool]]
name = "static-pool"
protocol = "bgp"
addresses = ["172.19.100.0/28"]
{extra}
[[service]]
name = "apiserver"
ip = "172.19.100.5"
"#
    )
}

fn lbctl(bus: &Bus, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("--bus")
        .arg(&bus.address)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_json(
    bus: &Bus,
    lbd: &mut Lbd,
    args: &[&str],
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (code, out, _) = lbctl(bus, args);
        if code == 0
            && let Ok(v) = serde_json::from_str::<Value>(&out)
            && ok(&v)
        {
            return v;
        }
        assert!(lbd.alive(), "lbd exited:\n{}", lbd.log());
        assert!(
            Instant::now() < deadline,
            "{what}: last lbctl output {out}\n{}",
            lbd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let code = body
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body)
}

#[test]
fn lbctl_reads_the_real_state_of_a_running_lbd_and_metrics_answer() {
    let bus = Bus::start();
    let port = free_port();
    let mut lbd = Lbd::start_with_env(
        &config(port, false),
        &[("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str())],
    );
    let status = wait_json(
        &bus,
        &mut lbd,
        &["status", "--json"],
        "lbd ready on the bus",
        |v| v["ready"] == true,
    );
    assert_eq!(status["node"], "ops-node");
    assert_eq!(status["cluster"]["role"], "standalone");
    // A cluster of one binds no raft-lite socket: no address is made up for it.
    assert_eq!(
        status["cluster"]["members"][0]["address"],
        Value::Null,
        "{status}"
    );
    // STATUS= counts the static service (there are no Kubernetes Services here).
    let line = status["status_line"].as_str().unwrap();
    assert!(line.contains("; 1 services;"), "{line}");
    let services = wait_json(
        &bus,
        &mut lbd,
        &["services", "--json"],
        "static service listed",
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
    );
    assert_eq!(services[0]["name"], "apiserver");
    assert_eq!(services[0]["ips"][0], "172.19.100.5");
    let pools = wait_json(&bus, &mut lbd, &["pools", "--json"], "pool usage", |v| {
        v[0]["used"] == "1"
    });
    assert_eq!(pools[0]["total"], "16");
    let (code, table, _) = lbctl(&bus, &["services"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("apiserver") && table.contains("172.19.100.5"),
        "{table}"
    );

    let (code, body) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("lb_allocator_addresses_in_use_total{pool=\"static-pool\"} 1"),
        "{body}"
    );
    let m = lb_testkit::lbd::parse_metrics(&body);
    assert_eq!(
        m.get("lb_allocator_services_allocated{pool=\"static-pool\"}"),
        Some(&1.0),
        "{body}"
    );
    // A cluster of one campaigns once, at start, and leads.
    assert_eq!(m.get("lb_cluster_elections_total"), Some(&1.0), "{body}");
    assert_eq!(m.get("lb_cluster_is_leader"), Some(&1.0), "{body}");
    assert!(
        m.get("lb_cluster_term").is_some_and(|t| *t >= 1.0),
        "{body}"
    );
    assert_eq!(http_get(port, "/ready").0, 200);
    assert_eq!(http_get(port, "/live").0, 200);
}

#[test]
fn sighup_refuses_a_bad_file_keeping_the_running_config_and_applies_a_good_one() {
    let bus = Bus::start();
    let port = free_port();
    let mut lbd = Lbd::start_with_env(
        &config(port, false),
        &[("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str())],
    );
    wait_json(&bus, &mut lbd, &["status", "--json"], "ready", |v| {
        v["ready"] == true
    });

    std::fs::write(lbd.config_path(), "[[pool]]\nname = 3\n").unwrap();
    lbd.signal("HUP");
    let status = wait_json(
        &bus,
        &mut lbd,
        &["status", "--json"],
        "reload refused",
        |v| v["config"]["last_reload"]["ok"] == false,
    );
    let msg = status["config"]["last_reload"]["message"].as_str().unwrap();
    assert!(
        msg.contains("lb.toml:2"),
        "the refusal names file and line: {msg}"
    );
    let pools = wait_json(&bus, &mut lbd, &["pools", "--json"], "pools", |_| true);
    assert_eq!(pools.as_array().unwrap().len(), 1, "running config kept");

    std::fs::write(lbd.config_path(), config(port, true)).unwrap();
    let (code, out, err) = lbctl(&bus, &["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let pools = wait_json(&bus, &mut lbd, &["pools", "--json"], "new pool", |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    });
    assert_eq!(pools[1]["name"], "extra");
    // The static service kept its address through both reloads.
    let services = wait_json(&bus, &mut lbd, &["services", "--json"], "services", |_| {
        true
    });
    assert_eq!(services[0]["ips"][0], "172.19.100.5");
}

#[test]
fn sd_notify_ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut lbd = Lbd::start_with_env(
        &config(free_port(), false),
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut recv_until = |needle: &str, seen: &mut String| {
        while !seen.contains(needle) {
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {needle} (got {seen:?}): {e}"));
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    };
    recv_until("READY=1", &mut seen);
    assert!(seen.contains("STATUS=standalone"), "{seen}");
    recv_until("WATCHDOG=1", &mut seen);
    // A refused reload: RELOADING=1, then READY=1 with the reason in STATUS=.
    let good = std::fs::read_to_string(lbd.config_path()).unwrap();
    std::fs::write(lbd.config_path(), "[node\n").unwrap();
    seen.clear();
    lbd.signal("HUP");
    recv_until("RELOADING=1", &mut seen);
    recv_until("STATUS=reload failed", &mut seen);
    assert!(
        seen.contains("last reload FAILED, running the previous configuration"),
        "{seen}"
    );
    // A good one: the status line says so, and no longer reports the failure.
    std::fs::write(lbd.config_path(), good).unwrap();
    seen.clear();
    lbd.signal("HUP");
    recv_until("RELOADING=1", &mut seen);
    recv_until("STATUS=configuration reloaded", &mut seen);
    assert!(!seen.contains("FAILED"), "{seen}");
    lbd.signal("TERM");
    recv_until("STOPPING=1", &mut seen);
    assert_eq!(
        lbd.wait_exit(T),
        Some(0),
        "exit code after SIGTERM\n{}",
        lbd.log()
    );
}

#[test]
fn sigterm_with_a_bus_gives_up_the_name_and_exits_zero_within_the_bound() {
    let bus = Bus::start();
    let port = free_port();
    let mut lbd = Lbd::start_with_env(
        &config(port, false),
        &[("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str())],
    );
    wait_json(
        &bus,
        &mut lbd,
        &["status", "--json"],
        "lbd ready on the bus",
        |v| v["ready"] == true,
    );
    let sent = Instant::now();
    lbd.signal("TERM");
    // SHUTDOWN_BOUND is 5 s; a hang here used to last until systemd's TimeoutStopSec.
    let code = lbd.wait_exit(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "lbd did not exit 0 after SIGTERM\n{}",
        lbd.log()
    );
    eprintln!("exited {:?} after SIGTERM", sent.elapsed());
    assert!(lbd.log().contains("stopped"), "{}", lbd.log());
    // The name is free again: lbctl now says lbd isn't running.
    let (code, _, err) = lbctl(&bus, &["status"]);
    assert_ne!(code, 0);
    assert!(err.contains("not running") || err.contains("lbd"), "{err}");
}

#[test]
fn ready_waits_for_a_raft_lite_leader_and_comes_at_the_bound_saying_so_without_one() {
    // Two members, the other never starts: no majority, no leader. READY=1 must not come at
    // once (the cluster is not joined), but at the 10 s bound, so systemd does not fail the
    // start, with STATUS= saying what is missing.
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "ops-cluster-shared-secret-0123456789\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = free_port();
    let raft = free_port();
    let cfg = config(port, false).replacen(
        "[metrics]",
        &format!(
            "[cluster]\nmembers = {{ ops-node = \"127.0.0.1:{raft}\", absent = \"127.0.0.1:{}\" }}\nsecret_file = \"{}\"\n\n[metrics]",
            free_port(),
            key.display()
        ),
        1,
    );
    let started = Instant::now();
    let mut lbd = Lbd::start_with_env(&cfg, &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("READY=1") {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no READY=1 (got {seen:?}): {e}\n{}", lbd.log()));
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(9),
        "READY after {after:?} without a leader\n{seen}"
    );
    assert!(seen.contains("waiting for a raft-lite leader"), "{seen}");
    assert!(lbd.alive());
}

#[test]
fn an_invalid_config_at_start_reaches_the_journal_as_priority_error() {
    // systemd reads "<3>" at the start of a stderr line as priority 3 (error) when stderr is
    // the journal stream (JOURNAL_STREAM = its device:inode).
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lb.toml");
    std::fs::write(&cfg, "[node\n").unwrap();
    let err_path = dir.path().join("stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let meta = err.metadata().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("--config")
        .arg(&cfg)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(err)
        .output()
        .unwrap();
    // 6, not 1: the unit's RestartPreventExitStatus=6 keeps systemd from retrying.
    assert_eq!(out.status.code(), Some(6));
    let text = std::fs::read_to_string(&err_path).unwrap();
    assert!(!text.is_empty());
    for line in text.lines() {
        assert!(line.starts_with("<3>"), "{line:?} in\n{text}");
    }
    assert!(text.contains("is invalid; not starting"), "{text}");
    // Not the journal: plain lines.
    let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("--config")
        .arg(&cfg)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("is invalid; not starting") && !text.contains("<3>"),
        "{text}"
    );
}

fn lbd_cmd(args: &[&str], env: &[(&str, String)], stderr_file: &std::path::Path) -> (i32, String) {
    let err = std::fs::File::create(stderr_file).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(err)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_config_takes_a_file_argument_and_an_invalid_file_exits_6() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config(free_port(), false)).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[pool]]\nname = \"p\"\nprotocol = \"l2\"\naddresses = []\n",
    )
    .unwrap();
    let err = dir.path().join("stderr");
    let (g, b) = (good.to_str().unwrap(), bad.to_str().unwrap());
    let read_err = || std::fs::read_to_string(&err).unwrap();

    // The file as an argument, or with --config: the same check, the same path form in the
    // OK line as in the errors.
    for args in [
        vec!["--check-config", g],
        vec!["--config", g, "--check-config"],
    ] {
        let (code, out) = lbd_cmd(&args, &[], &err);
        assert_eq!(code, 0, "{args:?}: {}", read_err());
        assert!(out.starts_with(&format!("{g}: OK (")), "{args:?}: {out}");
    }
    // Invalid: 6, as at start (RestartPreventExitStatus=6 in the unit).
    for args in [
        vec!["--check-config", b],
        vec!["--config", b, "--check-config"],
    ] {
        let (code, _) = lbd_cmd(&args, &[], &err);
        assert_eq!(code, 6, "{args:?}");
        let e = read_err();
        assert!(
            e.starts_with(&format!("{b}:3:12: error: ")),
            "{args:?}: {e}"
        );
    }
    // A FILE without --check-config, or two different files: usage errors.
    assert_eq!(lbd_cmd(&[g], &[], &err).0, 2);
    assert_eq!(
        lbd_cmd(&["--check-config", g, "--config", b], &[], &err).0,
        2
    );

    // With stderr being the journal (JOURNAL_STREAM names its device:inode), every line
    // carries its syslog priority, so journald files the errors at err, not info (as at
    // start: an_invalid_config_at_start_reaches_the_journal_as_priority_error).
    let meta = std::fs::File::create(&err).unwrap().metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let (code, _) = lbd_cmd(&["--check-config", b], &[("JOURNAL_STREAM", stream)], &err);
    assert_eq!(code, 6);
    let e = read_err();
    assert!(
        !e.is_empty() && e.lines().all(|l| l.starts_with("<3>")),
        "{e}"
    );
}

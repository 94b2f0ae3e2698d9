//! A private dbus-daemon for tests: the system bus's default policy plus our policy file
//! (packaging/dbus/org.lb.Daemon1.conf), from tests/fixtures/dbus/bus.conf.in.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

/// A dbus-daemon of our own: the system bus's default policy plus
/// packaging/dbus/org.lb.Daemon1.conf. Killed (by PID) and its directory removed on drop.
pub struct Bus {
    child: Child,
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    pub fn start() -> Bus {
        let dir = tempfile::Builder::new()
            .prefix("lbctl-dbus-")
            .tempdir()
            .unwrap();
        // Other users (the policy test runs lbctl as nobody) must reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let policy = crate::repo_root().join("packaging/dbus/org.lb.Daemon1.conf");
        let config = dir.path().join("bus.conf");
        let text = include_str!("../../../tests/fixtures/dbus/bus.conf.in")
            .replace(
                "@SOCKET@",
                &dir.path().join("bus.sock").display().to_string(),
            )
            .replace("@POLICY@", &policy.display().to_string());
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon runs");
        // The address is printed once the bus listens: no polling needed.
        let stdout = child.stdout.take().unwrap();
        let mut bus = Bus {
            child,
            address: String::new(),
            _dir: dir,
        };
        BufReader::new(stdout).read_line(&mut bus.address).unwrap();
        bus.address = bus.address.trim().to_string();
        // On failure `bus` is dropped here, which kills the daemon.
        assert!(
            bus.address.starts_with("unix:"),
            "dbus-daemon printed {:?}",
            bus.address
        );
        bus
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Subscribes to `interface.member` signals on `bus`.
pub async fn signal_stream(
    bus: &Bus,
    interface: &str,
    member: &str,
) -> (zbus::Connection, zbus::MessageStream) {
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("connect to the test bus");
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(interface.to_string())
        .member(member.to_string())
        .build()
        .expect("match rule");
    let stream = zbus::MessageStream::for_match_rule(rule, &conn, None)
        .await
        .expect("match rule");
    (conn, stream)
}

/// `org.lb.Daemon1.OwnershipChanged(ip, owner)` signals collected in the background (its
/// own thread and runtime), for tests that are not async.
pub struct OwnershipSignals {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl OwnershipSignals {
    /// Subscribed before this returns: no signal sent afterwards is missed.
    pub fn collect(bus: &Bus) -> OwnershipSignals {
        use futures::StreamExt;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let address = bus.address.clone();
        let out = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let conn = zbus::connection::Builder::address(address.as_str())
                    .build()
                    .await
                    .expect("connect to the test bus");
                let rule = zbus::MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .interface("org.lb.Daemon1")
                    .member("OwnershipChanged")
                    .build()
                    .expect("match rule");
                let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, None)
                    .await
                    .expect("match rule");
                let _ = ready_tx.send(());
                while let Some(Ok(msg)) = stream.next().await {
                    if let Ok(body) = msg.body().deserialize::<(String, String)>() {
                        out.lock().unwrap_or_else(|e| e.into_inner()).push(body);
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("subscribed to OwnershipChanged");
        OwnershipSignals { seen }
    }

    pub fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

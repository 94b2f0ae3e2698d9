//! A private dbus-daemon for tests: the system bus's default policy plus our policy file
//! (packaging/dbus/org.lb.Daemon1.conf), from tests/fixtures/dbus/bus.conf.in.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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
        let policy =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/dbus/org.lb.Daemon1.conf");
        let config = dir.path().join("bus.conf");
        let text = include_str!("../fixtures/dbus/bus.conf.in")
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

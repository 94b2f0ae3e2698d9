//! `lbd` as a process on loopback: its own temp dir and config, killed (by PID) on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lbd binary of the running test's (or example's) build: `target/<profile>/lbd`, beside
/// `target/<profile>/deps/<test>-<hash>` and `target/<profile>/examples/<example>`. Cargo
/// builds lb's binaries before it runs lb's integration tests; an example run by hand needs
/// `cargo build` first.
pub fn lbd_binary() -> PathBuf {
    let path = std::env::current_exe()
        .expect("current exe")
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/{deps,examples}/..")
        .join("lbd");
    assert!(
        path.exists(),
        "{} does not exist: build lb's binaries first (`cargo build`)",
        path.display()
    );
    path
}

/// The samples of an OpenMetrics text: `name{labels}` → value (`# ...` lines skipped).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `GET http://{addr}/metrics` from inside `host`'s namespace (curl), parsed; empty when
/// the endpoint does not answer (yet).
pub fn scrape_metrics(host: &crate::lab::Host, addr: &str) -> BTreeMap<String, f64> {
    host.stdout(&[
        "curl",
        "-sf",
        "--max-time",
        "5",
        &format!("http://{addr}/metrics"),
    ])
    .map(|t| parse_metrics(&t))
    .unwrap_or_default()
}

/// `GET http://{addr}/metrics` over loopback, parsed; empty when the endpoint does not
/// answer (yet).
pub fn scrape_loopback(addr: std::net::SocketAddr) -> BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut reply = String::new();
    if s.write_all(request.as_bytes()).is_err() || s.read_to_string(&mut reply).is_err() {
        return BTreeMap::new();
    }
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => parse_metrics(body),
        _ => BTreeMap::new(),
    }
}

pub struct Lbd {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    starts: usize,
    env: Vec<(String, String)>,
}

impl Lbd {
    /// Writes `config` (an lb.toml) into a fresh temp dir and starts lbd on it.
    pub fn start(config: &str) -> Lbd {
        Self::start_with_env(config, &[])
    }

    /// As [`start`](Self::start), with extra environment (e.g. `NOTIFY_SOCKET`,
    /// `DBUS_SYSTEM_BUS_ADDRESS`).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Lbd {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lb.toml");
        // raft-lite's hard state goes into the temp dir, never /var/lib/lb.
        let state = dir.path().join("state");
        let config = if config.contains("state_dir") {
            config.to_string()
        } else {
            config.replacen(
                "[node]\n",
                &format!("[node]\nstate_dir = \"{}\"\n", state.display()),
                1,
            )
        };
        assert!(
            config.contains("state_dir"),
            "lbd test configs need a [node] table"
        );
        std::fs::write(&path, config).expect("config written");
        let mut lbd = Lbd {
            log: dir.path().join("lbd-0.log"),
            dir,
            config: path,
            child: None,
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        lbd.spawn();
        lbd
    }

    /// A path inside the temp dir (for kubeconfigs, state).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) {
        self.log = self.dir.path().join(format!("lbd-{}.log", self.starts));
        self.starts += 1;
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new(lbd_binary())
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "lb=debug")
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            // Never the machine's system bus: a test that wants D-Bus passes its own.
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("lbd starts");
        self.child = Some(child);
    }

    /// SIGKILL, then start again on the same config.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (e.g. "TERM", "HUP") by PID.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("lbd running").id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{signal} {pid} failed");
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut()?;
        loop {
            if let Some(st) = c.try_wait().expect("try_wait") {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log of the current run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Logs of every run so far, oldest first.
    pub fn all_logs(&self) -> String {
        (0..self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("lbd-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---- restart ----\n")
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lbd log:\n{}", self.all_logs());
        }
        self.kill();
    }
}

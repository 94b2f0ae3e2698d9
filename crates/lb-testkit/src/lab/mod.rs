//! The network-namespace lab: hosts as network namespaces on one bridge.
//!
//! A [`Lab`] owns a `lan` namespace holding bridge `br0`; every [`Host`] is its own namespace
//! with one veth (`eth0`) plugged into that bridge. Processes started with [`Host::spawn`] are
//! [`Proc`]s: their own process group, output in files of the lab's temp dir, killed on drop.
//! Dropping the `Lab` kills every process left in its namespaces, then deletes the namespaces,
//! also when the test panicked (then the temp dir with all logs is kept and its path printed).
//!
//! Uses only std and tempfile; it shells out to `ip`, `nft`, `sysctl` and `kill`.
//! See docs/lab.md and /work/shared/LAB-NOTES.md for why each sysctl is set.
pub mod capture;
pub mod pair;
pub mod peers;
pub mod probe;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Every lab namespace is named `lbl-<owning pid>-<counter>-<lab name>-<host>`.
pub const NS_PREFIX: &str = "lbl-";
/// The interface name of a host's first veth (inside its own namespace).
pub const IFNAME: &str = "eth0";
const NETNS_DIR: &str = "/run/netns";
const BRIDGE: &str = "br0";
const FAULT_TABLE: &str = "lbfault";

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// What went wrong in the lab, naming the namespace / command / file.
#[derive(Debug)]
pub enum LabError {
    /// A command could not be started at all.
    Spawn { cmd: String, source: io::Error },
    /// A command ran and exited non-zero.
    Failed {
        ns: String,
        cmd: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    /// Reading or writing a lab file failed.
    Io { path: PathBuf, source: io::Error },
    /// Something did not happen in time.
    Timeout {
        what: String,
        after: Duration,
        detail: String,
    },
    /// Output of a tool could not be understood.
    Parse { what: String, detail: String },
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Spawn { cmd, source } => write!(f, "cannot start `{cmd}`: {source}"),
            LabError::Failed {
                ns,
                cmd,
                status,
                stdout,
                stderr,
            } => write!(
                f,
                "`{cmd}` in namespace {ns} failed ({status}); stderr: {}; stdout: {}",
                stderr.trim(),
                stdout.trim()
            ),
            LabError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            LabError::Timeout {
                what,
                after,
                detail,
            } => write!(f, "timed out after {after:?} waiting for {what}; {detail}"),
            LabError::Parse { what, detail } => write!(f, "cannot parse {what}: {detail}"),
        }
    }
}

impl std::error::Error for LabError {}

pub type Result<T> = std::result::Result<T, LabError>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Run a command to completion; `ns` only labels errors. Non-zero exit is an error.
fn run_checked(ns: &str, mut cmd: Command, stdin: Option<&str>) -> Result<Output> {
    let shown = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
        cmd: shown.clone(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| LabError::Spawn {
                cmd: shown.clone(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| LabError::Spawn {
        cmd: shown.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(LabError::Failed {
            ns: ns.to_string(),
            cmd: shown,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// `ip netns exec NS args...`
fn ns_cmd(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test must still be able to tear down: ignore poisoning.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Is `pid` a live (non-zombie) process?
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the last ')' (the command name may contain ')').
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Is any live (non-zombie) process in process group `pgid`?
pub fn group_alive(pgid: u32) -> bool {
    let Ok(rd) = fs::read_dir("/proc") else {
        return false;
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name: state, ppid, pgrp.
            let Some(i) = stat.rfind(')') else {
                return false;
            };
            let mut f = stat[i + 1..].split_whitespace();
            let state = f.next().unwrap_or("");
            let pgrp = f.nth(1).and_then(|g| g.parse::<u32>().ok());
            pgrp == Some(pgid) && !matches!(state, "Z" | "X")
        })
}

/// Names of all network namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = match fs::read_dir(NETNS_DIR) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// PIDs of the processes living in namespace `ns` (`ip netns pids`).
pub fn ns_pids(ns: &str) -> Vec<u32> {
    match cmd("ip", &["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| pid_alive(*p))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A signal, sent with `kill(1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Int,
    Hup,
    Usr1,
    Usr2,
    Stop,
    Cont,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
            Signal::Int => "INT",
            Signal::Hup => "HUP",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }
}

/// Send `sig` to a process group (`group`) or a single process. Errors (already gone) ignored.
fn send_signal(pid: u32, sig: Signal, group: bool) {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let _ = Command::new("kill")
        .args(["-s", sig.name(), "--", &target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kill every process in `ns` by PID (SIGKILL) and wait until they are gone (bounded).
fn kill_ns_processes(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids = ns_pids(ns);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            send_signal(pid, Signal::Kill, false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Remove namespaces left by EARLIER runs whose owning test process is dead. Namespaces of
/// live processes (labs of tests running in parallel) are never touched.
pub fn cleanup_stale() {
    for ns in namespaces_with_prefix(NS_PREFIX) {
        let owner = ns[NS_PREFIX.len()..]
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        match owner {
            Some(pid) if !pid_alive(pid) => {
                kill_ns_processes(&ns);
                let _ = cmd("ip", &["netns", "del", &ns])
                    .stderr(Stdio::null())
                    .status();
            }
            _ => {}
        }
    }
}

/// Poll `cond` every 10 ms until it holds; panic naming `what` after `timeout`.
/// Returns how long it took.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    match try_wait_until(timeout, what, &mut cond) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`wait_until`] but returns an error instead of panicking.
pub fn try_wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(LabError::Timeout {
                what: what.to_string(),
                after: timeout,
                detail: "the condition never held".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Poll `f` every 10 ms until it returns `Some`; panic naming `what` after `timeout`.
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a host is for; decides its sysctls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A cluster node: `arp_ignore=1`/`arp_announce=2` so IPs on `lo` are not answered by
    /// the kernel (only lbd answers).
    Node,
    /// A router: forwarding on, ECMP hashed by L4 ports (`fib_multipath_hash_policy=1`).
    Router,
    /// A client or anything else.
    Client,
}

/// Nft fault rules currently installed on one host (regenerated as a whole on each change).
#[derive(Debug, Default, Clone)]
struct Faults {
    isolated: bool,
    /// (MAC, IPs) of peers whose frames are dropped on ingress.
    block_in: Vec<(String, Vec<IpAddr>)>,
    /// (MAC, IPs) of peers to which frames are dropped on egress.
    block_out: Vec<(String, Vec<IpAddr>)>,
}

struct LabInner {
    prefix: String,
    lan: String,
    dir: Mutex<Option<tempfile::TempDir>>,
    dir_path: PathBuf,
    /// Namespaces to delete at teardown, in creation order.
    namespaces: Mutex<Vec<String>>,
    procs: Mutex<Vec<Weak<ProcInner>>>,
    faults: Mutex<HashMap<String, Faults>>,
    next_port: AtomicU32,
    next_segment: AtomicU32,
    files: AtomicU32,
}

/// A network-namespace lab; see the module docs. Dropping it tears everything down.
pub struct Lab {
    inner: Arc<LabInner>,
    lan: Segment,
}

/// A broadcast segment: a bridge in the lab's `lan` namespace.
#[derive(Debug, Clone)]
pub struct Segment {
    bridge: String,
    index: u32,
}

impl Segment {
    pub fn bridge(&self) -> &str {
        &self.bridge
    }
}

impl Lab {
    /// Create a lab named after the test (`name` is shortened to keep names readable).
    /// Also removes leftovers of earlier runs whose owner died.
    pub fn new(name: &str) -> Lab {
        match Lab::try_new(name) {
            Ok(l) => l,
            Err(e) => panic!("cannot create lab {name}: {e}"),
        }
    }

    pub fn try_new(name: &str) -> Result<Lab> {
        cleanup_stale();
        let short: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect();
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{NS_PREFIX}{}-{n}-{short}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .map_err(io_err(Path::new("/tmp")))?;
        let dir_path = dir.path().to_path_buf();
        // Daemons that drop privileges (FRR, tcpdump) must be able to traverse it.
        set_mode(&dir_path, 0o755)?;
        let lan = format!("{prefix}-lan");
        let inner = Arc::new(LabInner {
            prefix,
            lan: lan.clone(),
            dir: Mutex::new(Some(dir)),
            dir_path,
            namespaces: Mutex::new(Vec::new()),
            procs: Mutex::new(Vec::new()),
            faults: Mutex::new(HashMap::new()),
            next_port: AtomicU32::new(0),
            next_segment: AtomicU32::new(1),
            files: AtomicU32::new(0),
        });
        // From here on, Drop cleans up whatever was created.
        let lab = Lab {
            inner,
            lan: Segment {
                bridge: BRIDGE.to_string(),
                index: 0,
            },
        };
        lab.add_namespace(&lan)?;
        run_checked(
            &lan,
            ns_cmd(
                &lan,
                &[
                    "sysctl",
                    "-q",
                    "-w",
                    // The bridge ports need no IPv6 of their own (no RS/MLD noise in captures).
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            ),
            None,
        )?;
        lab.ip_batch(
            &lan,
            &[
                "link set lo up".to_string(),
                format!(
                    "link add {BRIDGE} type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
                ),
                format!("link set {BRIDGE} up"),
            ],
        )?;
        Ok(lab)
    }

    /// The common name prefix of this lab's namespaces.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The lab's temp directory (logs, configs, captures).
    pub fn dir(&self) -> &Path {
        &self.inner.dir_path
    }

    /// The default segment (`br0`).
    pub fn lan(&self) -> &Segment {
        &self.lan
    }

    /// Another broadcast segment (a new bridge), e.g. for a client network behind a router.
    pub fn segment(&self) -> Result<Segment> {
        let index = self.inner.next_segment.fetch_add(1, Ordering::SeqCst);
        let bridge = format!("br{index}");
        self.ip_batch(
            &self.inner.lan,
            &[
                format!(
                    "link add {bridge} type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
                ),
                format!("link set {bridge} up"),
            ],
        )?;
        Ok(Segment { bridge, index })
    }

    /// A client host (no special sysctls) on the default segment.
    pub fn host(&self, name: &str, addrs: &[&str]) -> Host {
        self.add_host(name, HostKind::Client, addrs)
    }

    /// A cluster node (`arp_ignore=1`, `arp_announce=2`).
    pub fn node(&self, name: &str, addrs: &[&str]) -> Host {
        self.add_host(name, HostKind::Node, addrs)
    }

    /// A router (forwarding, L4 ECMP hashing).
    pub fn router(&self, name: &str, addrs: &[&str]) -> Host {
        self.add_host(name, HostKind::Router, addrs)
    }

    #[track_caller]
    pub fn add_host(&self, name: &str, kind: HostKind, addrs: &[&str]) -> Host {
        match self.try_add_host(name, kind, addrs) {
            Ok(h) => h,
            Err(e) => panic!("cannot add host {name} to lab {}: {e}", self.inner.prefix),
        }
    }

    pub fn try_add_host(&self, name: &str, kind: HostKind, addrs: &[&str]) -> Result<Host> {
        let ns = format!("{}-{name}", self.inner.prefix);
        self.add_namespace(&ns)?;
        let mut sysctls: Vec<String> = [
            "net.ipv6.conf.all.keep_addr_on_down=1",
            "net.ipv6.conf.default.keep_addr_on_down=1",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match kind {
            HostKind::Node => sysctls.extend(
                [
                    "net.ipv4.conf.all.arp_ignore=1",
                    "net.ipv4.conf.default.arp_ignore=1",
                    "net.ipv4.conf.all.arp_announce=2",
                    "net.ipv4.conf.default.arp_announce=2",
                ]
                .iter()
                .map(|s| s.to_string()),
            ),
            HostKind::Router => sysctls.extend(
                [
                    "net.ipv4.ip_forward=1",
                    "net.ipv6.conf.all.forwarding=1",
                    "net.ipv4.fib_multipath_hash_policy=1",
                    "net.ipv6.fib_multipath_hash_policy=1",
                ]
                .iter()
                .map(|s| s.to_string()),
            ),
            HostKind::Client => {}
        }
        // Set before the veth appears so it inherits `default`.
        let mut args: Vec<&str> = vec!["sysctl", "-q", "-w"];
        args.extend(sysctls.iter().map(|s| s.as_str()));
        run_checked(&ns, ns_cmd(&ns, &args), None)?;
        let host = Host {
            lab: self.inner.clone(),
            name: name.to_string(),
            ns: ns.clone(),
            kind,
            ifname: IFNAME.to_string(),
            mac: String::new(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
        };
        let mac = host.plug(&self.lan, IFNAME, addrs)?;
        run_checked(&ns, ns_cmd(&ns, &["ip", "link", "set", "lo", "up"]), None)?;
        Ok(Host { mac, ..host })
    }

    fn add_namespace(&self, ns: &str) -> Result<()> {
        run_checked(ns, cmd("ip", &["netns", "add", ns]), None)?;
        lock(&self.inner.namespaces).push(ns.to_string());
        Ok(())
    }

    fn ip_batch(&self, ns: &str, lines: &[String]) -> Result<()> {
        ip_batch(ns, lines)
    }

    /// All live PIDs in this lab's namespaces.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.inner.namespaces)
            .iter()
            .flat_map(|ns| ns_pids(ns))
            .collect()
    }

    /// Tear down now (same as drop), returning the namespaces and PIDs that existed, so a
    /// test can assert they are gone.
    pub fn teardown(self) -> (Vec<String>, Vec<u32>) {
        let namespaces = lock(&self.inner.namespaces).clone();
        let pids = self.pids();
        drop(self);
        (namespaces, pids)
    }
}

fn ip_batch(ns: &str, lines: &[String]) -> Result<()> {
    let script = lines.join("\n") + "\n";
    run_checked(ns, cmd("ip", &["-n", ns, "-batch", "-"]), Some(&script)).map(|_| ())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

impl Drop for Lab {
    fn drop(&mut self) {
        // 1. Our processes, by process group, then reaped.
        let procs: Vec<Arc<ProcInner>> = lock(&self.inner.procs)
            .iter()
            .filter_map(|w| w.upgrade())
            .collect();
        for p in &procs {
            p.kill_and_reap();
        }
        // 2. Anything else still inside our namespaces (daemons that re-parented), by PID.
        let namespaces = lock(&self.inner.namespaces).clone();
        for ns in namespaces.iter().rev() {
            kill_ns_processes(ns);
        }
        // 3. The namespaces (deleting them removes the veths and bridges).
        for ns in namespaces.iter().rev() {
            let _ = cmd("ip", &["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        if std::thread::panicking()
            && let Some(dir) = lock(&self.inner.dir).take()
        {
            let kept = dir.keep();
            eprintln!("lab {}: kept logs in {}", self.inner.prefix, kept.display());
        }
    }
}

/// A host: a network namespace with `eth0` on a lab segment. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    lab: Arc<LabInner>,
    name: String,
    ns: String,
    kind: HostKind,
    ifname: String,
    mac: String,
    addrs: Vec<String>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Host({} in {}, {})", self.name, self.ns, self.mac)
    }
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The namespace name (for `ip netns exec`).
    pub fn ns(&self) -> &str {
        &self.ns
    }
    pub fn kind(&self) -> HostKind {
        self.kind
    }
    /// The interface on the default segment (`eth0`).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    /// MAC of `eth0`, lower case (as tshark and the probes print it).
    pub fn mac(&self) -> &str {
        &self.mac
    }
    /// The addresses given at creation, without prefix length.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addrs
            .iter()
            .filter_map(|c| c.split('/').next()?.parse().ok())
            .collect()
    }
    /// First IPv4 address given at creation.
    pub fn ip4(&self) -> Option<IpAddr> {
        self.ips().into_iter().find(|i| i.is_ipv4())
    }
    /// First IPv6 address given at creation.
    pub fn ip6(&self) -> Option<IpAddr> {
        self.ips().into_iter().find(|i| i.is_ipv6())
    }
    /// The lab's temp directory.
    pub fn dir(&self) -> &Path {
        &self.lab.dir_path
    }

    /// Create a veth `ifname` in this host plugged into `seg`; returns its MAC.
    fn plug(&self, seg: &Segment, ifname: &str, addrs: &[&str]) -> Result<String> {
        let port = self.lab.next_port.fetch_add(1, Ordering::SeqCst) + 1;
        let mac = format!(
            "02:1b:00:{:02x}:{:02x}:{:02x}",
            seg.index & 0xff,
            (port >> 8) & 0xff,
            port & 0xff
        );
        let bport = format!("v{port}");
        ip_batch(
            &self.lab.lan,
            &[
                format!(
                    "link add {bport} type veth peer name {ifname} address {mac} netns {}",
                    self.ns
                ),
                format!("link set {bport} master {} up", seg.bridge),
            ],
        )?;
        run_checked(
            &self.ns,
            ns_cmd(
                &self.ns,
                &[
                    "sysctl",
                    "-q",
                    "-w",
                    &format!("net.ipv6.conf.{ifname}.keep_addr_on_down=1"),
                    &format!("net.ipv6.conf.{ifname}.accept_dad=0"),
                ],
            ),
            None,
        )?;
        let mut lines: Vec<String> = addrs.iter().map(|a| addr_line("add", a, ifname)).collect();
        lines.push(format!("link set {ifname} up"));
        ip_batch(&self.ns, &lines)?;
        Ok(mac)
    }

    /// Add another interface on segment `seg` (named `eth1`, `eth2`...); returns its name.
    pub fn attach(&self, seg: &Segment, ifname: &str, addrs: &[&str]) -> Result<String> {
        self.plug(seg, ifname, addrs)?;
        Ok(ifname.to_string())
    }

    /// A `Command` that runs `args` inside this namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        ns_cmd(&self.ns, args)
    }

    /// Run `args` in the namespace; non-zero exit is an error carrying stderr.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        run_checked(&self.ns, self.command(args), None)
    }

    /// Run with `input` on stdin; non-zero exit is an error carrying stderr.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Result<Output> {
        run_checked(&self.ns, self.command(args), Some(input))
    }

    /// Run and return stdout as a string; non-zero exit is an error.
    pub fn stdout(&self, args: &[&str]) -> Result<String> {
        self.run(args)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Run through `sh -c` in the namespace.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.stdout(&["sh", "-c", script])
    }

    /// Did `args` exit 0?
    pub fn succeeds(&self, args: &[&str]) -> bool {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// One ping (v4 or v6) with a 1 s timeout.
    pub fn ping(&self, ip: &str) -> bool {
        self.ping_wait(ip, "1")
    }

    /// Ping until one answer comes back or `timeout` passes (for "must work" checks that
    /// must not flake on a loaded machine); true if answered.
    pub fn ping_within(&self, ip: &str, timeout: Duration) -> bool {
        try_wait_until(timeout, "ping", || self.ping_wait(ip, "0.5")).is_ok()
    }

    /// One ping waiting at most `wait` seconds (fractions allowed, e.g. "0.3").
    pub fn ping_wait(&self, ip: &str, wait: &str) -> bool {
        self.succeeds(&["ping", "-n", "-q", "-c", "1", "-W", wait, ip])
    }

    /// Set sysctls (`key=value`) in this namespace.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        let mut args = vec!["sysctl", "-q", "-w"];
        args.extend_from_slice(settings);
        self.run(&args).map(|_| ())
    }

    /// Add an address (`10.10.100.200/32`, `fd00:10::200/128`) to `eth0`.
    pub fn add_ip(&self, cidr: &str) -> Result<()> {
        ip_batch(&self.ns, &[addr_line("add", cidr, &self.ifname)])
    }

    /// Put an address on `lo`: the stand-in for kube-proxy holding a service IP
    /// (nodes have `arp_ignore=1`, so the kernel does not answer ARP for it).
    pub fn add_lo_ip(&self, cidr: &str) -> Result<()> {
        ip_batch(&self.ns, &[addr_line("add", cidr, "lo")])
    }

    pub fn del_lo_ip(&self, cidr: &str) -> Result<()> {
        ip_batch(&self.ns, &[addr_line("del", cidr, "lo")])
    }

    /// `ip link set eth0 down` inside the host (its peer sees no carrier).
    pub fn link_down(&self) -> Result<()> {
        ip_batch(&self.ns, &[format!("link set {} down", self.ifname)])
    }

    pub fn link_up(&self) -> Result<()> {
        ip_batch(&self.ns, &[format!("link set {} up", self.ifname)])
    }

    /// `ip -j` output parsed by the caller; e.g. `host.ip_json(&["route"])`.
    pub fn ip_json(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["ip", "-j"];
        a.extend_from_slice(args);
        self.stdout(&a)
    }

    /// Drop every frame in and out of `eth0` (nft netdev ingress/egress hooks: also ARP/NDP
    /// and frames sent by packet sockets). The link stays up.
    pub fn isolate(&self) -> Result<()> {
        self.update_faults(|f| f.isolated = true)
    }

    /// Drop frames both ways between this host and `other` (by MAC and by IP).
    pub fn partition_from(&self, other: &Host) -> Result<()> {
        let peer = (other.mac.clone(), other.ips());
        self.update_faults(|f| {
            f.block_in.push(peer.clone());
            f.block_out.push(peer);
        })
    }

    /// One way: drop what `other` sends to this host (this host still sends to it).
    pub fn block_from(&self, other: &Host) -> Result<()> {
        let peer = (other.mac.clone(), other.ips());
        self.update_faults(|f| f.block_in.push(peer))
    }

    /// One way: drop what this host sends to `other` (it still hears `other`).
    pub fn block_to(&self, other: &Host) -> Result<()> {
        let peer = (other.mac.clone(), other.ips());
        self.update_faults(|f| f.block_out.push(peer))
    }

    /// Remove every fault rule of this host.
    pub fn heal(&self) -> Result<()> {
        self.update_faults(|f| *f = Faults::default())
    }

    fn update_faults(&self, change: impl FnOnce(&mut Faults)) -> Result<()> {
        let mut all = lock(&self.lab.faults);
        let faults = all.entry(self.ns.clone()).or_default();
        let mut next = faults.clone();
        change(&mut next);
        self.run_stdin(&["nft", "-f", "-"], &render_faults(&self.ifname, &next))?;
        *faults = next;
        Ok(())
    }

    /// Start `args` in the namespace as its own process group, output to files in the lab dir.
    pub fn spawn(&self, args: &[&str]) -> Result<Proc> {
        let label = args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("proc");
        self.spawn_labeled(label, args)
    }

    /// Like [`Host::spawn`], with `label` naming the log files.
    pub fn spawn_labeled(&self, label: &str, args: &[&str]) -> Result<Proc> {
        let n = self.lab.files.fetch_add(1, Ordering::SeqCst);
        let base = self.lab.dir_path.join(format!("{}-{label}-{n}", self.name));
        let out_path = base.with_extension("out");
        let err_path = base.with_extension("err");
        let out = File::create(&out_path).map_err(io_err(&out_path))?;
        let err = File::create(&err_path).map_err(io_err(&err_path))?;
        let mut c = self.command(args);
        c.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = c.spawn().map_err(|source| LabError::Spawn {
            cmd: format!("{c:?}"),
            source,
        })?;
        let inner = Arc::new(ProcInner {
            label: format!("{}:{label}", self.name),
            pid: child.id(),
            child: Mutex::new(child),
            status: Mutex::new(None),
            stdout_path: out_path,
            stderr_path: err_path,
        });
        lock(&self.lab.procs).push(Arc::downgrade(&inner));
        Ok(Proc { inner })
    }

    /// Write `contents` to `name` in the lab dir (mode 0644); returns the path.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.lab.dir_path.join(format!("{}-{name}", self.name));
        fs::write(&path, contents).map_err(io_err(&path))?;
        set_mode(&path, 0o644)?;
        Ok(path)
    }

    /// A directory in the lab dir owned by `owner` (e.g. `frr:frr`), for daemons that drop
    /// privileges.
    pub fn owned_dir(&self, name: &str, owner: &str) -> Result<PathBuf> {
        let path = self.lab.dir_path.join(format!("{}-{name}", self.name));
        fs::create_dir_all(&path).map_err(io_err(&path))?;
        let p = path.to_string_lossy().into_owned();
        run_checked(&self.ns, cmd("chown", &[owner, &p]), None)?;
        Ok(path)
    }

    /// Start a tcpdump on `eth0` with a BPF `filter`; returns once tcpdump listens.
    pub fn capture(&self, filter: &str) -> Result<capture::Capture> {
        capture::Capture::start(self, &self.ifname, filter)
    }
}

fn addr_line(op: &str, cidr: &str, dev: &str) -> String {
    if cidr.contains(':') {
        format!("addr {op} {cidr} dev {dev} nodad")
    } else {
        format!("addr {op} {cidr} dev {dev}")
    }
}

/// The nft script that atomically replaces the host's fault table with `f`.
fn render_faults(ifname: &str, f: &Faults) -> String {
    let mut ingress = Vec::new();
    let mut egress = Vec::new();
    if f.isolated {
        ingress.push("drop".to_string());
        egress.push("drop".to_string());
    }
    for (mac, ips) in &f.block_in {
        ingress.push(format!("ether saddr {mac} drop"));
        for ip in ips {
            match ip {
                IpAddr::V4(v4) => {
                    ingress.push(format!("ip saddr {v4} drop"));
                    ingress.push(format!("arp saddr ip {v4} drop"));
                }
                IpAddr::V6(v6) => ingress.push(format!("ip6 saddr {v6} drop")),
            }
        }
    }
    for (mac, ips) in &f.block_out {
        egress.push(format!("ether daddr {mac} drop"));
        for ip in ips {
            match ip {
                IpAddr::V4(v4) => {
                    egress.push(format!("ip daddr {v4} drop"));
                    egress.push(format!("arp daddr ip {v4} drop"));
                }
                IpAddr::V6(v6) => egress.push(format!("ip6 daddr {v6} drop")),
            }
        }
    }
    // Declaring then deleting makes the replace work whether or not the table exists.
    let mut s = format!("table netdev {FAULT_TABLE}\ndelete table netdev {FAULT_TABLE}\n");
    if ingress.is_empty() && egress.is_empty() {
        return s;
    }
    s += &format!("table netdev {FAULT_TABLE} {{\n");
    for (chain, hook, rules) in [("in", "ingress", &ingress), ("out", "egress", &egress)] {
        s += &format!(
            "  chain {chain} {{\n    type filter hook {hook} device \"{ifname}\" priority 0; policy accept;\n"
        );
        for r in rules.iter() {
            s += &format!("    {r}\n");
        }
        s += "  }\n";
    }
    s += "}\n";
    s
}

struct ProcInner {
    label: String,
    pid: u32,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl ProcInner {
    fn try_status(&self) -> Option<ExitStatus> {
        let mut status = lock(&self.status);
        if status.is_none()
            && let Ok(Some(s)) = lock(&self.child).try_wait()
        {
            *status = Some(s);
        }
        *status
    }

    fn kill_and_reap(&self) {
        // The group may outlive its leader (children of a daemon): signal it regardless,
        // and wait until no member is left.
        send_signal(self.pid, Signal::Kill, true);
        let deadline = Instant::now() + Duration::from_secs(3);
        while (self.try_status().is_none() || group_alive(self.pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A process started in a host namespace. Killed (its whole process group) on drop.
pub struct Proc {
    inner: Arc<ProcInner>,
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proc({} pid {})", self.inner.label, self.inner.pid)
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Signal the whole process group.
    pub fn kill(&self, sig: Signal) {
        if self.inner.try_status().is_none() || sig == Signal::Kill {
            send_signal(self.inner.pid, sig, true);
        }
    }

    /// Has it exited? (Reaps it if so.)
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.inner.try_status()
    }

    pub fn is_running(&self) -> bool {
        self.inner.try_status().is_none()
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.inner.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        self.kill(Signal::Term);
        if let Some(s) = self.wait_timeout(grace) {
            return Some(s);
        }
        self.inner.kill_and_reap();
        self.inner.try_status()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.inner.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.inner.stderr_path).unwrap_or_default()
    }

    /// stdout followed by stderr.
    pub fn log(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    pub fn stdout_path(&self) -> &Path {
        &self.inner.stdout_path
    }

    pub fn stderr_path(&self) -> &Path {
        &self.inner.stderr_path
    }

    /// Wait until the output contains `needle`; error (with the log) if the process exits
    /// first or `timeout` passes.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            let exited = self.inner.try_status();
            if exited.is_some() || Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("`{needle}` in the output of {}", self.inner.label),
                    after: timeout,
                    detail: format!("exit status {exited:?}; output:\n{}", self.log()),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.inner.kill_and_reap();
    }
}

//! The test Kubernetes API server as a process on a lab host (a "control plane" namespace),
//! and the real kubectl run on that host: lbd nodes in other namespaces reach the server over
//! the lab LAN, as they reach a real API server. The server keeps its objects in a file, so a
//! stop/start (an API outage) loses nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::examples::example_binary;
use crate::lab::{Host, Proc, Signal, wait_for};

pub const PORT: u16 = 6443;

pub struct KubeLab {
    host: Host,
    addr: SocketAddr,
    store: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
    proc: Option<Proc>,
}

/// One kubectl run.
#[derive(Debug)]
pub struct KubectlRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl KubeLab {
    /// Starts the server on `host`'s first IPv4 address, port 6443.
    pub fn start(host: &Host) -> KubeLab {
        let ip = host.ip4().expect("the API server host has an IPv4 address");
        let home = host.owned_dir("kube", "root:root").expect("kube dir");
        std::fs::create_dir_all(home.join("cache")).expect("kubectl cache dir");
        let mut k = KubeLab {
            host: host.clone(),
            addr: SocketAddr::new(ip, PORT),
            store: home.join("store.json"),
            kubeconfig: home.join("kubeconfig"),
            home,
            proc: None,
        };
        k.start_server();
        k
    }

    fn start_server(&mut self) {
        let bin = example_binary("lb-test-apiserver");
        let listen = self.addr.to_string();
        let args = [
            bin.to_str().expect("utf-8 path"),
            "--listen",
            &listen,
            "--store",
            self.store.to_str().expect("utf-8 path"),
            "--kubeconfig-dir",
            self.home.to_str().expect("utf-8 path"),
        ];
        let p = self
            .host
            .spawn_labeled("apiserver", &args)
            .expect("start lb-test-apiserver");
        p.wait_for_log("listening on", Duration::from_secs(30))
            .expect("the API server listens");
        self.proc = Some(p);
    }

    /// Stops the server (SIGTERM): an API outage. Objects survive in the store file.
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    /// Starts it again with the same store and address.
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(|p| p.is_running())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig for lbd and kubectl (plain HTTP, no auth), readable from every namespace.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Runs the real kubectl on the server's host.
    pub fn kubectl(&self, args: &[&str]) -> KubectlRun {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with `input` on stdin (for `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> KubectlRun {
        use std::io::Write;
        let mut all = vec!["kubectl"];
        all.extend_from_slice(args);
        let mut c = self.host.command(&all);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.home.join("cache"))
            .env("HOME", &self.home)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("run kubectl");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(text) = input {
            stdin
                .write_all(text.as_bytes())
                .expect("write kubectl stdin");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("kubectl output");
        KubectlRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.kubectl(args);
        assert_eq!(
            r.code, 0,
            "kubectl {args:?} failed: {}{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// `kubectl apply -f -` with `yaml`; must succeed.
    pub fn apply(&self, yaml: &str) -> String {
        let r = self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml));
        assert_eq!(
            r.code, 0,
            "kubectl apply failed: {}{}\n{yaml}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// A ready Node object named `name` with InternalIP `ip` (the lbd node's name).
    pub fn add_node(&self, name: &str, ip: &str) {
        self.apply(&format!(
            r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {name}
status:
  addresses:
  - type: InternalIP
    address: {ip}
  conditions:
  - type: Ready
    status: "True"
"#
        ));
    }

    /// One EndpointSlice for `namespace/service` with a ready endpoint on each of `nodes` (what
    /// the endpoints controller would write for the Deployment's pods; none runs here).
    /// `ports` are (name, port, protocol).
    pub fn set_endpoints(
        &self,
        namespace: &str,
        service: &str,
        nodes: &[(&str, &str)],
        ports: &[(&str, u16, &str)],
    ) {
        let mut yaml = format!(
            r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-lab
  namespace: {namespace}
  labels:
    kubernetes.io/service-name: {service}
    endpointslice.kubernetes.io/managed-by: lb-lab
addressType: IPv4
endpoints:
"#
        );
        for (node, ip) in nodes {
            yaml.push_str(&format!(
                "- addresses: [\"{ip}\"]\n  nodeName: {node}\n  conditions:\n    ready: true\n"
            ));
        }
        if nodes.is_empty() {
            yaml.push_str("[]\n");
            yaml = yaml.replace("endpoints:\n[]", "endpoints: []");
        }
        yaml.push_str("ports:\n");
        for (name, port, proto) in ports {
            yaml.push_str(&format!(
                "- name: \"{name}\"\n  port: {port}\n  protocol: {proto}\n"
            ));
        }
        self.apply(&yaml);
    }

    /// The Service's `status.loadBalancer.ingress` IPs (empty while it has none).
    pub fn ingress_ips(&self, namespace: &str, service: &str) -> Vec<String> {
        let r = self.kubectl(&[
            "get",
            "service",
            "-n",
            namespace,
            service,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ]);
        if r.code != 0 {
            return Vec::new();
        }
        r.stdout.split_whitespace().map(str::to_string).collect()
    }

    /// Waits until the Service has an ingress IP; returns them.
    pub fn wait_for_ingress(
        &self,
        namespace: &str,
        service: &str,
        timeout: Duration,
    ) -> Vec<String> {
        wait_for(timeout, &format!("an IP for {namespace}/{service}"), || {
            let ips = self.ingress_ips(namespace, service);
            (!ips.is_empty()).then_some(ips)
        })
    }

    /// Sends `sig` to the server (e.g. STOP/CONT for a hung API server).
    pub fn signal(&self, sig: Signal) {
        if let Some(p) = &self.proc {
            p.kill(sig);
        }
    }
}

//! A test Kubernetes API server, good enough for kube-rs 5 (watcher, reflector, patch_status,
//! Recorder) and the real kubectl 1.27–1.33, over plain `http://` on loopback. It follows
//! `/work/shared/KUBE-API-NOTES.md`: Table responses, discovery with short names, `/openapi/v2`,
//! a global resourceVersion with replayable history, 410 as a watch ERROR event, bookmarks,
//! merge / strategic-merge / server-side-apply patches and the protobuf `create deploy` body.
//!
//! ```text
//! let store = Store::new();
//! let server = ApiServer::start("127.0.0.1:0".parse()?, store.clone())?;
//! let kubeconfig = write_kubeconfig(dir.path(), server.addr())?;
//! server.stop().await;                                  // outage: listener and watches close
//! let server = ApiServer::start(addr, store.clone())?;  // same objects, same RVs
//! ```
//!
//! Test hooks live on [`Store`]: `create`/`get`/`list`/`patch`/`patch_status`/`delete` take a
//! resource name (`services`, `nodes`, `endpointslices`, `deployments`, `events` =
//! events.k8s.io); `events()`, `compact()` (older RVs then get a 410 ERROR event),
//! `bookmark_now()`, `set_bookmark_interval()`, `requests()`/`request_count(path)`/
//! `wait_for_request(pred)`, `set_server_minor("31")` (the kubectl dispatcher runs that
//! kubectl) and `set_aggregated_discovery(false)`. [`Kubectl`] runs the real kubectl with its
//! own kubeconfig and cache dir; [`kube_client`] builds a kube-rs client.

pub mod error;
pub mod patch;
pub mod proto;
pub mod resources;
pub mod select;
pub mod server;
pub mod store;
pub mod table;
pub mod time;

pub use error::ApiError;
pub use store::Store;

use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub struct ApiServer;

/// A running server. `stop()` closes the listener and every open connection (watch streams
/// included) at once; dropping the handle does the same without waiting.
pub struct Handle {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Binds `addr` (port 0 picks one) and serves `store`. Needs a tokio runtime.
    pub fn start(addr: SocketAddr, store: Arc<Store>) -> std::io::Result<Handle> {
        // std sets SO_REUSEADDR on Unix, so a restart can rebind the same port at once.
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        let (shutdown, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        // Like the real API server (Go sets TCP_NODELAY on every connection):
                        // without it, small responses wait for delayed ACKs.
                        let _ = stream.set_nodelay(true);
                        let store = store.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                server::handle(store.clone(), req)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            drop(listener);
            conns.shutdown().await;
        });
        Ok(Handle {
            addr,
            shutdown,
            task: Some(task),
        })
    }
}

impl Handle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener and all connections, and waits until they are closed.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Writes a kubeconfig for `http://ADDR` (no auth, namespace `default`) into `dir`.
pub fn write_kubeconfig(dir: &Path, addr: SocketAddr) -> std::io::Result<PathBuf> {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\n\
         current-context: test\nusers:\n- name: test\n  user: {{}}\n"
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A kube-rs client for the server at `addr` (plain HTTP, namespace `default`).
pub fn kube_client(addr: SocketAddr) -> kube::Client {
    let url = format!("http://{addr}")
        .parse()
        .expect("a socket address makes a valid URI");
    let mut config = kube::Config::new(url);
    config.default_namespace = "default".into();
    kube::Client::try_from(config).expect("a plain-HTTP kube config builds a client")
}

/// Runs the real `kubectl` against a server with its own kubeconfig, cache dir and HOME.
pub struct Kubectl {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// The binary, `/usr/bin/kubectl` (the version dispatcher) unless changed.
    pub bin: PathBuf,
}

/// Output of one kubectl run.
#[derive(Debug)]
pub struct KubectlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(addr: SocketAddr) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let kubeconfig = write_kubeconfig(dir.path(), addr)?;
        std::fs::create_dir_all(dir.path().join("cache"))?;
        Ok(Self {
            dir,
            kubeconfig,
            bin: PathBuf::from("/usr/bin/kubectl"),
        })
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env("HOME", self.dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs kubectl to completion (stdin from `input` if given).
    pub async fn run(&self, args: &[&str]) -> KubectlOutput {
        let out = self.command(args).output().await.expect("kubectl runs");
        KubectlOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Writes `text` to a file in the temp dir and returns its path (for `-f`).
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("temp file is writable");
        p.to_string_lossy().into_owned()
    }
}

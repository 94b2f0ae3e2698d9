//! The test Kubernetes API server as a process, for the namespace lab and the demo:
//! `cargo run --example lb-test-apiserver -- --listen 127.0.0.1:6443 --store /tmp/api.json`.
//! It is test support, not shipped. With `--store`, every write is saved and a restarted
//! process keeps its objects and resourceVersions.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Test Kubernetes API server (plain HTTP, no auth) for lb's lab")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// JSON file to load the store from and save it to after every write.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Kubernetes minor version answered on /version (picks the dispatcher's kubectl).
    #[arg(long, default_value = "32")]
    minor: String,
    /// Write a kubeconfig for this server into this directory.
    #[arg(long)]
    kubeconfig_dir: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = match &args.store {
        Some(p) => lb_testkit::apiserver::Store::open(p)?,
        None => lb_testkit::apiserver::Store::new(),
    };
    store.set_server_minor(&args.minor);
    let handle = lb_testkit::apiserver::ApiServer::start(args.listen, store)?;
    if let Some(dir) = &args.kubeconfig_dir {
        let p = lb_testkit::apiserver::write_kubeconfig(dir, handle.addr())?;
        eprintln!("kubeconfig: {}", p.display());
    }
    println!("listening on {}", handle.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    handle.stop().await;
    Ok(())
}

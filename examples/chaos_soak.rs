//! The chaos soak, long version: N minutes of random faults against five lbd nodes serving
//! layer-2 and BGP Services (tests/support/chaos.rs), the report written as markdown.
//!
//! Run as root (release lbd, as recorded in docs/soak/report.md):
//!
//!     cargo build --release --bin lbd --example lb-test-apiserver
//!     cargo run --release --example chaos_soak -- --minutes 10 --seed 1 --report docs/soak/report.md
//!
//! Exits 1 if a check failed (the report is written either way).

use std::time::Duration;

use lb_testkit::chaos::{SoakConfig, run};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let minutes: f64 = arg("--minutes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let seed: u64 = arg("--seed").and_then(|v| v.parse().ok()).unwrap_or(1);
    let out = arg("--report");
    let cmd: Vec<String> = std::env::args().skip(1).collect();
    eprintln!("chaos soak: {minutes} min, seed {seed}");
    let report = run(SoakConfig::new(
        "soakx",
        Duration::from_secs_f64(minutes * 60.0),
        seed,
    ));
    let failures = report.failures(Duration::from_secs(1));
    let text = format!(
        "# Chaos soak report\n\nCommand (as root): `cargo run --release --example chaos_soak -- {}`\n\n{}",
        cmd.join(" "),
        report.markdown()
    );
    match out {
        Some(path) => {
            std::fs::write(&path, &text).unwrap_or_else(|e| panic!("write {path}: {e}"));
            eprintln!("report written to {path}");
        }
        None => println!("{text}"),
    }
    if !failures.is_empty() {
        eprintln!("{} failed checks:\n{}", failures.len(), failures.join("\n"));
        std::process::exit(1);
    }
}

//! The `lbctl` commands that need no running daemon: they work on files.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::metallb::import;

/// `lbctl import-metallb FILE`: prints the TOML to stdout and each note to stderr prefixed
/// `note: `; on error prints `lbctl: FILE: <error>` and exits 1. FILE `-` is stdin.
pub fn import_metallb_main(path: &Path) -> ExitCode {
    let name = path.display().to_string();
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    if let Err(e) = read {
        eprintln!("lbctl: {name}: {e}");
        return ExitCode::FAILURE;
    }
    match import(&text) {
        Ok(imported) => {
            let mut err = std::io::stderr().lock();
            for n in &imported.notes {
                // A failed write to stderr leaves nothing better to report to.
                let _ = writeln!(err, "note: {n}");
            }
            let mut out = std::io::stdout().lock();
            if let Err(e) = out
                .write_all(imported.toml.as_bytes())
                .and_then(|()| out.flush())
            {
                let _ = writeln!(err, "lbctl: {name}: writing output: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lbctl: {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

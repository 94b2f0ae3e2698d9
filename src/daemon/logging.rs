//! Logging: journald (structured fields) under systemd, readable text on a terminal.
//! `RUST_LOG` overrides the configured level for debugging.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// True when stderr is connected to the journal (systemd sets `JOURNAL_STREAM` to the
/// device:inode of the stream it gave us).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream == format!("{}:{}", meta.dev(), meta.ino())
}

/// syslog's meaning of each level (tracing-journald's default puts INFO at 5, notice):
/// errors 3, warnings 4, info 6, debug and trace 7.
fn priorities() -> tracing_journald::PriorityMappings {
    use tracing_journald::Priority;
    tracing_journald::PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Lines written to stderr before logging is set up (an invalid lb.toml at start): with the
/// `<3>` prefix systemd reads them as priority error when stderr is the journal.
pub fn early_error(line: &str) {
    if stderr_is_journal() {
        for l in line.lines() {
            eprintln!("<3>{l}");
        }
    } else {
        eprintln!("{line}");
    }
}

/// Installs the global subscriber. Call once, after the configuration is loaded.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("lb={0},lbd={0}", log.level.as_str())));
    let journald = match log.format {
        LogFormat::Journald => true,
        LogFormat::Text => false,
        LogFormat::Auto => stderr_is_journal(),
    };
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(
                        layer
                            .with_syslog_identifier("lbd".into())
                            .with_priority_mappings(priorities()),
                    )
                    .init();
                return;
            }
            Err(e) => eprintln!("lbd: journald unavailable ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_is_informational_not_notice_in_the_journal() {
        let p = super::priorities();
        // The journal's PRIORITY field, as the ASCII digit tracing-journald writes.
        assert_eq!(p.error as u8, b'3');
        assert_eq!(p.warn as u8, b'4');
        assert_eq!(p.info as u8, b'6');
        assert_eq!(p.debug as u8, b'7');
        assert_eq!(p.trace as u8, b'7');
    }
}

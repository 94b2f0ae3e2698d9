//! raft-lite hard state (term, vote) on disk: the one piece of I/O in `cluster`.
//!
//! Stored as JSON in `<state_dir>/raft-state.json`, replaced atomically: write a temporary
//! file, fsync it, rename it over the old one, fsync the directory (so the rename itself is
//! durable). A vote must never be answered before `store` returned (Raft §5.2, thesis §3.8).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use lb_core::cluster::HardState;

#[derive(Debug, thiserror::Error)]
pub enum HardStateError {
    #[error("reading raft-lite state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "raft-lite state {path} is corrupt ({reason}); it holds only term and vote: stop lbd, move the file away, restart (the node then waits one election timeout before voting)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "raft-lite boot number file {path} is corrupt ({reason}): stop lbd, move the file away, restart (then make sure this host's clock is right before it starts, or peers ignore it until it catches up)"
    )]
    CorruptBoot { path: PathBuf, reason: String },
    #[error("writing raft-lite state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub const FILE_NAME: &str = "raft-state.json";
/// The voter set, versioned (docs/raft-lite.md, "Changing the voter set"): a file of its
/// own, so `raft-state.json` keeps the format earlier builds read.
pub const VOTERS_FILE_NAME: &str = "raft-voters.json";

/// Loads the hard state from `dir`; a missing file is a fresh node (term 0, no vote, the
/// configured voters).
pub fn load(dir: &Path) -> Result<HardState, HardStateError> {
    let mut hs: HardState = read_json(dir, FILE_NAME)?.unwrap_or_default();
    hs.voters = read_json(dir, VOTERS_FILE_NAME)?;
    Ok(hs)
}

fn read_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, HardStateError> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(HardStateError::Read { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| HardStateError::Corrupt {
            path,
            reason: e.to_string(),
        })
}

/// Durably replaces the hard state in `dir` (the voter set first, when there is one).
pub fn store(dir: &Path, state: &HardState) -> Result<(), HardStateError> {
    let enc = |name: &str, r: serde_json::Result<Vec<u8>>| {
        r.map_err(|e| HardStateError::Write {
            path: dir.join(name),
            source: std::io::Error::other(e),
        })
    };
    if let Some(v) = &state.voters {
        let json = enc(VOTERS_FILE_NAME, serde_json::to_vec(v))?;
        write_atomic(dir, VOTERS_FILE_NAME, &json)?;
    }
    let json = enc(FILE_NAME, serde_json::to_vec(state))?;
    write_atomic(dir, FILE_NAME, &json)
}

/// Write `bytes` to `dir/name` so that a crash leaves either the old or the new file: write a
/// temporary file, fsync it, rename it over the old one, fsync the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), HardStateError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| HardStateError::Write { path: p, source }
    };
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(werr(&tmp))?;
        f.write_all(bytes).map_err(werr(&tmp))?;
        f.sync_all().map_err(werr(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(werr(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr(dir))?;
    Ok(())
}

pub const BOOT_FILE_NAME: &str = "raft-boot.json";

/// Room left after one boot's number for that process's datagram sequence numbers: 2^40
/// datagrams is centuries at any real rate.
pub const BOOT_STRIDE: u64 = 1 << 40;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Boot {
    last: u64,
}

/// This process's boot number: the first datagram sequence number and the incarnation peers
/// see. It must exceed every earlier boot's numbers, or peers drop our datagrams as replays
/// (and ignore our restart) until it does. Wall-clock nanoseconds alone fail that when the
/// clock is behind at boot (RTC before NTP sync): so it is also at least the last boot's
/// number plus [`BOOT_STRIDE`], made durable before any datagram is sent.
pub fn next_boot(dir: &Path, wall_nanos: u64) -> Result<u64, HardStateError> {
    let path = dir.join(BOOT_FILE_NAME);
    let last = match fs::read(&path) {
        Ok(b) => Some(
            serde_json::from_slice::<Boot>(&b)
                .map_err(|e| HardStateError::CorruptBoot {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .last,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(HardStateError::Read { path, source }),
    };
    let boot = match last {
        Some(last) => wall_nanos.max(last.saturating_add(BOOT_STRIDE)),
        None => wall_nanos,
    }
    .max(1);
    let json = serde_json::to_vec(&Boot { last: boot }).map_err(|e| HardStateError::Write {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(dir, BOOT_FILE_NAME, &json)?;
    Ok(boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_loads_as_fresh_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), HardState::default());
    }

    #[test]
    fn stored_state_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = HardState {
            term: 42,
            voted_for: Some("worker-2".into()),
            voters: None,
        };
        store(dir.path(), &s).expect("store");
        assert_eq!(load(dir.path()).expect("load"), s);
        let s2 = HardState {
            term: 43,
            voted_for: None,
            voters: None,
        };
        store(dir.path(), &s2).expect("store again");
        assert_eq!(load(dir.path()).expect("load"), s2);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
    }

    #[test]
    fn the_voter_set_is_kept_in_its_own_file_and_raft_state_keeps_its_old_format() {
        use lb_core::cluster::voters::VoterState;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vs = VoterState::configured(
            [("a".to_owned(), "10.0.0.1:7946".parse().expect("addr"))].into(),
        );
        vs.version = 3;
        let s = HardState {
            term: 7,
            voted_for: None,
            voters: Some(vs),
        };
        store(dir.path(), &s).expect("store");
        assert_eq!(load(dir.path()).expect("load"), s);
        let state = fs::read_to_string(dir.path().join(FILE_NAME)).expect("read");
        assert_eq!(
            state, r#"{"term":7,"voted_for":null}"#,
            "what earlier builds read"
        );
        assert!(dir.path().join(VOTERS_FILE_NAME).exists());
    }

    #[test]
    fn boot_number_grows_across_restarts_even_when_the_clock_went_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = next_boot(dir.path(), 1_700_000_000_000_000_000).expect("boot 1");
        assert_eq!(first, 1_700_000_000_000_000_000);
        // The clock is a day behind at the next boot (RTC before NTP sync).
        let second = next_boot(dir.path(), first - 86_400_000_000_000).expect("boot 2");
        assert_eq!(second, first + BOOT_STRIDE);
        // A clock far ahead wins.
        let third = next_boot(dir.path(), second + 5 * BOOT_STRIDE).expect("boot 3");
        assert_eq!(third, second + 5 * BOOT_STRIDE);
        assert!(!dir.path().join(format!("{BOOT_FILE_NAME}.tmp")).exists());
    }

    #[test]
    fn corrupt_boot_file_is_a_clear_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(BOOT_FILE_NAME), b"{\"la").expect("write");
        let err = next_boot(dir.path(), 5).expect_err("corrupt must fail");
        assert!(err.to_string().contains(BOOT_FILE_NAME), "{err}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FILE_NAME), b"{\"term\": 4, \"vot").expect("write");
        let err = load(dir.path()).expect_err("corrupt must fail");
        assert!(matches!(err, HardStateError::Corrupt { .. }));
        assert!(err.to_string().contains(FILE_NAME), "{err}");
    }
}

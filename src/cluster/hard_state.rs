//! raft-lite hard state (term, vote) on disk: the one piece of I/O in `cluster`.
//!
//! Stored as JSON in `<state_dir>/raft-state.json`, replaced atomically: write a temporary
//! file, fsync it, rename it over the old one, fsync the directory (so the rename itself is
//! durable). A vote must never be answered before `store` returned (Raft §5.2, thesis §3.8).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardState {
    pub term: u64,
    pub voted_for: Option<String>,
}

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
    #[error("writing raft-lite state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub const FILE_NAME: &str = "raft-state.json";

/// Loads the hard state from `dir`; a missing file is a fresh node (term 0, no vote).
pub fn load(dir: &Path) -> Result<HardState, HardStateError> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HardState::default()),
        Err(source) => return Err(HardStateError::Read { path, source }),
    };
    serde_json::from_slice(&bytes).map_err(|e| HardStateError::Corrupt {
        path,
        reason: e.to_string(),
    })
}

/// Durably replaces the hard state in `dir`.
pub fn store(dir: &Path, state: &HardState) -> Result<(), HardStateError> {
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| HardStateError::Write { path: p, source }
    };
    let json = serde_json::to_vec(state).map_err(|e| HardStateError::Write {
        path: tmp.clone(),
        source: std::io::Error::other(e),
    })?;
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(werr(&tmp))?;
        f.write_all(&json).map_err(werr(&tmp))?;
        f.sync_all().map_err(werr(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(werr(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr(dir))?;
    Ok(())
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
        };
        store(dir.path(), &s).expect("store");
        assert_eq!(load(dir.path()).expect("load"), s);
        let s2 = HardState {
            term: 43,
            voted_for: None,
        };
        store(dir.path(), &s2).expect("store again");
        assert_eq!(load(dir.path()).expect("load"), s2);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
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

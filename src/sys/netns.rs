//! Moving the calling thread into a named network namespace (`ip netns add NAME` makes
//! `/run/netns/NAME`). setns(2) with CLONE_NEWNET changes only the calling thread, so a test
//! can run a namespace's sockets on a thread of its own.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("setns into network namespace {path}: {source}")]
    Setns { path: PathBuf, source: io::Error },
}

/// Moves the calling thread into the network namespace `/run/netns/<name>`.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let path = PathBuf::from("/run/netns").join(name);
    let file = File::open(&path).map_err(|source| NetnsError::Open {
        path: path.clone(),
        source,
    })?;
    // SAFETY: the fd is valid for the duration of the call (`file` is alive); setns only
    // reads it.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Setns {
            path,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

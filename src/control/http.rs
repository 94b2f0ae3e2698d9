//! A minimal HTTP/1.1 responder for `/metrics`, `/live` and `/ready` on `[metrics] listen`.
//!
//! Three GET endpoints with no bodies to read do not need an HTTP stack: one request per
//! connection (`Connection: close`), head capped at 8 KiB and 10 s, at most 32 connections
//! at once. Request parsing and routing are pure functions ([`parse_request`], [`route`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::ControlError;
use super::metrics::{CONTENT_TYPE, Metrics};
use super::state::Snapshot;

const MAX_HEAD: usize = 8192;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 32;
const LINGER: Duration = Duration::from_secs(1);
const MAX_DRAIN: usize = 64 * 1024;

/// Touched by the daemon's main loop on every tick; `/live` answers 200 while the last touch
/// is at most `stale_after` old. Creation counts as a touch (start-up is alive).
#[derive(Clone, Debug)]
pub struct Liveness {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last touch.
    last_ms: Arc<AtomicU64>,
    stale_after: Duration,
}

impl Liveness {
    pub fn new(stale_after: Duration) -> Self {
        Self::new_at(Instant::now(), stale_after)
    }

    pub fn new_at(now: Instant, stale_after: Duration) -> Self {
        Self {
            epoch: now,
            last_ms: Arc::new(AtomicU64::new(0)),
            stale_after,
        }
    }

    pub fn touch(&self) {
        self.touch_at(Instant::now());
    }

    pub fn touch_at(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn is_alive_at(&self, now: Instant) -> bool {
        let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last) <= self.stale_after
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("request head is not complete")]
    Incomplete,
    #[error("malformed request line {0:?}")]
    BadRequestLine(String),
    #[error("method {0} not allowed")]
    MethodNotAllowed(String),
    #[error("unsupported protocol version {0:?}")]
    BadVersion(String),
    #[error("request head larger than 8 KiB")]
    HeadTooLarge,
}

/// Parse the request line of an HTTP/1.x head (everything up to the blank line). Only the
/// path (without query) and method matter here; headers are ignored.
pub fn parse_request(head: &[u8]) -> Result<(Method, String), HttpError> {
    let end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(HttpError::Incomplete)?;
    let line = String::from_utf8_lossy(&head[..end]);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine(line.into_owned()));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(HttpError::BadVersion(version.to_string()));
    }
    if !target.starts_with('/') {
        return Err(HttpError::BadRequestLine(line.into_owned()));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => return Err(HttpError::MethodNotAllowed(other.to_string())),
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok((method, path.to_string()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
        }
    }

    /// The bytes on the wire; `HEAD` gets the headers of the `GET` response without a body.
    pub fn to_bytes(&self, method: Method) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            505 => "HTTP Version Not Supported",
            503 => "Service Unavailable",
            _ => "Unknown",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if method == Method::Get {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

/// What each path answers.
pub fn route(path: &str, metrics: &Metrics, alive: bool, ready: bool) -> Response {
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body: metrics.encode(),
        },
        "/live" if alive => Response::text(200, "ok"),
        "/live" => Response::text(503, "main loop stalled"),
        "/ready" if ready => Response::text(200, "ready"),
        "/ready" => Response::text(503, "not ready"),
        _ => Response::text(404, "not found; try /metrics, /live or /ready"),
    }
}

/// The running HTTP server; aborted when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Where it listens (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listen on `addr` and serve until the returned handle is dropped. `/ready` follows
/// `snapshot.ready`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    liveness: Liveness,
    snapshot: watch::Receiver<Snapshot>,
) -> Result<MetricsServer, ControlError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ControlError::MetricsListen { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ControlError::MetricsListen { addr, source })?;
    let task = tokio::spawn(accept_loop(listener, metrics, liveness, snapshot));
    Ok(MetricsServer { local_addr, task })
}

async fn accept_loop(
    listener: TcpListener,
    metrics: Metrics,
    liveness: Liveness,
    snapshot: watch::Receiver<Snapshot>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: too many connections, dropping one");
            continue;
        };
        let (metrics, liveness, snapshot) = (metrics.clone(), liveness.clone(), snapshot.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &metrics, &liveness, &snapshot).await {
                tracing::debug!(%peer, error = %e, "metrics: connection failed");
            }
            drop(permit);
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    metrics: &Metrics,
    liveness: &Liveness,
    snapshot: &watch::Receiver<Snapshot>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    if head.is_empty() {
        return Ok(());
    }
    let complete = head.windows(4).any(|w| w == b"\r\n\r\n");
    let parsed = if !complete && head.len() >= MAX_HEAD {
        Err(HttpError::HeadTooLarge)
    } else {
        parse_request(&head)
    };
    let (method, response) = match parsed {
        Ok((method, path)) => {
            let ready = snapshot.borrow().ready;
            let alive = liveness.is_alive_at(Instant::now());
            (method, route(&path, metrics, alive, ready))
        }
        Err(e @ HttpError::MethodNotAllowed(_)) => {
            (Method::Get, Response::text(405, &e.to_string()))
        }
        Err(e @ HttpError::BadVersion(_)) => (Method::Get, Response::text(505, &e.to_string())),
        Err(e @ HttpError::HeadTooLarge) => (Method::Get, Response::text(431, &e.to_string())),
        Err(e) => (Method::Get, Response::text(400, &e.to_string())),
    };
    stream.write_all(&response.to_bytes(method)).await?;
    stream.shutdown().await?;
    // Lingering close: closing with unread input makes the kernel send RST, which can
    // destroy the response before the client reads it. Drain briefly first.
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        let mut drained = 0usize;
        while drained < MAX_DRAIN {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    Ok(())
}

/// Read until the blank line ending the head, at most `MAX_HEAD` bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_HEAD {
            buf.truncate(MAX_HEAD);
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_with_query_string() {
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok((Method::Get, "/metrics".to_string()))
        );
        assert_eq!(
            parse_request(b"HEAD /ready HTTP/1.0\r\n\r\n"),
            Ok((Method::Head, "/ready".to_string()))
        );
    }

    #[test]
    fn rejects_other_methods_versions_and_garbage() {
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Err(HttpError::MethodNotAllowed("POST".into()))
        );
        assert!(matches!(
            parse_request(b"GET /metrics HTTP/2\r\n\r\n"),
            Err(HttpError::BadVersion(_))
        ));
        assert!(matches!(
            parse_request(b"GET metrics HTTP/1.1\r\n"),
            Err(HttpError::BadRequestLine(_))
        ));
        assert!(matches!(
            parse_request(b"GET  /metrics HTTP/1.1\r\n"),
            Err(HttpError::BadRequestLine(_))
        ));
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1"),
            Err(HttpError::Incomplete)
        );
    }

    #[test]
    fn ready_and_live_follow_their_inputs() {
        let m = Metrics::new();
        assert_eq!(route("/ready", &m, true, false).status, 503);
        assert_eq!(route("/ready", &m, true, true).status, 200);
        assert_eq!(route("/live", &m, false, true).status, 503);
        assert_eq!(route("/live", &m, true, false).status, 200);
        assert_eq!(route("/nope", &m, true, true).status, 404);
        let r = route("/metrics", &m, true, true);
        assert_eq!((r.status, r.content_type), (200, CONTENT_TYPE));
    }

    #[test]
    fn head_response_has_length_but_no_body() {
        let r = Response::text(200, "ok");
        let bytes = String::from_utf8(r.to_bytes(Method::Head)).unwrap();
        assert!(bytes.contains("Content-Length: 3\r\n"));
        assert!(bytes.ends_with("\r\n\r\n"));
    }

    #[test]
    fn liveness_goes_stale_without_touches() {
        let t0 = Instant::now();
        let l = Liveness::new_at(t0, Duration::from_secs(5));
        assert!(l.is_alive_at(t0 + Duration::from_secs(5)));
        assert!(!l.is_alive_at(t0 + Duration::from_secs(6)));
        l.touch_at(t0 + Duration::from_secs(6));
        assert!(l.is_alive_at(t0 + Duration::from_secs(10)));
        // A late touch from an older instant never moves the mark backwards.
        l.touch_at(t0 + Duration::from_secs(1));
        assert!(l.is_alive_at(t0 + Duration::from_secs(11)));
    }

    proptest::proptest! {
        #[test]
        fn parse_request_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_request(&bytes);
        }
    }
}

//! A client of tenetd's HTTP/JSON API over its Unix socket, one connection per call:
//! what tenetctl, tenet-cni and the Docker network plugin speak to a running tenetd.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// tenetd's default API socket.
pub const DEFAULT_SOCKET: &str = "/run/tenet/tenetd.sock";

/// What the API answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: Value,
    /// The body's bytes.
    pub raw: Vec<u8>,
}

impl Answer {
    /// Whether the call succeeded (2xx).
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (lossy), for what is not JSON (metrics) and for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The refusal's message (`{"field", "message"}`), for errors shown to people.
    pub fn refusal(&self) -> String {
        let message = self.body.get("message").and_then(Value::as_str);
        let field = self.body.get("field").and_then(Value::as_str);
        match (field, message) {
            (Some(f), Some(m)) if !f.is_empty() => format!("{f}: {m}"),
            (_, Some(m)) => m.to_owned(),
            _ => self.text().trim().to_owned(),
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text())
    }
}

/// Why a call could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No tenetd listens on the socket.
    #[error("cannot reach tenetd at {socket}: {source} (is it running?)")]
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange broke off or made no sense.
    #[error("talking to tenetd: {0}")]
    Protocol(String),
}

/// A client of one tenetd.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the tenetd listening on `socket`.
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self {
            socket: socket.as_ref().to_owned(),
        }
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `method path` with `body` as JSON and returns the answer, whatever its
    /// status.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CallError> {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        self.send(method, path, payload.as_bytes())
    }

    /// Sends `method path` with `body` as it is (JSON or not: tests send malformed
    /// bodies on purpose) and returns the answer, whatever its status.
    pub fn send(&self, method: &str, path: &str, body: &[u8]) -> Result<Answer, CallError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| CallError::Unreachable {
                socket: self.socket.clone(),
                source,
            })?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: tenetd\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream
            .write_all(&request)
            .map_err(|e| CallError::Protocol(format!("writing: {e}")))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| CallError::Protocol(format!("reading: {e}")))?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| CallError::Protocol("no HTTP response".to_owned()))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let body = raw[split + 4..].to_vec();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CallError::Protocol("malformed status line".to_owned()))?;
        let json = head
            .to_ascii_lowercase()
            .contains("content-type: application/json");
        let parsed = if json && !body.is_empty() {
            serde_json::from_slice(&body)
                .map_err(|e| CallError::Protocol(format!("invalid JSON: {e}")))?
        } else {
            Value::Null
        };
        Ok(Answer {
            status,
            body: parsed,
            raw: body,
        })
    }
}

/// A path segment with the characters tenetd's router splits on escaped (MACs).
pub fn encode(segment: &str) -> String {
    segment.replace(':', "%3A")
}

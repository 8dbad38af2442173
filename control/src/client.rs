//! A client of tenetd's HTTP/JSON API over its Unix socket, one connection per call:
//! what tenetctl, tenet-cni and the Docker network plugin speak to a running tenetd.

use std::io::{BufRead, BufReader, Read, Write};
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
        let mut response = self.open(method, path, body)?;
        let mut raw = Vec::new();
        response
            .read_to_end(&mut raw)
            .map_err(|e| CallError::Protocol(format!("reading: {e}")))?;
        let parsed = if response.is_json() && !raw.is_empty() {
            serde_json::from_slice(&raw)
                .map_err(|e| CallError::Protocol(format!("invalid JSON: {e}")))?
        } else {
            Value::Null
        };
        Ok(Answer {
            status: response.status,
            body: parsed,
            raw,
        })
    }

    /// Sends `method path` with `body` as JSON and gives the response to read as it
    /// comes (a capture's stream).
    pub fn stream(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, CallError> {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        self.open(method, path, payload.as_bytes())
    }

    fn open(&self, method: &str, path: &str, body: &[u8]) -> Result<Response, CallError> {
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
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| CallError::Protocol(format!("reading: {e}")))?;
            if n == 0 {
                return Err(CallError::Protocol("no HTTP response".to_owned()));
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CallError::Protocol("malformed status line".to_owned()))?;
        let head = head.to_ascii_lowercase();
        let chunked = head.contains("transfer-encoding: chunked");
        Ok(Response {
            status,
            head,
            reader,
            chunk: if chunked {
                Chunk::Between
            } else {
                Chunk::Plain
            },
        })
    }
}

/// An answer whose body is read as it comes.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The header lines, lower-cased.
    head: String,
    reader: BufReader<UnixStream>,
    chunk: Chunk,
}

/// Where a response body stands in HTTP/1.1 chunked framing.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Not chunked: the body runs to the end of the connection.
    Plain,
    /// Before a chunk's size line.
    Between,
    /// Inside a chunk, with this many bytes left.
    In(usize),
    /// Past the last chunk.
    Done,
}

impl Response {
    /// Whether the body is JSON (an error, when a stream was asked for).
    pub fn is_json(&self) -> bool {
        self.head.contains("content-type: application/json")
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line)
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.chunk {
                Chunk::Plain => return self.reader.read(buf),
                Chunk::Done => return Ok(0),
                Chunk::Between => {
                    let line = self.line()?;
                    if line.is_empty() {
                        return Err(bad("the stream ended inside the response"));
                    }
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size =
                        usize::from_str_radix(size, 16).map_err(|_| bad("a bad chunk size"))?;
                    if size == 0 {
                        // Trailer lines, up to the empty one.
                        while !matches!(self.line()?.as_str(), "\r\n" | "") {}
                        self.chunk = Chunk::Done;
                    } else {
                        self.chunk = Chunk::In(size);
                    }
                }
                Chunk::In(left) => {
                    let want = buf.len().min(left);
                    let n = self.reader.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(bad("the stream ended inside a chunk"));
                    }
                    self.chunk = if n == left {
                        if self.line()?.trim() != "" {
                            return Err(bad("a chunk longer than its size"));
                        }
                        Chunk::Between
                    } else {
                        Chunk::In(left - n)
                    };
                    return Ok(n);
                }
            }
        }
    }
}

/// A path segment with the characters tenetd's router splits on escaped (MACs).
pub fn encode(segment: &str) -> String {
    segment.replace(':', "%3A")
}

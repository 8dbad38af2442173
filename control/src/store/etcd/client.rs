//! A client of etcd's v3 JSON gateway over HTTP/1.0: no gRPC stack, and a reply is
//! read to the end of the connection (a stream's first message for keepalives and
//! watches). Every call tries the endpoints in order.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

/// How long connecting to an etcd endpoint, or sending to it, may take before the
/// next endpoint is tried.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer may take: reading a large cluster's whole prefix takes etcd
/// seconds when many hosts start at once.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Every key under `start`: (key, value, mod revision), and the revision they were
/// read at.
#[allow(clippy::type_complexity)]
pub(super) fn range(
    endpoints: &[String],
    start: &str,
) -> anyhow::Result<(Vec<(String, String, i64)>, i64)> {
    let reply = call_any(
        endpoints,
        "/v3/kv/range",
        &json!({"key": BASE64.encode(start), "range_end": BASE64.encode(prefix_end(start))}),
    )?;
    let mut out = Vec::new();
    for kv in reply["kvs"].as_array().into_iter().flatten() {
        let decode = |field: &str| -> anyhow::Result<String> {
            let text = kv[field].as_str().unwrap_or_default();
            let bytes = BASE64
                .decode(text)
                .with_context(|| format!("etcd sent a {field} that is not base64"))?;
            String::from_utf8(bytes).context("etcd sent a key or value that is not UTF-8")
        };
        out.push((decode("key")?, decode("value")?, revision_of(kv)));
    }
    Ok((out, revision_of(&reply["header"])))
}

/// `text` as etcd's JSON gateway takes keys and values (base64).
pub(super) fn encode(text: impl AsRef<[u8]>) -> String {
    BASE64.encode(text)
}

/// A key or value from etcd's JSON gateway, when it is base64 of UTF-8.
pub(super) fn decode(field: &Value) -> Option<String> {
    let bytes = BASE64.decode(field.as_str().unwrap_or_default()).ok()?;
    String::from_utf8(bytes).ok()
}

/// The first JSON message of a streaming reply (the keepalive stream stays open).
pub(super) fn first_message(endpoint: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let mut stream = open_post(endpoint, path, body)?;
    let mut reply = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            bail!("etcd closed the stream");
        }
        reply.extend_from_slice(&buffer[..n]);
        let Some(head_end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let body = &reply[head_end + 4..];
        if let Some(end) = body.iter().position(|&b| b == b'\n') {
            return Ok(serde_json::from_slice(&body[..end])?);
        }
    }
}

/// POSTs `body` to `path` on the first of `endpoints` that answers.
pub(super) fn call_any(endpoints: &[String], path: &str, body: &Value) -> anyhow::Result<Value> {
    let mut failures = Vec::new();
    for endpoint in endpoints {
        match post(endpoint, path, body) {
            Ok(reply) => return Ok(reply),
            Err(e) => failures.push(format!("{endpoint}: {e:#}")),
        }
    }
    bail!("no etcd endpoint answered ({})", failures.join("; "))
}

/// Opens a connection and sends one HTTP/1.0 POST of JSON; the reply is the caller's
/// to read.
pub(super) fn open_post(endpoint: &str, path: &str, body: &Value) -> anyhow::Result<TcpStream> {
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let address = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, CALL_TIMEOUT)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    Ok(stream)
}

/// One HTTP/1.0 POST of JSON, the reply read to the end.
fn post(endpoint: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let mut stream = open_post(endpoint, path, body)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .context("etcd's reply has no body")?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    let value: Value = serde_json::from_str(payload)
        .with_context(|| format!("etcd's reply is not JSON (HTTP {status})"))?;
    if status != "200" {
        bail!(
            "etcd refused {path} (HTTP {status}): {}",
            value["message"].as_str().unwrap_or(payload)
        );
    }
    Ok(value)
}

/// A key's mod revision, or a header's revision.
pub(super) fn revision_of(value: &Value) -> i64 {
    match value.get("mod_revision") {
        Some(revision) => integer(revision),
        None => integer(&value["revision"]),
    }
}

/// A 64-bit number as etcd's JSON gateway writes it (a string), or plain; 0 if absent.
pub(super) fn integer(field: &Value) -> i64 {
    field
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| field.as_i64())
        .unwrap_or(0)
}

/// The end of the range of keys that start with `prefix`.
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_range_ends_after_every_key_under_it() {
        assert_eq!(prefix_end("/tenet/"), b"/tenet0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn revisions_come_as_strings_or_numbers() {
        assert_eq!(revision_of(&json!({"mod_revision": "42"})), 42);
        assert_eq!(revision_of(&json!({"revision": 7})), 7);
        assert_eq!(revision_of(&json!({})), 0);
    }
}

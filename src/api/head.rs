//! The request head, read and checked before hyper sees it. hyper answers a head it cannot
//! parse with an empty 400 or 431; the API promises a JSON error naming what was wrong, so
//! the checks hyper makes are made here first and refused in its place. A connection
//! carries one request (no keep-alive), so the first head is the only one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most header fields in a head (hyper's own limit).
const MAX_FIELDS: usize = 100;

/// What the first bytes of a connection came to.
pub enum Head {
    /// A head hyper will take: the bytes read so far (the head and maybe some body).
    Read(Bytes),
    /// Refused: the status and the reason, for a JSON error.
    Refused(StatusCode, String),
    /// The client closed before sending anything.
    Closed,
}

/// Read until a whole head is in, at most `max` bytes of it.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> Head {
    let mut buf = Vec::with_capacity(1024);
    loop {
        match check(&buf) {
            Ok(true) => return Head::Read(Bytes::from(buf)),
            Ok(false) => {}
            Err(refused) => return refused,
        }
        if buf.len() >= max {
            return Head::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request head is larger than {max} bytes"),
            );
        }
        let mut chunk = [0u8; 4096];
        let want = chunk.len().min(max - buf.len());
        match stream.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) if buf.is_empty() => return Head::Closed,
            Ok(0) | Err(_) => {
                return Head::Refused(
                    StatusCode::BAD_REQUEST,
                    "the connection ended inside the request head".to_string(),
                );
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether `buf` holds a whole head hyper will take (`Ok(false)`: not all of it yet).
fn check(buf: &[u8]) -> Result<bool, Head> {
    let bad = |why: String| Head::Refused(StatusCode::BAD_REQUEST, why);
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(false),
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Head::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the request has more than {MAX_FIELDS} header fields"),
            ));
        }
        Err(httparse::Error::Version) => {
            return Err(bad("the API speaks HTTP/1.0 and HTTP/1.1 only".to_string()));
        }
        Err(err) => return Err(bad(format!("malformed request head: {err}"))),
    }
    let target = req.path.unwrap_or_default();
    if let Err(err) = target.parse::<hyper::Uri>() {
        return Err(bad(format!("malformed request target {target:?}: {err}")));
    }
    let mut length: Option<&[u8]> = None;
    let mut chunked_last = None;
    for field in req.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            let value = field.value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(bad("content-length is not a number".to_string()));
            }
            if length.is_some_and(|seen| seen != value) {
                return Err(bad("two different content-length values".to_string()));
            }
            length = Some(value);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = field
                .value
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or_default();
            chunked_last = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    match (chunked_last, req.version) {
        (Some(_), Some(0)) => Err(bad("transfer-encoding in an HTTP/1.0 request".to_string())),
        (Some(false), _) => Err(bad("transfer-encoding must end with chunked".to_string())),
        _ => Ok(true),
    }
}

/// Answer a refused head with a JSON error and close.
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, status: StatusCode, why: &str) {
    let body = serde_json::json!({ "error": why }).to_string();
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    // A client gone already needs no answer.
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The connection with the bytes already read put back in front, for hyper.
pub struct Replayed<S> {
    read: Bytes,
    stream: S,
}

impl<S> Replayed<S> {
    pub fn new(read: Bytes, stream: S) -> Self {
        Replayed { read, stream }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read.has_remaining() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(raw: &[u8]) -> Result<bool, (u16, String)> {
        check(raw).map_err(|head| match head {
            Head::Refused(status, why) => (status.as_u16(), why),
            _ => (0, String::new()),
        })
    }

    #[test]
    fn heads_hyper_would_refuse_are_refused_here_with_a_reason() {
        assert_eq!(
            verdict(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n"),
            Ok(true)
        );
        assert_eq!(
            verdict(b"GET /api/health HTTP/1.1\r\nhost: x\r\n"),
            Ok(false)
        );
        assert_eq!(verdict(b"GET /api/he"), Ok(false));
        let status = |raw: &[u8]| verdict(raw).map_err(|(s, _)| s);
        assert_eq!(status(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"), Err(400));
        assert_eq!(status(b"G@T / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(status(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Err(400));
        assert_eq!(
            status(b"POST / HTTP/1.1\r\ncontent-length: 1x\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n"),
            Ok(true)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n"),
            Err(400)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
            Ok(true)
        );
        assert_eq!(
            status(b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n"),
            Err(400)
        );
        let many: String = (0..=MAX_FIELDS).map(|i| format!("x{i}: y\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(status(raw.as_bytes()), Err(431));
    }
}

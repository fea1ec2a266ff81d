//! Request and response heads on the HTTP/1.1 fast path: parsed with httparse, rewritten
//! for the other side in one pass (hop-by-hop fields out, X-Forwarded-For/Proto in).

use std::sync::Arc;

use hyper::header::HeaderName;

use super::super::retry::RETRY_BODY_MAX;
use super::super::session::Session;
use super::super::{MAX_HEADER_BYTES, Shared};
use crate::pick::Algorithm;
use crate::pool::Pool;

/// Header fields a request head may carry on the fast path (more go to hyper), and the
/// fields a response head is parsed with first.
const MAX_FIELDS: usize = 64;
/// Fields and bytes a backend's response head may have: what hyper's client takes.
const MAX_RESPONSE_FIELDS: usize = 100;
const MAX_RESPONSE_HEAD: usize = 400 * 1024;

/// Meaningful for one connection only (RFC 9110 §7.6.1), never forwarded as they came;
/// Proxy-* are addressed to this proxy. Transfer-Encoding is handled apart (see
/// [`Framing`]); Upgrade and `Connection: upgrade` are written anew for a protocol switch
/// the proxy carries (a WebSocket), and dropped otherwise.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// What the fast path made of the bytes at the start of the client's buffer.
pub(super) enum Parsed<'s> {
    /// Not a whole head yet.
    Partial,
    /// Something the fast path leaves to hyper (h2c, HTTP/1.0, upgrades, Expect, chunked or
    /// large uploads, malformed or oversized heads: hyper answers those as before).
    Handover,
    Request(RequestHead<'s>),
}

/// A client's request head, already rewritten for a backend.
pub(super) struct RequestHead<'s> {
    /// Bytes of the head in the client's buffer.
    pub len: usize,
    /// Request line and the fields to forward, each ending in CRLF; the blank line that
    /// ends the head is not there yet (a `Host` may have to come first).
    pub wire: Vec<u8>,
    pub has_host: bool,
    pub content_length: u64,
    pub idempotent: bool,
    pub is_head: bool,
    /// The client asked to close the connection after this request.
    pub close: bool,
    /// The protocols the client asks to switch to (a WebSocket), its Upgrade field: on a
    /// 101 naming only those the connection becomes a tunnel to the backend.
    pub upgrade: Option<Vec<u8>>,
    pub pool: &'s Arc<Pool>,
    pub session: Option<Session>,
}

fn named(name: &str, wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted)
}

/// The comma-separated tokens of a field value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a field is hop-by-hop, by the fixed list or because a Connection field named it.
fn hop_by_hop(name: &str, listed: &[&[u8]]) -> bool {
    HOP_BY_HOP.iter().any(|h| named(name, h))
        || listed
            .iter()
            .any(|l| l.eq_ignore_ascii_case(name.as_bytes()))
}

/// Connection tokens of a head (at most a few; more than 8 go to hyper's general path).
type Listed<'b> = Vec<&'b [u8]>;

fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) || value.len() > 18 {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Parse the request head at the start of `buf` and rewrite it for a backend.
pub(super) fn parse_request<'s>(
    buf: &[u8],
    shared: &'s Shared,
    forwarded_for: &[u8],
) -> Parsed<'s> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEADER_BYTES => return Parsed::Partial,
        _ => return Parsed::Handover,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Handover;
    };
    // Origin-form only; CONNECT (answered 405) and absolute or asterisk forms go to hyper.
    if method == "CONNECT" || !path.starts_with('/') {
        return Parsed::Handover;
    }
    let mut listed: Listed = Vec::new();
    let mut close = false;
    let mut has_host = false;
    let mut length: Option<u64> = None;
    let mut upgrade: Option<&[u8]> = None;
    let mut hosts = 0;
    for field in request.headers.iter() {
        let name = field.name;
        if named(name, "connection") {
            for token in tokens(field.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                listed.push(token);
            }
        } else if named(name, "upgrade") {
            if upgrade.is_some() {
                return Parsed::Handover;
            }
            upgrade = Some(field.value);
        } else if named(name, "expect") || named(name, "transfer-encoding") {
            return Parsed::Handover;
        } else if named(name, "host") {
            // A second Host is refused by the hyper path (400): leave it to that path.
            if hosts > 0 {
                return Parsed::Handover;
            }
            hosts += 1;
        } else if named(name, "content-length") {
            match (content_length(field.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(earlier)) if n == earlier => {}
                _ => return Parsed::Handover,
            }
        }
    }
    let content_length = length.unwrap_or(0);
    if content_length > RETRY_BODY_MAX {
        return Parsed::Handover;
    }
    // A switch the fast path carries: asked for properly (Connection names upgrade), no body,
    // and not h2c (which hyper ignores, answering in HTTP/1.1). Anything else goes to hyper.
    let upgrade = match upgrade {
        None => None,
        Some(value)
            if listed.iter().any(|t| t.eq_ignore_ascii_case(b"upgrade"))
                && content_length == 0
                && !tokens(value).any(|p| p.eq_ignore_ascii_case(b"h2c")) =>
        {
            Some(value)
        }
        Some(_) => return Parsed::Handover,
    };
    let mut wire = Vec::with_capacity(len + 64);
    for part in [method.as_bytes(), b" ", path.as_bytes(), b" HTTP/1.1\r\n"] {
        wire.extend_from_slice(part);
    }
    let mut earlier_forwarded: Vec<&[u8]> = Vec::new();
    for field in request.headers.iter() {
        let name = field.name;
        // Content-Length is ours to write (below), whatever a Connection field names: a
        // backend must never see a body without its length, nor a length twice.
        if named(name, "content-length") || hop_by_hop(name, &listed) {
            continue;
        }
        if named(name, "x-forwarded-for") {
            earlier_forwarded.push(field.value);
        } else if !named(name, "x-forwarded-proto") {
            has_host |= named(name, "host");
            push_field(&mut wire, name.as_bytes(), field.value);
        }
    }
    if let Some(length) = length {
        wire.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    if let Some(protocols) = upgrade {
        push_field(&mut wire, b"connection", b"upgrade");
        push_field(&mut wire, b"upgrade", protocols);
    }
    wire.extend_from_slice(b"x-forwarded-for: ");
    for earlier in earlier_forwarded {
        wire.extend_from_slice(earlier);
        wire.extend_from_slice(b", ");
    }
    wire.extend_from_slice(forwarded_for);
    wire.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");

    let first_value = |name: &HeaderName| {
        request
            .headers
            .iter()
            .find(|field| named(field.name, name.as_str()))
            .map(|field| field.value)
    };
    let route_path = path.split('?').next().unwrap_or(path);
    let pool = shared
        .ruled
        .iter()
        .find(|pool| pool.rule.matches_head(route_path, first_value))
        .unwrap_or(&shared.default);
    let session = (pool.algorithm == Algorithm::ConsistentHash)
        .then(|| {
            let cookies = request
                .headers
                .iter()
                .filter(|field| named(field.name, "cookie"))
                .map(|field| field.value);
            Session::from_fields(&shared.settings, first_value, cookies)
        })
        .flatten();
    Parsed::Request(RequestHead {
        len,
        wire,
        has_host,
        content_length,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        ),
        is_head: method == "HEAD",
        close,
        upgrade: upgrade.map(<[u8]>::to_vec),
        pool,
        session,
    })
}

/// A 101 is taken only to a switch the client asked for, naming in its Upgrade field only
/// protocols the client offered (RFC 9110 §7.8): a backend answering a bare 101 and going on
/// in HTTP/1.1 would otherwise give the client a raw pipe past the proxy's rules.
fn switch_offered(fields: &[httparse::Header<'_>], offered: Option<&[u8]>) -> bool {
    let Some(offered) = offered else {
        return false;
    };
    let mut chosen = fields
        .iter()
        .filter(|field| named(field.name, "upgrade"))
        .flat_map(|field| tokens(field.value))
        .peekable();
    chosen.peek().is_some()
        && chosen.all(|protocol| tokens(offered).any(|offer| offer.eq_ignore_ascii_case(protocol)))
}

fn push_field(wire: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    wire.extend_from_slice(name);
    wire.extend_from_slice(b": ");
    wire.extend_from_slice(value);
    wire.extend_from_slice(b"\r\n");
}

/// How a response's body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
    /// Until the backend closes: the client's connection closes after it too.
    UntilClose,
    /// 101 to a switch the client asked for: no body; both connections become a tunnel.
    Switched,
}

/// A backend's response head, rewritten for the client.
#[derive(Debug)]
pub(super) struct ResponseHead {
    /// Bytes of the head in the backend connection's buffer.
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub reusable: bool,
    /// Status line and fields for the client, ending in the blank line.
    pub wire: Vec<u8>,
}

/// What a backend's bytes hold so far.
#[derive(Debug)]
pub(super) enum ResponseParse {
    Partial,
    /// An interim response (100 Continue, 103 Early Hints) of this many bytes: skipped.
    Interim(usize),
    Complete(ResponseHead),
    /// Not HTTP/1.x, a 101 never asked for, contradictory framing, or a head past the limit.
    Invalid,
}

/// What the answer's framing depends on in its request.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Asked<'a> {
    pub head: bool,
    /// The protocols a switch was asked for (the request's Upgrade field).
    pub upgrade: Option<&'a [u8]>,
    /// The client's connection ends after this answer, which the rewritten head then says.
    pub close_client: bool,
}

/// Parse the response head at the start of `buf`.
pub(super) fn parse_response(buf: &[u8], asked: Asked<'_>) -> ResponseParse {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => {
            // Rare: as many fields as hyper's client takes, on the heap.
            let mut fields = vec![httparse::EMPTY_HEADER; MAX_RESPONSE_FIELDS];
            let mut response = httparse::Response::new(&mut fields);
            let parsed = response.parse(buf);
            rewrite_response(response, parsed, buf.len(), asked)
        }
        parsed => rewrite_response(response, parsed, buf.len(), asked),
    }
}

fn rewrite_response(
    response: httparse::Response<'_, '_>,
    parsed: httparse::Result<usize>,
    buffered: usize,
    asked: Asked<'_>,
) -> ResponseParse {
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buffered < MAX_RESPONSE_HEAD => {
            return ResponseParse::Partial;
        }
        _ => return ResponseParse::Invalid,
    };
    let (Some(status), Some(version)) = (response.code, response.version) else {
        return ResponseParse::Invalid;
    };
    let switched = status == 101;
    if switched && !switch_offered(response.headers, asked.upgrade) {
        return ResponseParse::Invalid;
    }
    if (100..200).contains(&status) && !switched {
        return ResponseParse::Interim(len);
    }
    let mut listed: Listed = Vec::new();
    let mut backend_close = version == 0;
    // Some(whether chunked is the last coding) once a Transfer-Encoding field was seen.
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for field in response.headers.iter() {
        if named(field.name, "connection") {
            for token in tokens(field.value) {
                backend_close |= token.eq_ignore_ascii_case(b"close");
                listed.push(token);
            }
        } else if named(field.name, "transfer-encoding") {
            // The last coding of all the fields decides; anything but chunked last is
            // delimited by the close. A field with no coding at all is not HTTP.
            let Some(last) = tokens(field.value).last() else {
                return ResponseParse::Invalid;
            };
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if named(field.name, "content-length") {
            match (content_length(field.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(earlier)) if n == earlier => {}
                _ => return ResponseParse::Invalid,
            }
        }
    }
    let framing = if switched {
        Framing::Switched
    } else if asked.head || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let mut wire = Vec::with_capacity(len + 32);
    wire.extend_from_slice(format!("HTTP/1.1 {status} ").as_bytes());
    wire.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    wire.extend_from_slice(b"\r\n");
    for field in response.headers.iter() {
        let name = field.name;
        let keep = if named(name, "transfer-encoding") {
            // Passed through as it is only when the body is (chunked to an HTTP/1.1 client).
            framing == Framing::Chunked
        } else if named(name, "upgrade") {
            switched
        } else if named(name, "content-length") {
            // Never on a 1xx (RFC 9110 §8.6): a client could frame a body on the 101.
            chunked.is_none() && !switched
        } else {
            !hop_by_hop(name, &listed)
        };
        if keep {
            push_field(&mut wire, name.as_bytes(), field.value);
        }
    }
    if switched {
        wire.extend_from_slice(b"connection: upgrade\r\n");
    } else if asked.close_client || framing == Framing::UntilClose {
        wire.extend_from_slice(b"connection: close\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    ResponseParse::Complete(ResponseHead {
        len,
        status,
        framing,
        reusable: !backend_close && !matches!(framing, Framing::UntilClose | Framing::Switched),
        wire,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(head: bool, close_client: bool) -> Asked<'static> {
        Asked {
            head,
            upgrade: None,
            close_client,
        }
    }

    fn complete(parsed: ResponseParse) -> ResponseHead {
        match parsed {
            ResponseParse::Complete(head) => head,
            other => panic!("not a complete head: {other:?}"),
        }
    }

    fn text(wire: &[u8]) -> String {
        String::from_utf8_lossy(wire).into_owned()
    }

    fn shared() -> Shared {
        let config = crate::config::BalancerConfig {
            algorithm: crate::pick::Algorithm::ConsistentHash,
            session_header: "X-Session".to_string(),
            pools: vec![crate::config::BalancerPoolConfig {
                name: "embed".to_string(),
                algorithm: None,
                header: String::new(),
                path_prefix: "/v1/embed".to_string(),
            }],
            ..Default::default()
        };
        crate::shared_for(&config).expect("shared")
    }

    fn request<'s>(shared: &'s Shared, raw: &str) -> RequestHead<'s> {
        match parse_request(raw.as_bytes(), shared, b"10.0.0.9") {
            Parsed::Request(head) => head,
            Parsed::Partial => panic!("partial: {raw:?}"),
            Parsed::Handover => panic!("handed over: {raw:?}"),
        }
    }

    #[test]
    fn request_heads_are_rewritten_for_the_backend() {
        let shared = shared();
        let raw = "POST /v1/embed?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\n\
                   X-Hop: 1\r\nTE: trailers\r\nX-Forwarded-For: 192.0.2.1\r\n\
                   X-Forwarded-Proto: https\r\nX-Session: s1\r\nContent-Length: 3\r\n\r\nabc";
        let head = request(&shared, raw);
        assert_eq!(head.len, raw.len() - 3);
        assert_eq!(
            text(&head.wire),
            "POST /v1/embed?x=1 HTTP/1.1\r\nHost: a\r\nX-Session: s1\r\ncontent-length: 3\r\n\
             x-forwarded-for: 192.0.2.1, 10.0.0.9\r\nx-forwarded-proto: http\r\n"
        );
        assert!(head.has_host && !head.close && !head.idempotent && !head.is_head);
        assert_eq!(head.content_length, 3);
        assert_eq!(head.pool.name, "embed", "routed by the path, query aside");
        assert_eq!(head.session.as_ref().map(|s| s.bytes()), Some(&b"s1"[..]));

        let head = request(&shared, "HEAD /x HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!head.has_host && head.close && head.idempotent && head.is_head);
        assert_eq!(head.pool.name, shared.default.name);
        assert!(head.session.is_none());
    }

    #[test]
    fn a_connection_field_cannot_take_the_length_or_the_host_away() {
        let shared = shared();
        // Were Content-Length dropped as hop-by-hop, the body would reach the backend as a
        // second request of the client's making.
        let head = request(
            &shared,
            "POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length, host\r\n\
             Content-Length: 5\r\nContent-Length: 5\r\n\r\n",
        );
        let wire = text(&head.wire);
        assert!(wire.contains("\r\ncontent-length: 5\r\n"), "{wire}");
        assert_eq!(wire.matches("ontent-length").count(), 1, "{wire}");
        assert!(!wire.contains("Host: a"), "{wire}");
        assert!(!head.has_host, "the backend's Host goes in instead");
    }

    #[test]
    fn a_websocket_switch_is_asked_of_the_backend_and_its_101_passed_on() {
        let shared = shared();
        let head = request(
            &shared,
            "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        assert_eq!(head.upgrade.as_deref(), Some(&b"websocket"[..]));
        let wire = text(&head.wire);
        assert!(
            wire.contains("\r\nconnection: upgrade\r\nupgrade: websocket\r\n"),
            "{wire}"
        );
        assert!(!wire.contains("keep-alive"), "{wire}");
        assert!(wire.contains("Sec-WebSocket-Version: 13"), "{wire}");

        let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\nframe";
        let asked = Asked {
            upgrade: Some(b"websocket"),
            ..Asked::default()
        };
        let head = complete(parse_response(switch, asked));
        assert_eq!(head.framing, Framing::Switched);
        assert!(!head.reusable);
        assert_eq!(head.len, switch.len() - 5);
        assert_eq!(
            text(&head.wire),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: x\r\nconnection: upgrade\r\n\r\n"
        );
        // A backend declining the switch answers as usual: an ordinary answer.
        let declined = complete(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            asked,
        ));
        assert_eq!(declined.framing, Framing::Length(0));
        assert!(declined.reusable);
        // A 101 not naming what was offered, or naming nothing, is not taken.
        for bad in [
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n"[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        ] {
            assert!(
                matches!(parse_response(bad, asked), ResponseParse::Invalid),
                "{}",
                text(bad)
            );
        }
        let with_length = complete(parse_response(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nContent-Length: 5\r\n\r\n",
            asked,
        ));
        assert!(!text(&with_length.wire).contains("Content-Length"));
    }

    #[test]
    fn unusual_requests_are_left_to_hyper() {
        let shared = shared();
        for raw in [
            "GET / HTTP/1.0\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            // An Upgrade no Connection field names, one with a body, and h2c's.
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nbad header line\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_request(raw.as_bytes(), &shared, b"x"),
                    Parsed::Handover
                ),
                "{raw:?}"
            );
        }
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost:", &shared, b"x"),
            Parsed::Partial
        ));
    }

    #[test]
    fn response_heads_lose_hop_by_hop_fields_and_keep_their_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
              Keep-Alive: timeout=5\r\nContent-Length: 5\r\nX-Kept: y\r\n\r\nhello";
        let head = complete(parse_response(raw, asked(false, false)));
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.reusable);
        assert_eq!(head.len, raw.len() - 5, "the body is not part of the head");
        assert_eq!(
            text(&head.wire),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kept: y\r\n\r\n"
        );
    }

    #[test]
    fn chunked_wins_over_length_and_unknown_codings_end_with_the_connection() {
        let head = complete(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            asked(false, false),
        ));
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(
            text(&head.wire),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let head = complete(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            asked(false, false),
        ));
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.reusable);
        assert_eq!(
            text(&head.wire),
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn bodiless_answers_and_backends_that_close() {
        let head = complete(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            asked(true, false),
        ));
        assert_eq!(
            head.framing,
            Framing::Length(0),
            "a HEAD's answer has no body"
        );
        let head = complete(parse_response(
            b"HTTP/1.1 304 Not Modified\r\n\r\n",
            asked(false, false),
        ));
        assert_eq!(head.framing, Framing::Length(0));
        let head = complete(parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            asked(false, true),
        ));
        assert!(!head.reusable);
        assert_eq!(
            text(&head.wire),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nconnection: close\r\n\r\n"
        );
        let head = complete(parse_response(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            asked(false, false),
        ));
        assert!(!head.reusable, "HTTP/1.0 closes unless asked otherwise");
    }

    #[test]
    fn interim_partial_and_invalid_responses() {
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200",
                asked(false, false)
            ),
            ResponseParse::Interim(25)
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", asked(false, false)),
            ResponseParse::Partial
        ));
        for bad in [
            &b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_response(bad, asked(false, false)),
                    ResponseParse::Invalid
                ),
                "{}",
                text(bad)
            );
        }
    }

    /// A request head with some bytes changed, inserted or cut.
    fn mutated(base: &'static [u8]) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..12).prop_map(
            move |edits| {
                let mut bytes = base.to_vec();
                for (at, byte, op) in edits {
                    let at = at % (bytes.len() + 1);
                    match op {
                        0 if at < bytes.len() => bytes[at] = byte,
                        1 => bytes.insert(at, byte),
                        _ if at < bytes.len() => drop(bytes.remove(at)),
                        _ => {}
                    }
                }
                bytes
            },
        )
    }

    proptest::proptest! {
        /// The fast path's heads from clients and backends: parsed, handed over or refused,
        /// never a panic; a head it rewrites ends its fields and carries no bare line feed
        /// that a backend could read as a field of its own.
        #[test]
        fn fuzz_request_heads(bytes in mutated(b"POST /v1/x?y=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 3\r\nCookie: session=s1\r\n\r\nabc")) {
            let shared = shared();
            if let Parsed::Request(head) = parse_request(&bytes, &shared, b"127.0.0.1") {
                proptest::prop_assert!(head.wire.ends_with(b"\r\n"));
                let bare_lf = head.wire.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r');
                proptest::prop_assert!(!bare_lf, "{}", text(&head.wire));
            }
        }

        #[test]
        fn fuzz_response_heads(bytes in mutated(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n")) {
            let _ = parse_response(&bytes, asked(false, false));
            let _ = parse_response(&bytes, asked(true, true));
        }
    }
}

//! Headers on the way through: hop-by-hop stripping, the h2 cookie join, X-Forwarded-For
//! and -Proto, and the request made fit for a backend.

use hyper::Uri;
use hyper::Version;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;

/// Headers meaningful only for one connection (RFC 9110 §7.6.1), never forwarded; the
/// Proxy-* ones are addressed to (or from) a proxy, this one, not to the backend.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a request asked to switch protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upgrade {
    /// None asked, or `h2c` (which a server may ignore: the exchange goes on in HTTP/1.1).
    None,
    /// Another protocol (WebSocket, ...): cannot be carried to a backend.
    Refused,
}

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) -> Upgrade {
    // Most messages carry none: one pass of cheap name comparisons instead of a hashed
    // lookup per hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return Upgrade::None;
    }
    let upgrade = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|protocol| !protocol.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    // Headers any Connection field names are hop-by-hop too (a message may carry several
    // Connection fields). One field at a time, cloned (a reference count, no copy), as
    // removing the names needs the map.
    let mut field = 0;
    while let Some(connection) = headers
        .get_all(header::CONNECTION)
        .iter()
        .nth(field)
        .cloned()
    {
        field += 1;
        for name in connection.as_bytes().split(|&b| b == b',') {
            if let Ok(name) = HeaderName::from_bytes(name.trim_ascii()) {
                headers.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        Upgrade::Refused
    } else {
        Upgrade::None
    }
}

/// HTTP/2 may split the cookies into several fields; HTTP/1.1 wants one, joined by "; "
/// (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Make the client's request one for a backend: HTTP/1.1, origin-form target, no
/// hop-by-hop headers, one Cookie field, X-Forwarded-For/Proto, a Host.
pub(super) fn prepare(parts: &mut Parts, forwarded_for: &HeaderValue) -> Upgrade {
    let upgrade = strip_hop_by_hop(&mut parts.headers);
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    // A target with an authority (absolute-form, or h2's :authority) names the host: the
    // Host field is replaced by it (RFC 9112 §3.2.2), not kept beside it.
    if let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let origin = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        if let Ok(uri) = origin.parse::<Uri>() {
            parts.uri = uri;
        }
    }
    parts.version = Version::HTTP_11;
    // One hashed lookup for both cases.
    match parts.headers.entry(&FORWARDED_FOR) {
        header::Entry::Vacant(vacant) => {
            vacant.insert(forwarded_for.clone());
        }
        header::Entry::Occupied(mut earlier) => {
            // Every earlier field, in order (a list may come split over several), then us.
            let mut joined = Vec::new();
            for value in earlier.iter() {
                joined.extend_from_slice(value.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(forwarded_for.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                earlier.insert(value);
            }
        }
    }
    parts
        .headers
        .insert(FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    upgrade
}

#[cfg(test)]
mod tests {
    use hyper::Request;

    use super::*;
    use crate::proxy::test_support::headers;

    #[test]
    fn hop_by_hop_headers_go_including_those_any_connection_field_names() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-one"),
            ("connection", "X-Two"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut map), Upgrade::None);
        let left: Vec<_> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn upgrades_other_than_h2c_are_refused() {
        let mut ws = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut ws), Upgrade::Refused);
        assert!(ws.is_empty());
        let mut h2c = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h2c), Upgrade::None);
        assert!(h2c.is_empty(), "{h2c:?}");
        let mut plain = headers(&[("x-a", "1")]);
        assert_eq!(strip_hop_by_hop(&mut plain), Upgrade::None);
        assert_eq!(plain.len(), 1);
    }

    fn parts_of(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn prepare_makes_an_origin_form_http11_request_with_forwarded_headers() {
        let client = HeaderValue::from_static("10.0.0.9");
        let mut parts = parts_of(
            Request::get("http://agent.example:8080/v1/chat?x=1")
                .header("x-forwarded-for", "192.0.2.1")
                .header("x-forwarded-for", "192.0.2.2")
                .body(())
                .expect("request"),
        );
        assert_eq!(prepare(&mut parts, &client), Upgrade::None);
        assert_eq!(parts.uri, "/v1/chat?x=1");
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers["host"], "agent.example:8080");
        let forwarded: Vec<_> = parts.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded, ["192.0.2.1, 192.0.2.2, 10.0.0.9"]);
        assert_eq!(parts.headers["x-forwarded-proto"], "http");

        let mut parts = parts_of(Request::get("/").body(()).expect("request"));
        prepare(&mut parts, &client);
        assert_eq!(parts.headers["x-forwarded-for"], "10.0.0.9");
        assert!(!parts.headers.contains_key("host"), "filled in per backend");
    }

    #[test]
    fn h2_cookie_fields_are_joined_for_http11() {
        let client = HeaderValue::from_static("10.0.0.9");
        let mut parts = parts_of(
            Request::get("http://a/")
                .version(Version::HTTP_2)
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("cookie", "session=s3")
                .body(())
                .expect("request"),
        );
        prepare(&mut parts, &client);
        let cookies: Vec<_> = parts.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2; session=s3"]);
        // One field stays as it is.
        let mut parts = parts_of(
            Request::get("http://a/")
                .version(Version::HTTP_2)
                .header("cookie", "a=1")
                .body(())
                .expect("request"),
        );
        prepare(&mut parts, &client);
        assert_eq!(parts.headers["cookie"], "a=1");
    }
}

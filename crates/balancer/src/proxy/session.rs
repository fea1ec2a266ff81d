//! The sticky-session key of a request, for consistent-hash pools.

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName};

use super::Settings;

/// The sticky key of a request for consistent hashing: the session header's value, else
/// the session cookie's.
pub(super) struct Session(Bytes);

impl Session {
    pub(super) fn of(settings: &Settings, headers: &HeaderMap) -> Option<Session> {
        Session::from_fields(
            settings,
            |name| headers.get(name).map(|value| value.as_bytes()),
            headers
                .get_all(header::COOKIE)
                .iter()
                .map(|value| value.as_bytes()),
        )
    }

    /// From a request head given as a lookup of a header's first value and the values of
    /// its Cookie fields (the HTTP/1.1 fast path has no `HeaderMap`).
    pub(super) fn from_fields<'a>(
        settings: &Settings,
        header: impl Fn(&HeaderName) -> Option<&'a [u8]>,
        mut cookies: impl Iterator<Item = &'a [u8]>,
    ) -> Option<Session> {
        if let Some(name) = &settings.session_header
            && let Some(value) = header(name)
        {
            return Some(Session(Bytes::copy_from_slice(value)));
        }
        if settings.session_cookie.is_empty() {
            return None;
        }
        cookies.find_map(|value| {
            value.split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (pair[..eq].trim_ascii() == settings.session_cookie.as_slice())
                    .then(|| Session(Bytes::copy_from_slice(pair[eq + 1..].trim_ascii())))
            })
        })
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::header::{HeaderName, HeaderValue};

    use super::*;
    use crate::proxy::test_support::headers;

    fn settings(session_header: Option<&'static str>, cookie: &str) -> Settings {
        Settings {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            queue_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_queue: 1,
            session_header: session_header.map(HeaderName::from_static),
            session_cookie: cookie.as_bytes().to_vec(),
            retry_after: HeaderValue::from_static("1"),
        }
    }

    fn session(settings: &Settings, map: &HeaderMap) -> Option<Vec<u8>> {
        Session::of(settings, map).map(|s| s.bytes().to_vec())
    }

    #[test]
    fn session_key_from_header_then_cookie() {
        let both = settings(Some("x-session-id"), "session");
        let map = headers(&[("x-session-id", "h1"), ("cookie", "session=c1")]);
        assert_eq!(session(&both, &map), Some(b"h1".to_vec()), "header first");
        for (cookie, expected) in [
            ("session=c1", Some(&b"c1"[..])),
            ("a=1; session = c2 ;b=2", Some(b"c2")),
            ("a=1;session=", Some(b"")),
            ("mysession=x; session2=y", None),
            ("session", None),
            ("", None),
        ] {
            let map = headers(&[("cookie", cookie)]);
            let map = if cookie.is_empty() {
                HeaderMap::new()
            } else {
                map
            };
            assert_eq!(session(&both, &map).as_deref(), expected, "{cookie:?}");
        }
        // Several Cookie fields (HTTP/2): any of them.
        let map = headers(&[("cookie", "a=1"), ("cookie", "session=c3")]);
        assert_eq!(session(&both, &map), Some(b"c3".to_vec()));
        // Neither configured: no session.
        let none = settings(None, "");
        assert_eq!(session(&none, &headers(&[("cookie", "session=c1")])), None);
    }
}

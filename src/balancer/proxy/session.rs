//! The sticky-session key of a request, for consistent-hash pools.

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};

use super::Settings;

/// The sticky key of a request for consistent hashing: the session header, else the cookie.
pub(super) enum Session {
    Header(HeaderValue),
    Cookie(Bytes),
}

impl Session {
    pub(super) fn of(settings: &Settings, headers: &HeaderMap) -> Option<Session> {
        if let Some(name) = &settings.session_header
            && let Some(value) = headers.get(name)
        {
            return Some(Session::Header(value.clone()));
        }
        if settings.session_cookie.is_empty() {
            return None;
        }
        headers.get_all(header::COOKIE).iter().find_map(|value| {
            value.as_bytes().split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (pair[..eq].trim_ascii() == settings.session_cookie.as_slice())
                    .then(|| Session::Cookie(Bytes::copy_from_slice(pair[eq + 1..].trim_ascii())))
            })
        })
    }

    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Session::Header(value) => value.as_bytes(),
            Session::Cookie(bytes) => bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::header::HeaderName;

    use super::*;
    use crate::balancer::proxy::test_support::headers;

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

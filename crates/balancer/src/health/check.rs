//! Active health checks: one HTTP GET per check, and rise/fall counting of the results.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{BackendHealth, CHECK_DOWN, CHECK_UP, HealthConfig, lock};

impl BackendHealth {
    /// An active check's result (rise/fall counting).
    pub fn on_check(&self, ok: bool) {
        let mut streak = lock(&self.check_streak);
        let (good, bad) = &mut *streak;
        if ok {
            *good = good.saturating_add(1);
            *bad = 0;
            if *good >= self.rise {
                self.checked.store(CHECK_UP, Ordering::Relaxed);
            }
        } else {
            *bad = bad.saturating_add(1);
            *good = 0;
            if *bad >= self.fall {
                self.checked.store(CHECK_DOWN, Ordering::Relaxed);
            }
        }
    }
}

/// One active check: GET `path` with Host header, `timeout`; ok = 2xx/3xx answer.
///
/// A fresh HTTP/1.1 connection each time (`Connection: close`), so the check also proves the
/// backend still accepts connections; the body is not read. The timeout covers connect,
/// request and response headers.
pub async fn check_once(addr: SocketAddr, host: &str, config: &HealthConfig) -> bool {
    match tokio::time::timeout(config.timeout, fetch_status(addr, host, &config.path)).await {
        Ok(Ok(status)) => status.is_success() || status.is_redirection(),
        Ok(Err(error)) => {
            tracing::debug!(%addr, path = %config.path, "health check failed: {error}");
            false
        }
        Err(_) => {
            tracing::debug!(%addr, path = %config.path, timeout = ?config.timeout,
                "health check timed out");
            false
        }
    }
}

async fn fetch_status(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<hyper::StatusCode, String> {
    let request = Request::get(path)
        .header(
            HOST,
            if host.is_empty() {
                addr.to_string()
            } else {
                host.to_string()
            },
        )
        .header(USER_AGENT, "sutazai-top-health-check")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid health check request (path {path:?}, host {host:?}): {e}"))?;
    let stream = TcpStream::connect(addr).await.map_err(failed("connect"))?;
    // Best effort: a check is one small request, Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed("HTTP/1.1 handshake"))?;
    let mut connection = std::pin::pin!(connection);
    // The connection task must run for the sender to become ready and for the answer to
    // arrive: drive both here rather than spawning a task that could outlive the check.
    let exchange = async {
        sender
            .ready()
            .await
            .map_err(failed("connection not ready"))?;
        sender
            .send_request(request)
            .await
            .map_err(failed("request"))
    };
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        biased;
        response = &mut exchange => Ok(response?.status()),
        ended = &mut connection => {
            ended.map_err(failed("connection"))?;
            // With `Connection: close` the connection may finish in the same wake-up as the
            // answer: the answer is then already waiting (or the exchange fails at once).
            Ok(exchange.await?.status())
        }
    }
}

/// The error of one step of a check, as the log shows it ("connect: connection refused").
fn failed<E: std::fmt::Display>(step: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{step}: {e}")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::Health;
    use crate::health::test_support::*;
    use crate::health::{BreakerConfig, OutlierConfig};

    #[test]
    fn rise_and_fall_counting() {
        let h = backend();
        let t0 = Instant::now();
        assert_eq!(h.health(t0), Health::Unknown);
        assert!(h.selectable(t0), "unknown takes traffic");
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Unknown);
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Up);
        h.on_check(false);
        h.on_check(false);
        assert_eq!(h.health(t0), Health::Up, "fall is 3");
        h.on_check(true); // breaks the failing streak
        h.on_check(false);
        h.on_check(false);
        assert_eq!(h.health(t0), Health::Up);
        h.on_check(false);
        assert_eq!(h.health(t0), Health::Down);
        assert!(!h.selectable(t0));
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Down, "rise is 2");
        assert!(!h.selectable(t0));
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Up);
        assert!(h.selectable(t0));
    }

    #[test]
    fn zero_rise_and_fall_count_as_one() {
        let h = BackendHealth::new(OutlierConfig::default(), BreakerConfig::default(), 0, 0);
        let t0 = Instant::now();
        h.on_check(false);
        assert_eq!(h.health(t0), Health::Down);
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Up);
    }

    // ---- check_once against real sockets ----

    use http_body_util::Empty;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use std::convert::Infallible;
    use tokio::net::TcpListener;

    /// A tiny backend: 200 on /health, 302 on /moved, 503 otherwise; records Host headers.
    async fn spawn_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&hosts);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let host = request
                            .headers()
                            .get(HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        lock(&seen).push(host);
                        let status = match request.uri().path() {
                            "/health" => StatusCode::OK,
                            "/moved" => StatusCode::FOUND,
                            _ => StatusCode::SERVICE_UNAVAILABLE,
                        };
                        async move {
                            let mut response = Response::new(Empty::<Bytes>::new());
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, hosts)
    }

    fn config(path: &str, timeout: Duration) -> HealthConfig {
        HealthConfig {
            path: path.to_string(),
            timeout,
            ..HealthConfig::default()
        }
    }

    #[tokio::test]
    async fn check_once_against_a_real_backend() {
        let (addr, hosts) = spawn_backend().await;
        assert!(check_once(addr, "agent.local", &config("/health", SEC)).await);
        assert!(
            check_once(addr, "agent.local", &config("/moved", SEC)).await,
            "3xx is ok"
        );
        assert!(
            !check_once(addr, "agent.local", &config("/other", SEC)).await,
            "503"
        );
        assert!(check_once(addr, "", &config("/health", SEC)).await);
        let hosts = lock(&hosts).clone();
        assert_eq!(hosts[..3], ["agent.local"; 3]);
        assert_eq!(hosts[3], addr.to_string(), "empty host: the address");
    }

    #[tokio::test]
    async fn check_once_rejects_a_bad_path_without_panicking() {
        let (addr, _) = spawn_backend().await;
        assert!(!check_once(addr, "agent.local", &config("health check", SEC)).await);
        assert!(!check_once(addr, "bad\nhost", &config("/health", SEC)).await);
    }

    #[tokio::test]
    async fn check_once_fails_fast_on_a_closed_port() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("local addr")
        }; // dropped: nothing listens there any more
        let started = Instant::now();
        assert!(!check_once(addr, "x", &config("/health", 5 * SEC)).await);
        assert!(started.elapsed() < SEC, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn check_once_times_out_on_a_silent_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream); // accept, never read nor answer
            }
        });
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        assert!(!check_once(addr, "x", &config("/health", timeout)).await);
        let elapsed = started.elapsed();
        assert!(elapsed >= timeout && elapsed < 3 * SEC, "{elapsed:?}");
        holder.abort();
    }
}

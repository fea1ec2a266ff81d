//! Listeners and connections: the Unix socket (root-only), opt-in TCP with a bearer token,
//! size limits and timeouts. Every error is a JSON `{"error": "..."}`.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

use super::config::ApiConfig;
use super::head::{self, Head, Replayed};
use super::routes::{self, Matched, Reply, State};
use super::{ApiError, MAX_BODY, StopChannel};
use crate::engine::EngineHandle;
use std::os::unix::fs::MetadataExt;
use sutazai_owned_paths::Access;

/// Largest request head (hyper's read buffer: its minimum).
pub const MAX_HEAD: usize = 8 * 1024;
/// A request head must arrive within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection lives at most this long (an approval waits up to 30 s, a rollback 60 s).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// The running API; `shutdown` stops listening and removes the socket.
pub struct ApiServer {
    pub socket: PathBuf,
    pub tcp: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl ApiServer {
    /// Listen on the configured socket (and TCP address, if any) and serve `handle`.
    pub async fn start(
        handle: EngineHandle,
        config: &ApiConfig,
        stop: Option<StopChannel>,
    ) -> Result<ApiServer, ApiError> {
        let state = Arc::new(State {
            handle,
            started: Instant::now(),
            stop,
            rendered: Default::default(),
        });
        let unix = bind_unix(&config.socket).await?;
        let mut tasks = vec![tokio::spawn(accept_unix(unix, state.clone()))];
        let mut tcp = None;
        if let Some(addr) = config.listen {
            let bind_error = |e| ApiError::io(Path::new(&addr.to_string()), "bind", e);
            let token = Arc::new(read_or_create_token(&config.token_file)?);
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            tracing::info!(target: "sutazai_top::api", addr = %local, "API on TCP (bearer token required)");
            if !local.ip().is_loopback() {
                tracing::warn!(target: "sutazai_top::api", addr = %local,
                    "the API listens beyond loopback: the token is its only guard (no TLS)");
            }
            tcp = Some(local);
            tasks.push(tokio::spawn(accept_tcp(listener, state.clone(), token)));
        }
        tracing::info!(target: "sutazai_top::api", socket = %config.socket.display(), "API on the Unix socket");
        Ok(ApiServer {
            socket: config.socket.clone(),
            tcp,
            tasks,
        })
    }

    pub fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Bind the socket: its directory is made 0700 when missing; a stale socket (nothing
/// answers) is replaced, a live one is never taken over.
async fn bind_unix(path: &Path) -> Result<UnixListener, ApiError> {
    // The socket's directory follows the rule of every owned path (created 0700).
    sutazai_owned_paths::OwnedDir::of(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(ApiError::SocketInUse(path.display().to_string()));
            }
            tracing::info!(target: "sutazai_top::api", socket = %path.display(), "replacing a stale socket");
            std::fs::remove_file(path).map_err(|e| ApiError::io(path, "remove stale socket", e))?;
        }
        Ok(_) => return Err(ApiError::NotASocket(path.display().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::io(path, "inspect", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| ApiError::io(path, "bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ApiError::io(path, "chmod 0600", e))?;
    Ok(listener)
}

/// The token from `path`; a missing file is created 0600 with 32 random bytes in hex. The
/// file and its directory follow the rule of every owned path: a token others could read or
/// replace (a symlink, mode 0644, another owner) is refused, never used.
pub fn read_or_create_token(path: &Path) -> Result<String, ApiError> {
    let (mut file, created) =
        sutazai_owned_paths::open_owned(path, Access::ReadWrite { create_mode: 0o600 })?;
    if created {
        return write_token(&mut file, path);
    }
    let meta = file
        .metadata()
        .map_err(|e| ApiError::io(path, "inspect token", e))?;
    if meta.mode() & 0o077 != 0 {
        return Err(ApiError::TokenReadable {
            path: path.display().to_string(),
            mode: meta.mode() & 0o777,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| ApiError::io(path, "read token", e))?;
    let token = text.trim().to_string();
    if token.len() < 16 || token.chars().any(|c| c.is_whitespace()) {
        return Err(ApiError::BadToken(path.display().to_string()));
    }
    Ok(token)
}

fn write_token(file: &mut std::fs::File, path: &Path) -> Result<String, ApiError> {
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| ApiError::io(Path::new("/dev/urandom"), "read", e))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    writeln!(file, "{token}").map_err(|e| ApiError::io(path, "write token", e))?;
    tracing::info!(target: "sutazai_top::api", path = %path.display(), "created the API token");
    Ok(token)
}

async fn accept_unix(listener: UnixListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, state.clone(), None));
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

async fn accept_tcp(listener: TcpListener, state: Arc<State>, token: Arc<String>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, state.clone(), Some(token.clone())));
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

/// Out of descriptors and the like: wait a little rather than spin.
async fn accept_failed(err: std::io::Error) {
    tracing::warn!(target: "sutazai_top::api", %err, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One request per connection: its head read and checked here (a refused one answered with
/// a JSON error), then hyper serves it.
async fn serve_connection<S>(mut stream: S, state: Arc<State>, token: Option<Arc<String>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let read = match tokio::time::timeout(HEAD_TIMEOUT, head::read(&mut stream, MAX_HEAD)).await {
        Ok(Head::Read(read)) => read,
        Ok(Head::Closed) => return,
        Ok(Head::Refused(status, why)) => return head::refuse(&mut stream, status, &why).await,
        Err(_) => {
            let why = format!("no whole request head within {} s", HEAD_TIMEOUT.as_secs());
            return head::refuse(&mut stream, StatusCode::REQUEST_TIMEOUT, &why).await;
        }
    };
    let service = service_fn(move |req| {
        let (state, token) = (state.clone(), token.clone());
        async move { Ok::<_, std::convert::Infallible>(respond(&state, token.as_deref(), req).await) }
    });
    let connection = http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_HEAD)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(Replayed::new(read, stream)), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(target: "sutazai_top::api", %err, "connection ended"),
        Err(_) => tracing::debug!(target: "sutazai_top::api", "connection timed out"),
    }
}

/// One request: authentication (TCP), routing, the body within its limit, the handler.
async fn respond(
    state: &State,
    token: Option<&String>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(token) = token
        && !authorized(&req, token)
    {
        let mut response = to_response(Reply::error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (see [api] token_file)",
        ));
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let path = req.uri().path().to_string();
    let (action, params) = match routes::find(req.method().as_str(), &path) {
        Matched::Found { action, params } => (action, params),
        Matched::NotFound => {
            return to_response(Reply::error(
                StatusCode::NOT_FOUND,
                &format!("no such path: {path}"),
            ));
        }
        Matched::WrongMethod(allowed) => {
            let allowed = allowed.join(", ");
            let mut response = to_response(Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{} is not allowed on {path}; use {allowed}", req.method()),
            ));
            if let Ok(value) = HeaderValue::from_str(&allowed) {
                response.headers_mut().insert(ALLOW, value);
            }
            return response;
        }
    };
    if super::cache::is_cache_data(action) {
        // Binary bodies with their own limit, request and response headers.
        return super::cache::respond(state, action, &params, req).await;
    }
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(reply) => return to_response(reply),
    };
    to_response(routes::dispatch(state, action, &params, &body).await)
}

/// Constant-time comparison, so the answer's timing says nothing about the token.
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(header) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    token_matches(header, token)
}

/// Whether an Authorization value carries `token` with the Bearer scheme, whose name is
/// case-insensitive (RFC 9110, 11.1), in constant time over the token.
fn token_matches(header: &str, token: &str) -> bool {
    let Some((scheme, given)) = header.trim_start().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    let too_large = || {
        Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the request body: {err}"),
        )),
    }
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_exact() {
        assert!(token_matches("Bearer abc", "abc"));
        assert!(token_matches("bearer abc", "abc"));
        assert!(token_matches("BEARER  abc ", "abc"));
        assert!(!token_matches("Basic abc", "abc"));
        assert!(!token_matches("Bearer abd", "abc"));
        assert!(!token_matches("Bearerabc", "abc"));
        assert!(!token_matches("bearer", "abc"));
    }
}

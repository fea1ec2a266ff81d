//! A small HTTP/1.1 client for the API: over the Unix socket, or TCP with the bearer token.
//! One connection per request (the API is local and requests are few).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the API listens.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, token: Option<String> },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "http://{addr}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("nothing answers at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{endpoint}: {message}")]
    Http { endpoint: String, message: String },
    #[error("{endpoint}: no answer within {secs}s")]
    Timeout { endpoint: String, secs: u64 },
    /// The API answered with an error (its JSON `error` text).
    #[error("{message} (HTTP {status})")]
    Status { status: u16, message: String },
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// What this side did with an answer failed (writing a report).
    #[error("{0}")]
    Local(String),
}

/// An answer: status and body.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl ApiResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as `T` when the status is 2xx, else the API's error message.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        if !(200..300).contains(&self.status) {
            return Err(ClientError::Status {
                status: self.status,
                message: self.error_message(),
            });
        }
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// The `error` field of a JSON error, else the body as text.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| self.text())
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    /// The longest a request may take (approvals wait up to 30 s, rollbacks 60 s).
    pub timeout: Duration,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            timeout: Duration::from_secs(90),
        }
    }

    pub fn unix(path: impl Into<PathBuf>) -> Client {
        Client::new(Endpoint::Unix(path.into()))
    }

    pub fn tcp(addr: impl Into<String>, token: Option<String>) -> Client {
        Client::new(Endpoint::Tcp {
            addr: addr.into(),
            token,
        })
    }

    pub async fn get(&self, path: &str) -> Result<ApiResponse, ClientError> {
        self.send("GET", path, &[], Vec::new()).await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<ApiResponse, ClientError> {
        self.send_json("POST", path, body).await
    }

    pub async fn delete(&self, path: &str) -> Result<ApiResponse, ClientError> {
        self.send("DELETE", path, &[], Vec::new()).await
    }

    pub async fn put(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<ApiResponse, ClientError> {
        self.send_json("PUT", path, body).await
    }

    async fn send_json(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<ApiResponse, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send(method, path, &[("content-type", "application/json")], bytes)
            .await
    }

    /// Any request: method, path, extra headers, raw body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<ApiResponse, ClientError> {
        let endpoint = self.endpoint.to_string();
        let request = self.request(method, path, headers, body)?;
        let exchange = async {
            match &self.endpoint {
                Endpoint::Unix(socket) => {
                    let stream =
                        tokio::net::UnixStream::connect(socket)
                            .await
                            .map_err(|source| ClientError::Connect {
                                endpoint: endpoint.clone(),
                                source,
                            })?;
                    exchange(stream, request, &endpoint).await
                }
                Endpoint::Tcp { addr, .. } => {
                    let stream = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|source| ClientError::Connect {
                            endpoint: endpoint.clone(),
                            source,
                        })?;
                    exchange(stream, request, &endpoint).await
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                endpoint: endpoint.clone(),
                secs: self.timeout.as_secs(),
            })?
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost",
            Endpoint::Tcp { addr, .. } => addr.as_str(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host);
        if let Endpoint::Tcp {
            token: Some(token), ..
        } = &self.endpoint
        {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Http {
                endpoint: self.endpoint.to_string(),
                message: format!("bad request: {e}"),
            })
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
    endpoint: &str,
) -> Result<ApiResponse, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| ClientError::Http {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    driver.abort();
    Ok(ApiResponse {
        status,
        content_type,
        body,
    })
}

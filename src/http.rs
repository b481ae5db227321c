//! The one HTTP client: hyper over rustls (ring, webpki roots), HTTP/1.1, bounded everywhere.
//!
//! Shared by the OpenAI-compatible agent and the Telegram channel. Every request has a deadline and
//! every body a size limit, because hyper itself enforces neither. [`tls_config`] is also what the
//! one WebSocket connect ([`crate::ws`]) uses, so the whole binary trusts one root set.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Idle keep-alive connections are closed after this: the Telegram long poll reuses its connection
/// well within it, and an idle box holds no sockets.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// At most this many idle connections per host: one poller plus one sender is the steady state.
const POOL_MAX_IDLE_PER_HOST: usize = 2;
/// TCP connect (not TLS) deadline; the request's own deadline covers the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum HttpError {
    /// Could not connect or TLS failed: nothing was sent; retry later.
    Connect(String),
    /// The connection broke after the request may have been sent: retry a read, but a write
    /// (a message sent) may have taken effect.
    Transport(String),
    /// The deadline passed.
    Timeout,
    /// The body was larger than allowed; the connection is dropped.
    TooLarge(usize),
    /// The request could not be built (bad URL): a configuration problem.
    Request(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "could not connect: {e}"),
            HttpError::Transport(e) => write!(f, "connection failed: {e}"),
            HttpError::Timeout => f.write_str("timed out"),
            HttpError::TooLarge(n) => write!(f, "response body over the {n}-byte limit"),
            HttpError::Request(e) => write!(f, "bad request: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The rustls client config for every TLS connection clawbox makes: ring, webpki roots, TLS 1.2+.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // ring supports the safe defaults; this cannot fail for the built-in provider.
        .unwrap_or_else(|_| rustls::ClientConfig::builder());
    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls_config()).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(https);
        HttpClient { inner }
    }

    /// Sends `req` and reads the whole body, at most `max_body` bytes, all within `timeout`.
    pub async fn request(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response<Bytes>, HttpError> {
        let fut = async {
            let resp = self.inner.request(req).await.map_err(|e| classify(&e))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, max_body).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    HttpError::TooLarge(max_body)
                } else {
                    HttpError::Transport(e.to_string())
                }
            })?;
            Ok(Response::from_parts(parts, body.to_bytes()))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| HttpError::Timeout)?
    }

    /// Sends `req` and returns once the response head arrived (within `timeout`), leaving the body
    /// to be streamed by the caller, which must bound what it reads (see [`crate::agent::sse`]).
    pub async fn stream(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, HttpError> {
        tokio::time::timeout(timeout, self.inner.request(req))
            .await
            .map_err(|_| HttpError::Timeout)?
            .map_err(|e| classify(&e))
    }
}

/// A failure to connect (nothing was sent) apart from a connection that broke afterwards.
fn classify(e: &hyper_util::client::legacy::Error) -> HttpError {
    if e.is_connect() {
        HttpError::Connect(error_chain(e))
    } else {
        HttpError::Transport(error_chain(e))
    }
}

/// hyper's errors hide the cause (DNS, refused, TLS) in their source chain; show all of it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

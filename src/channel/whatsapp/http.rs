//! The WhatsApp client's HTTP needs (the web-version fetch, media transfers) on clawbox's one
//! [`crate::http::HttpClient`]: rustls with webpki roots, a deadline on every request, a cap on
//! every body. Reports every completed exchange as `Ok` whatever its status (the library reads
//! 401/403/404/410 itself); `Err` only when the exchange never completed. Never logs URLs (media
//! URLs carry auth tokens) or bodies.

use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;
use whatsapp_rust::wacore::net::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::{anyhow, async_trait};

/// Whole request deadline. Media is not downloaded by clawbox (it reports `<media:KIND>`), so
/// requests are the version page and small transfers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read: the version page is ~100 KB; media thumbnails are small.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The adapter; cheap to clone (shares the pool).
#[derive(Clone)]
pub struct WaHttp {
    inner: crate::http::HttpClient,
}

impl WaHttp {
    pub fn new(inner: crate::http::HttpClient) -> WaHttp {
        WaHttp { inner }
    }
}

fn build(req: HttpRequest) -> Result<http::Request<Full<Bytes>>, anyhow::Error> {
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| anyhow::anyhow!("unsupported HTTP method {:?}", req.method))?;
    let mut b = http::Request::builder()
        .method(method)
        .uri(req.url.as_str());
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(req.body.unwrap_or_default()))
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP request: {e}"))
}

#[async_trait]
impl HttpClient for WaHttp {
    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, anyhow::Error> {
        let req = build(request)?;
        let resp = self
            .inner
            .request(req, REQUEST_TIMEOUT, MAX_BODY)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(HttpResponse {
            status_code: resp.status().as_u16(),
            body: resp.into_body().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::service::service_fn;

    /// A real HTTP/1.1 server on loopback: answers 404 with a body, echoes POST bodies.
    async fn server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                        let status = if req.uri().path() == "/gone" {
                            404
                        } else {
                            200
                        };
                        let agent = req
                            .headers()
                            .get("x-probe")
                            .map(|v| v.as_bytes().to_vec())
                            .unwrap_or_default();
                        let mut body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                        body.extend_from_slice(&agent);
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    });
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn statuses_are_results_not_errors() {
        let addr = server().await;
        let c = WaHttp::new(crate::http::HttpClient::new());
        let r = c
            .execute(HttpRequest::get(format!("http://{addr}/gone")))
            .await
            .unwrap();
        assert_eq!(r.status_code, 404);
        let r = c
            .execute(
                HttpRequest::post(format!("http://{addr}/up"))
                    .with_header("x-probe", "!")
                    .with_body(Bytes::from_static(b"abc")),
            )
            .await
            .unwrap();
        assert_eq!((r.status_code, r.body.as_slice()), (200, &b"abc!"[..]));
        assert!(
            c.execute(HttpRequest::get("http://127.0.0.1:1/"))
                .await
                .is_err()
        );
    }
}

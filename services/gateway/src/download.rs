//! Attachment downloads on the client port: `GET /attachments/<key>` answers with a redirect to a
//! short-lived presigned GET from the attachments service, so the bucket stays private while the
//! downloadURL clients were given keeps working for as long as the object exists.
//!
//! The listener peeks at the request line of each new connection ([`route`]); download requests
//! are served here by a one-request HTTP/1 exchange, everything else goes on to the WebSocket
//! handshake untouched.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tassis_proto::attachments_v1::DownloadUrlRequest;
use tokio::net::TcpStream;
use tonic::Code;

use crate::listener::Ctx;

/// Where a new connection goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// An attachment download.
    Download,
    /// Anything else: the WebSocket handshake (which refuses what is not an upgrade).
    WebSocket,
    /// The client closed or sent nothing in time.
    Closed,
}

/// Request lines served here.
const DOWNLOAD_PREFIX: &[u8] = b"GET /attachments/";

/// Decides from the first bytes of a connection: Some(true) for a download, Some(false) for
/// anything else, None while `prefix` could still be either.
pub fn classify(prefix: &[u8]) -> Option<bool> {
    let n = prefix.len().min(DOWNLOAD_PREFIX.len());
    if prefix[..n] != DOWNLOAD_PREFIX[..n] {
        Some(false)
    } else if n == DOWNLOAD_PREFIX.len() {
        Some(true)
    } else {
        None
    }
}

/// Peeks (without consuming) at the start of the request to route it, within `deadline`.
pub async fn route(stream: &TcpStream, deadline: Duration) -> Route {
    let decide = async {
        let mut buf = [0u8; DOWNLOAD_PREFIX.len()];
        let mut seen = 0;
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return Route::Closed,
                Ok(n) => n,
            };
            match classify(&buf[..n]) {
                Some(true) => return Route::Download,
                Some(false) => return Route::WebSocket,
                None => {
                    // A request line split across segments: peek returns at once while the
                    // bytes it has are unread, so wait a little for the rest.
                    if n == seen {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    seen = n;
                }
            }
        }
    };
    tokio::time::timeout(deadline, decide).await.unwrap_or(Route::Closed)
}

/// Serves one download request on `stream`, then closes it.
pub async fn serve(ctx: Arc<Ctx>, stream: TcpStream, has_slot: bool) {
    let cfg = ctx.config.clone();
    let handler = ctx.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ctx = handler.clone();
        async move { Ok::<_, Infallible>(respond(&ctx, &req, has_slot).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.handshake_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let budget = cfg.handshake_timeout + cfg.upstream_timeout + cfg.write_timeout;
    match tokio::time::timeout(budget, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "download connection failed"),
        Err(_) => tracing::debug!("download connection timed out"),
    }
}

/// The answer to one request: 302 to the presigned GET, 404 for an unknown key, 503 while
/// attachments are unavailable.
async fn respond(ctx: &Ctx, req: &Request<Incoming>, has_slot: bool) -> Response<Full<Bytes>> {
    let (outcome, resp) = answer(ctx, req, has_slot).await;
    ctx.metrics.operations.with_label_values(&["download", outcome]).inc();
    resp
}

async fn answer(ctx: &Ctx, req: &Request<Incoming>, has_slot: bool) -> (&'static str, Response<Full<Bytes>>) {
    let key = match (req.method(), req.uri().path().strip_prefix("/attachments/")) {
        (&Method::GET, Some(key)) => key,
        _ => return ("not_found", text(StatusCode::NOT_FOUND, "not found\n")),
    };
    if !has_slot {
        return (
            "unavailable",
            text(StatusCode::SERVICE_UNAVAILABLE, "gateway is at capacity, retry later\n"),
        );
    }
    let reply = ctx
        .upstream
        .attachments
        .clone()
        .download_url(ctx.upstream.request(DownloadUrlRequest { key: key.to_string() }))
        .await;
    match reply {
        Ok(r) => match HeaderValue::from_str(&r.into_inner().url) {
            Ok(location) => {
                let mut resp = text(StatusCode::FOUND, "");
                resp.headers_mut().insert(header::LOCATION, location);
                // The target expires within minutes: never let it be cached as the answer.
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                ("ok", resp)
            }
            Err(_) => {
                tracing::error!("attachments service returned an unusable download URL");
                ("unknown_error", text(StatusCode::BAD_GATEWAY, "internal error\n"))
            }
        },
        Err(s) => match s.code() {
            Code::NotFound | Code::InvalidArgument => {
                ("not_found", text(StatusCode::NOT_FOUND, "no such attachment\n"))
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                tracing::warn!(code = ?s.code(), message = s.message(), "attachments unavailable for a download");
                let mut resp = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "attachments are unavailable, retry later\n",
                );
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                ("unavailable", resp)
            }
            _ => {
                tracing::error!(code = ?s.code(), message = s.message(), "download URL failed");
                ("unknown_error", text(StatusCode::BAD_GATEWAY, "internal error\n"))
            }
        },
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_request_lines() {
        assert_eq!(classify(b"GET /attachments/20250101/x HTTP/1.1\r\n"), Some(true));
        assert_eq!(classify(b"GET /attachments/"), Some(true));
        for partial in [&b""[..], b"G", b"GET ", b"GET /att", b"GET /attachments"] {
            assert_eq!(classify(partial), None, "{}", String::from_utf8_lossy(partial));
        }
        for other in [
            &b"GET /api HTTP/1.1\r\n"[..],
            b"GET /a/b HTTP/1.1\r\n",
            b"GET /attachment/x",
            b"POST /attachments/x",
            b"HEAD /attachments/x",
            b"get /attachments/x",
            b"\x16\x03\x01",
        ] {
            assert_eq!(classify(other), Some(false), "{}", String::from_utf8_lossy(other));
        }
    }

    #[tokio::test]
    async fn routes_by_peeking_without_consuming() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (sent, want) in [
            (&b"GET /attachments/k HTTP/1.1\r\n\r\n"[..], Route::Download),
            (b"GET /api HTTP/1.1\r\n\r\n", Route::WebSocket),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            // Split the request line to exercise the wait for more bytes.
            let (a, b) = sent.split_at(5);
            client.write_all(a).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let writer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                client.write_all(b).await.unwrap();
                client
            });
            assert_eq!(route(&server, Duration::from_secs(5)).await, want);
            let _client = writer.await.unwrap();
            let mut got = vec![0u8; sent.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, sent, "nothing consumed");
        }
        // Silent, then closed: Closed.
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(route(&server, Duration::from_millis(50)).await, Route::Closed);
        drop(client);
    }
}

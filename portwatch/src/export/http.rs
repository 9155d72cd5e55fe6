//! The HTTP side of `portwatch export`: a small hyper (HTTP/1.1) server on tokio.
//!
//! - `GET /metrics`: one scrape, in the format the `Accept` header asks for
//!   ([`Format::negotiate`]);
//! - `GET /`: a short help page;
//! - any other path: 404; another method on those two: 405 with `Allow`; request
//!   headers over [`MAX_HEADER_BYTES`]: 431 (hyper's own answer); a client that sends its
//!   headers too slowly is cut off after [`HEADER_TIMEOUT`].
//!
//! Requests never touch the kernel themselves: a scrape asks the collector for a sample
//! (see [`ScrapeFn`]), so bad or numerous requests cannot disturb collection. At most
//! [`MAX_CONNECTIONS`] connections are served at once; more are closed on accept.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::JoinSet};

use super::exposition::{encode, Format, Sample};

/// Largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Gathers one sample; an error is a message for the HTTP 500 answer.
pub type ScrapeFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Sample, String>> + Send>> + Send + Sync>;

/// Serves `listener` until `shutdown` completes; open connections are then dropped.
pub async fn serve(listener: TcpListener, scrape: ScrapeFn, shutdown: impl Future<Output = ()>) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let guard = ActiveGuard(active.clone());
                let scrape = scrape.clone();
                conns.spawn(async move {
                    let _guard = guard;
                    serve_connection(stream, peer, scrape).await;
                });
            }
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, _peer: SocketAddr, scrape: ScrapeFn) {
    let service = service_fn(move |req| handle(req, scrape.clone()));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    // A connection error (reset, timeout, malformed request already answered by hyper)
    // concerns that client only.
    let _ = conn.await;
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(text.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(req: Request<Incoming>, scrape: ScrapeFn) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let known = matches!(path, "/" | "/metrics");
    if !known {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            format!("404 not found: {path}; metrics are at /metrics\n"),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("405 method not allowed: {} {path}; use GET\n", req.method()),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    if path == "/" {
        let mut r = Response::new(Full::new(Bytes::from_static(HELP_PAGE.as_bytes())));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return Ok(r);
    }
    let format = Format::negotiate(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
    let sample = match scrape().await {
        Ok(s) => s,
        Err(e) => {
            return Ok(plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("500 scrape failed: {e}\n"),
            ))
        }
    };
    match encode(&sample, format) {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            Ok(r)
        }
        Err(_) => Ok(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 encoding the metrics failed\n",
        )),
    }
}

const HELP_PAGE: &str = r#"<!DOCTYPE html>
<html><head><title>portwatch exporter</title></head>
<body>
<h1>portwatch exporter</h1>
<p>TCP port pressure and bind/connect failures per network namespace, read from the
kernel's bind hash table with eBPF.</p>
<p><a href="/metrics">/metrics</a>: Prometheus text format, or OpenMetrics when the
<code>Accept</code> header asks for <code>application/openmetrics-text</code>.</p>
<ul>
<li><code>portwatch_ephemeral_range_ports{netns}</code>: ports of ip_local_port_range minus reserved ports</li>
<li><code>portwatch_ephemeral_ports{netns,state}</code>: free | shared | blocked</li>
<li><code>portwatch_bind_buckets{netns,fastreuse}</code>: bind buckets by fastreuse (-1, 0, +1)</li>
<li><code>portwatch_bind_errors_total{netns,errno}</code>, <code>portwatch_connect_errors_total{netns,errno}</code></li>
<li><code>portwatch_netns_name_info{netns,name,source}</code>, <code>portwatch_build_info{version,backend,kernel}</code></li>
<li><code>portwatch_errors_overflow_total</code>, <code>portwatch_events_lost_total</code>, <code>portwatch_scrape_duration_seconds</code></li>
</ul>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::export::exposition::BuildInfo;

    /// A server on an ephemeral loopback port with a fixed sample; returns its address and
    /// a sender that stops it.
    fn start(
        fail: bool,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let scrape: ScrapeFn = Arc::new(move || {
                    Box::pin(async move {
                        if fail {
                            Err("collector gone".to_string())
                        } else {
                            Ok(Sample {
                                build: BuildInfo {
                                    version: "9.9.9".into(),
                                    backend: "tracepoint".into(),
                                    kernel: "6.1.0".into(),
                                },
                                ..Sample::default()
                            })
                        }
                    })
                });
                serve(listener, scrape, async move {
                    let _ = stop_rx.await;
                })
                .await;
            });
        });
        (addr_rx.recv().unwrap(), stop_tx, thread)
    }

    /// Sends raw bytes, returns the whole answer (the server closes after it).
    fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        // The server may answer and close before all of an oversized request is sent.
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn get(addr: SocketAddr, method: &str, path: &str, extra: &str) -> String {
        raw(
            addr,
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n")
                .as_bytes(),
        )
    }

    #[test]
    fn routes_formats_and_errors() {
        let (addr, stop, thread) = start(false);

        let r = get(addr, "GET", "/metrics", "");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{r}"
        );
        assert!(
            r.contains(
                r#"portwatch_build_info{version="9.9.9",backend="tracepoint",kernel="6.1.0"} 1"#
            ),
            "{r}"
        );
        assert!(!r.contains("# EOF"), "{r}");

        let r = get(
            addr,
            "GET",
            "/metrics?x=1",
            "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{r}"
        );
        assert!(r.trim_end().ends_with("# EOF"), "{r}");

        let r = get(addr, "HEAD", "/metrics", "");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(!r.contains("portwatch_build_info"), "HEAD has no body: {r}");

        let r = get(addr, "GET", "/", "");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n")
                && r.contains("text/html")
                && r.contains("/metrics"),
            "{r}"
        );

        let r = get(addr, "GET", "/nope", "");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");

        let r = get(addr, "POST", "/metrics", "Content-Length: 0\r\n");
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("allow: GET, HEAD\r\n"), "{r}");

        let big = format!("X-Big: {}\r\n", "a".repeat(MAX_HEADER_BYTES * 2));
        let r = get(addr, "GET", "/metrics", &big);
        assert!(
            r.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{r}"
        );

        let r = raw(addr, b"this is not http\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");

        // After all that the server still answers.
        let r = get(addr, "GET", "/metrics", "");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");

        stop.send(()).unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn failed_scrape_is_a_500() {
        let (addr, stop, thread) = start(true);
        let r = get(addr, "GET", "/metrics", "");
        assert!(
            r.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{r}"
        );
        assert!(r.contains("collector gone"), "{r}");
        stop.send(()).unwrap();
        thread.join().unwrap();
    }
}

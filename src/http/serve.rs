//! The HTTP connections, run by hand: axum's `serve` has no header deadline.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The most a request's head (request line and headers) may take in memory: a link page
/// request is far smaller, and a thousand connections stay within a few dozen MB.
pub(super) const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Serves `app` over HTTP/1.1 on each connection `incoming` yields — with its peer
/// address and a `slot` (its place under the connection cap, given back when the
/// connection ends) — until `stop`; then open requests finish and idle connections close.
///
/// A client must send a request's headers within `header_timeout` of connecting, and on
/// a kept-alive connection within `header_timeout` of the previous response (hyper starts
/// the clock when it waits for a request): a client that never finishes its headers is
/// dropped, and an idle HTTP connection closes after `header_timeout`.
pub async fn serve<G: Send + 'static>(
    incoming: impl Stream<Item = (TcpStream, SocketAddr, G)>,
    app: Router,
    port: &'static str,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_REQUEST_HEAD);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut incoming = std::pin::pin!(incoming);
    loop {
        let (stream, peer, slot) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            next = incoming.next() => match next {
                Some(connection) => connection,
                None => break,
            },
        };
        let app = app.clone();
        let service = hyper::service::service_fn(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(app.clone(), req)
            },
        );
        let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                if e.is_timeout() {
                    crate::metrics::connection_timed_out(port, "headers");
                }
                tracing::debug!(error = %e, %peer, port, "HTTP connection ended");
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
}

//! The HTTP connections, run by hand: axum's `serve` has no header deadline, and the port's
//! bounds need to hear when a connection was answered and when it is idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::startup::Slot;

/// The most a request's head (request line and headers) may take in memory: a link page
/// request is far smaller, and a thousand connections stay within a few dozen MB.
pub(super) const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Serves `app` over HTTP/1.1 on each connection `incoming` yields — with its peer
/// address and its `slot` (its place under the port's bounds, given back when the
/// connection ends) — until `stop`; then open requests finish and idle connections close.
///
/// A client must send a request's headers within `header_timeout` of connecting, and on
/// a kept-alive connection within `header_timeout` of the previous response (hyper starts
/// the clock when it waits for a request): a client that never finishes its headers is
/// dropped, and an idle HTTP connection closes after `header_timeout`.
///
/// The slot hears when each request starts and is answered (the first answer frees the
/// connection from its peer's bound on unanswered connections, and an answered connection
/// is idle until its next request); when the port wants an idle connection closed (it
/// nears its cap), the connection closes as at `stop`: at once if idle, else after its
/// answer.
pub async fn serve(
    incoming: impl Stream<Item = (TcpStream, SocketAddr, Slot)>,
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
    // Every connection's task holds a sender; all are gone once every connection ended.
    let (running, mut all_ended) = tokio::sync::mpsc::channel::<()>(1);
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
        let slot = Arc::new(slot);
        let close = slot.close_requested();
        let service = {
            let slot = slot.clone();
            hyper::service::service_fn(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    slot.request_started();
                    let slot = slot.clone();
                    let call = tower::ServiceExt::oneshot(app.clone(), req);
                    async move {
                        let response = call.await;
                        slot.request_answered();
                        response
                    }
                },
            )
        };
        let connection = http1.serve_connection(TokioIo::new(stream), service);
        let (stop, running) = (stop.clone(), running.clone());
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                () = close.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                if e.is_timeout() {
                    crate::metrics::connection_timed_out(port, "headers");
                }
                tracing::debug!(error = %e, %peer, port, "HTTP connection ended");
            }
            drop(slot);
            drop(running);
        });
    }
    drop(running);
    let _ = all_ended.recv().await;
}

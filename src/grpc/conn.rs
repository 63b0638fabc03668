//! What one gRPC connection may take. hyper's HTTP/2 server waits for ever for a client's
//! preface and keeps an idle connection for ever; both deadlines are enforced here, under it:
//!
//! - [`Guarded`] wraps the accepted socket (below TLS when TLS is on) and fails its read once
//!   a deadline has passed, which ends the connection: the HTTP/2 preface and the header of
//!   the first frame must arrive within the header timeout of the accept (with TLS: the
//!   ClientHello, and tonic's handshake timeout then bounds the handshake), and a connection
//!   with no call in flight is closed after the idle timeout;
//! - [`EdgeLayer`], around every service, counts the calls in flight on each connection, from
//!   the moment a request is routed until its response body is done (an open health `Watch`
//!   stream keeps its connection busy); it also answers INVALID_ARGUMENT, not tonic's
//!   INTERNAL, when the request is not valid protobuf: the caller sent it, nothing failed here.
//!
//! How many connections there are, and how many calls each may run, is bounded elsewhere
//! (the accept loop's cap and its bound per peer address in `startup`, and HTTP/2
//! `max_concurrent_streams`). An open stream keeps a connection from going idle, so a
//! connection that holds one is never closed here: what stops one host from holding every
//! place on the port with streams is the bound per peer
//! (`EMAILVERIFY_MAX_CONNECTIONS_PER_PEER`), which counts every open connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::codegen::{Bytes, http};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// The HTTP/2 client preface (24 bytes) and the 9-byte header of the SETTINGS frame that
/// must follow it: a client that has not sent this much has not sent its first frame.
const FIRST_FRAME_BYTES: u64 = 24 + 9;

/// The two deadlines of a gRPC connection.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// From the accept to the first frame.
    pub first_frame: Duration,
    /// With no call in flight.
    pub idle: Duration,
}

/// The calls in flight on one connection, shared by its socket and its requests.
#[derive(Debug)]
struct Activity {
    calls: Mutex<Calls>,
    /// The connection's reader, woken when its last call ends (the idle clock starts).
    reader: AtomicWaker,
}

#[derive(Debug)]
struct Calls {
    in_flight: usize,
    idle_since: Instant,
}

impl Activity {
    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection becomes too idle, if nothing is in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        let calls = self.calls();
        (calls.in_flight == 0).then(|| calls.idle_since + idle)
    }
}

/// One call in flight; dropped when its response is done (or the call is abandoned).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Self {
        activity.calls().in_flight += 1;
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let idle = {
            let mut calls = self.0.calls();
            calls.in_flight = calls.in_flight.saturating_sub(1);
            if calls.in_flight == 0 {
                calls.idle_since = Instant::now();
            }
            calls.in_flight == 0
        };
        if idle {
            self.0.reader.wake();
        }
    }
}

/// What each request knows about its connection (tonic puts it in the request's
/// extensions, wrapped in `TlsConnectInfo` when TLS is on).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

impl ConnInfo {
    /// The connection of a request as the layers see it.
    fn of_http(ext: &http::Extensions) -> Option<&ConnInfo> {
        ext.get::<ConnInfo>()
            .or_else(|| ext.get::<TlsConnectInfo<ConnInfo>>().map(|t| t.get_ref()))
    }

    /// The connection of a request as an interceptor or a service sees it.
    pub fn of(ext: &tonic::Extensions) -> Option<&ConnInfo> {
        ext.get::<ConnInfo>()
            .or_else(|| ext.get::<TlsConnectInfo<ConnInfo>>().map(|t| t.get_ref()))
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.tcp.remote_addr
    }
}

/// The certificates a mutual-TLS client presented, if any.
pub fn peer_certs(
    ext: &tonic::Extensions,
) -> Option<Arc<Vec<tonic::transport::CertificateDer<'static>>>> {
    ext.get::<TlsConnectInfo<ConnInfo>>()
        .and_then(|t| t.peer_certs())
}

/// An accepted gRPC socket under its deadlines. `slot` is its place under the connection
/// cap, given back when the connection ends.
pub struct Guarded<G> {
    io: TcpStream,
    info: ConnInfo,
    deadlines: Deadlines,
    accepted: Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
    expired: bool,
    _slot: G,
}

impl<G> Guarded<G> {
    pub fn new(io: TcpStream, slot: G, deadlines: Deadlines) -> Self {
        let accepted = Instant::now();
        let tcp = io.connect_info();
        Self {
            io,
            info: ConnInfo {
                tcp,
                activity: Arc::new(Activity {
                    calls: Mutex::new(Calls {
                        in_flight: 0,
                        idle_since: accepted,
                    }),
                    reader: AtomicWaker::new(),
                }),
            },
            deadlines,
            accepted,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(accepted + deadlines.first_frame)),
            expired: false,
            _slot: slot,
        }
    }

    /// While the socket has nothing to read: the deadline that has passed, if one has
    /// (and the timer armed for the next one otherwise).
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        let (deadline, reason) = if self.received < FIRST_FRAME_BYTES {
            (Some(self.accepted + self.deadlines.first_frame), "headers")
        } else {
            // Registered before reading the count: a call ending in between still wakes us.
            self.info.activity.reader.register(cx.waker());
            (
                self.info.activity.idle_deadline(self.deadlines.idle),
                "idle",
            )
        };
        let deadline = deadline?;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        self.timer.as_mut().poll(cx).is_ready().then_some(reason)
    }
}

impl<G: Unpin> AsyncRead for Guarded<G> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.io).poll_read(cx, buf) {
            this.received += (buf.filled().len() - before) as u64;
            return Poll::Ready(result);
        }
        match this.deadline_passed(cx) {
            None => Poll::Pending,
            Some(reason) => {
                this.expired = true;
                crate::metrics::connection_timed_out("grpc", reason);
                tracing::debug!(peer = ?this.info.peer(), reason, "gRPC connection closed");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("gRPC connection closed: {reason} timeout"),
                )))
            }
        }
    }
}

impl<G: Unpin> AsyncWrite for Guarded<G> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<G> Connected for Guarded<G> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// Counts each call against its connection's activity, and maps a request that is not
/// valid protobuf to INVALID_ARGUMENT (see the module's doc).
#[derive(Clone, Copy, Debug, Default)]
pub struct EdgeLayer;

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Edge<S> {
    inner: S,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for Edge<S>
where
    S: tower::Service<http::Request<B>, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let busy = ConnInfo::of_http(req.extensions()).map(|c| Busy::start(c.activity.clone()));
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = bad_protobuf_is_invalid_argument(call.await?);
            Ok(match busy {
                Some(busy) => {
                    response.map(|body| tonic::body::Body::new(Tracked { body, _busy: busy }))
                }
                None => response,
            })
        })
    }
}

/// tonic answers INTERNAL when the request message does not decode (tonic-prost maps every
/// `DecodeError` so); the status is in the response's extensions when tonic made it.
fn bad_protobuf_is_invalid_argument(response: Response) -> Response {
    let Some(status) = response.extensions().get::<tonic::Status>() else {
        return response;
    };
    if status.code() != tonic::Code::Internal
        || !status
            .message()
            .starts_with("failed to decode Protobuf message")
    {
        return response;
    }
    tonic::Status::invalid_argument(format!(
        "the request message is malformed: {}",
        status.message()
    ))
    .into_http()
}

/// A response body that holds its call's place in the connection's activity until done.
struct Tracked {
    body: tonic::body::Body,
    /// Held for its `Drop`.
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

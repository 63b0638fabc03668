//! Accepting connections within a cap, whatever the kernel says, and within a bound per
//! peer address, so that one host cannot hold a port against every other caller.
//!
//! - The cap: at most `max` connections open at once; the next one is accepted only when a
//!   place is free (until then it waits in the kernel's queue).
//! - Per peer ([`PerPeer`]): a connection from an address already at its bound is closed
//!   as soon as it is accepted (refused, and counted), without taking a place: a flood from
//!   one address is drained as fast as it comes and never fills the kernel's queue.
//! - Near the cap ([`Policy::evict_idle`], HTTP): kept-alive connections waiting for their
//!   next request are closed, the longest idle first, so that new clients get in.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Accepts that fail (a full file-descriptor table): backing off and saying so, briefly.
mod trouble;
use trouble::Trouble;

/// How many connections the kernel holds for a port until they are accepted (Linux caps it
/// at `net.core.somaxconn`, 4096 by default). More than one host's flood of half-open
/// connections keeps in flight while it is refused, so that flood does not fill the queue:
/// a full queue drops the SYNs of everyone else, and each drop costs a client a second.
const BACKLOG: u32 = 4096;

/// A listener on `addr` with the [`BACKLOG`] (tokio's `bind` gives 1024), and address reuse
/// as tokio sets it (a restarted service binds while old connections are in TIME_WAIT).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// What one peer address may hold on a port, besides the port's cap.
#[derive(Clone, Copy, Debug)]
pub enum PerPeer {
    /// No bound (the admin port; the HTTP port behind trusted proxies, whose peer is the
    /// proxy).
    Unbounded,
    /// At most this many connections open at once, whatever they do (gRPC: an open stream
    /// does not exempt a connection).
    Open(usize),
    /// At most this many connections that have not yet been answered once (HTTP: many
    /// people share one address behind a carrier NAT; a kept-alive connection that was
    /// answered is one of theirs and no longer counts).
    Unanswered(usize),
}

/// How a port bounds its connections.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Open at once.
    pub max: usize,
    pub per_peer: PerPeer,
    /// Close idle kept-alive connections when the port nears `max` (HTTP).
    pub evict_idle: bool,
}

impl Policy {
    /// The cap alone (the admin port).
    pub fn capped(max: usize) -> Self {
        Self {
            max,
            per_peer: PerPeer::Unbounded,
            evict_idle: false,
        }
    }
}

/// The connections of `listener` under `policy` (see the module's doc), each with its peer
/// and its [`Slot`]. An accept that fails is logged and backed off from, never passed on
/// (a server that retried at once on a full file-descriptor table would spin and starve
/// everything else).
pub fn accept(
    listener: TcpListener,
    policy: Policy,
    name: &'static str,
) -> impl Stream<Item = (TcpStream, SocketAddr, Slot)> {
    crate::metrics::connection_cap(name, policy.max);
    let port = Arc::new(Port {
        name,
        // Past 7/8 of the cap (at least one place short of it), idle connections go.
        roomy: policy.max - (policy.max / 8).max(1).min(policy.max),
        policy,
        slots: Arc::new(Semaphore::new(policy.max)),
        state: Mutex::new(State::default()),
    });
    futures::stream::unfold(
        (listener, port, Trouble::default()),
        move |(listener, port, mut trouble)| async move {
            let mut permit = port.slots.clone().acquire_owned().await.ok()?;
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        trouble.over(name);
                        match port.admit(peer, permit) {
                            Ok(slot) => {
                                return Some(((stream, peer, slot), (listener, port, trouble)));
                            }
                            // Closed at once; its place goes to the next one.
                            Err(back) => {
                                permit = back;
                                drop(stream);
                            }
                        }
                    }
                    Err(e) => {
                        if let Some(pause) = trouble.failed(name, &e) {
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            }
        },
    )
}

/// A port's connections as its bounds see them.
struct Port {
    name: &'static str,
    policy: Policy,
    /// Open connections (not counting those told to close) above which idle ones close.
    roomy: usize,
    slots: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per peer address, the connections that count against its bound.
    peers: HashMap<IpAddr, usize>,
    /// The connections tracked for eviction (`Policy::evict_idle`), by id.
    conns: HashMap<u64, Conn>,
    /// Those waiting for their next request, longest idle first.
    idle: BTreeSet<(Instant, u64)>,
    /// Connections told to close that have not closed yet.
    closing: usize,
    next_id: u64,
    refused: Refused,
}

struct Conn {
    idle_since: Option<Instant>,
    closing: bool,
    close: CancellationToken,
}

impl Port {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection from `peer` takes `permit`, or is refused (and the permit handed
    /// back) when its address is at its bound.
    fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> Result<Slot, OwnedSemaphorePermit> {
        // One host usually holds a whole IPv6 /64: counted as one peer, as on the bounce
        // listener (each connection from a new address of the /64 would otherwise be a
        // new peer, and the bound would never apply).
        let ip = crate::inbound::peers::peer_of(peer.ip());
        let mut state = self.state();
        let counted = match self.policy.per_peer {
            PerPeer::Unbounded => false,
            PerPeer::Open(bound) | PerPeer::Unanswered(bound) => {
                let held = state.peers.entry(ip).or_insert(0);
                if *held >= bound {
                    state.refused.note(self.name, ip);
                    return Err(permit);
                }
                *held += 1;
                true
            }
        };
        let id = state.next_id;
        state.next_id += 1;
        let close = CancellationToken::new();
        if self.policy.evict_idle {
            state.conns.insert(
                id,
                Conn {
                    idle_since: None,
                    closing: false,
                    close: close.clone(),
                },
            );
            self.make_room(&mut state);
        }
        drop(state);
        crate::metrics::connection_opened(self.name);
        Ok(Slot {
            _permit: permit,
            port: self.clone(),
            id,
            peer: ip,
            counted: std::sync::atomic::AtomicBool::new(counted),
            close,
        })
    }

    /// Whether the port is near its cap (counting the connections told to close as gone).
    fn crowded(&self, state: &State) -> bool {
        let open = self.policy.max - self.slots.available_permits();
        open.saturating_sub(state.closing) > self.roomy
    }

    /// Near the cap: the longest idle connections are told to close.
    fn make_room(&self, state: &mut State) {
        while self.crowded(state) {
            let Some((_, id)) = state.idle.pop_first() else {
                return;
            };
            if let Some(conn) = state.conns.get_mut(&id) {
                conn.idle_since = None;
                conn.closing = true;
                conn.close.cancel();
                state.closing += 1;
                crate::metrics::connection_evicted(self.name);
            }
        }
    }
}

/// A connection's place under its port's cap and its peer's bound; given back when
/// dropped. Its protocol says when it is answered and idle (HTTP), and hears through
/// [`Slot::close_requested`] when the port wants it closed.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    port: Arc<Port>,
    id: u64,
    peer: IpAddr,
    /// Still counted against its peer's bound.
    counted: std::sync::atomic::AtomicBool,
    close: CancellationToken,
}

impl Slot {
    /// Cancelled when the port wants this connection closed: it is idle (or its request
    /// ends) while the port nears its cap.
    pub fn close_requested(&self) -> CancellationToken {
        self.close.clone()
    }

    /// A request's head arrived: the connection is no longer idle.
    pub fn request_started(&self) {
        if !self.port.policy.evict_idle {
            return;
        }
        let mut state = self.port.state();
        if let Some(since) = state
            .conns
            .get_mut(&self.id)
            .and_then(|c| c.idle_since.take())
        {
            state.idle.remove(&(since, self.id));
        }
    }

    /// A request was answered: the connection no longer counts against its peer's
    /// unanswered bound, and waits for its next request — unless the port is near its
    /// cap, when it is told to close.
    pub fn request_answered(&self) {
        let unanswered = matches!(self.port.policy.per_peer, PerPeer::Unanswered(_));
        if !unanswered && !self.port.policy.evict_idle {
            return;
        }
        let mut state = self.port.state();
        if unanswered {
            self.uncount(&mut state);
        }
        if !self.port.policy.evict_idle {
            return;
        }
        let crowded = self.port.crowded(&state);
        let State {
            conns,
            idle,
            closing,
            ..
        } = &mut *state;
        let Some(conn) = conns.get_mut(&self.id) else {
            return;
        };
        if conn.closing {
            return;
        }
        if crowded {
            conn.closing = true;
            conn.close.cancel();
            *closing += 1;
            crate::metrics::connection_evicted(self.port.name);
        } else {
            let now = Instant::now();
            if let Some(before) = conn.idle_since.replace(now) {
                idle.remove(&(before, self.id));
            }
            idle.insert((now, self.id));
        }
    }

    /// No longer counted against its peer's bound (once).
    fn uncount(&self, state: &mut State) {
        if !self
            .counted
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        if let Some(held) = state.peers.get_mut(&self.peer) {
            *held -= 1;
            if *held == 0 {
                state.peers.remove(&self.peer);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut state = self.port.state();
            self.uncount(&mut state);
            if let Some(conn) = state.conns.remove(&self.id) {
                if let Some(since) = conn.idle_since {
                    state.idle.remove(&(since, self.id));
                }
                if conn.closing {
                    state.closing -= 1;
                }
            }
        }
        crate::metrics::connection_closed(self.port.name);
    }
}

/// Refusals, said at WARN at most every [`Refused::WARN_EVERY`] with the count since.
#[derive(Default)]
struct Refused {
    warned: Option<Instant>,
    unreported: u64,
}

impl Refused {
    const WARN_EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, port: &'static str, peer: IpAddr) {
        crate::metrics::connection_refused(port, "per_peer");
        self.unreported += 1;
        let now = Instant::now();
        if self.warned.is_none_or(|at| now >= at + Self::WARN_EVERY) {
            let refused = std::mem::take(&mut self.unreported);
            tracing::warn!(
                port,
                %peer,
                refused,
                "refusing connections: a peer address is at its bound (EMAILVERIFY_MAX_CONNECTIONS_PER_PEER, HTTP: EMAILVERIFY_HTTP_MAX_PENDING_PER_PEER)"
            );
            self.warned = Some(now);
        }
    }
}

//! Who is on the bounce listener: the sessions each peer (an address; IPv6: its /64) has
//! open, and the reports of each that matched nothing this minute (`smtp.rs` applies the
//! bounds). `peer_of` is also how the gRPC and HTTP ports count a peer (`startup::listen`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Reports that match nothing (or cannot be read) one peer may send a minute.
pub const UNMATCHED_PER_MINUTE: u32 = 100;
const MINUTE_MS: i64 = 60_000;
/// Peers remembered for the unmatched-report throttle before stale ones are dropped.
const PEERS_REMEMBERED: usize = 10_000;

/// The peers' open sessions and unmatched reports.
#[derive(Default)]
pub(crate) struct Peers {
    inner: Mutex<PeerState>,
}

#[derive(Default)]
struct PeerState {
    sessions: HashMap<IpAddr, usize>,
    /// Per peer: when its minute started (clock ms) and its unmatched reports in it.
    unmatched: HashMap<IpAddr, (i64, u32)>,
}

impl Peers {
    fn state(&self) -> std::sync::MutexGuard<'_, PeerState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `peer` is past its unmatched reports for the minute at `now`.
    pub(super) fn throttled(&self, peer: IpAddr, now: i64) -> bool {
        self.state()
            .unmatched
            .get(&peer)
            .is_some_and(|&(start, n)| now - start < MINUTE_MS && n >= UNMATCHED_PER_MINUTE)
    }

    /// Counts an unmatched report of `peer`; whether it went past the limit.
    pub(super) fn unmatched(&self, peer: IpAddr, now: i64) -> bool {
        let mut state = self.state();
        if state.unmatched.len() >= PEERS_REMEMBERED {
            state
                .unmatched
                .retain(|_, &mut (start, _)| now - start < MINUTE_MS);
        }
        let entry = state.unmatched.entry(peer).or_insert((now, 0));
        if now - entry.0 >= MINUTE_MS {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 > UNMATCHED_PER_MINUTE
    }
}

/// A session's place in its peer's count, given back when the session ends.
pub(super) struct Seat {
    peers: Arc<Peers>,
    peer: IpAddr,
}

impl Seat {
    /// A seat for `peer` if it has fewer than `max` sessions open.
    pub(super) fn take(peers: &Arc<Peers>, max: usize, peer: IpAddr) -> Option<Self> {
        let mut state = peers.state();
        let open = state.sessions.entry(peer).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(Self {
            peers: peers.clone(),
            peer,
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut state = self.peers.state();
        if let Some(open) = state.sessions.get_mut(&self.peer) {
            *open -= 1;
            if *open == 0 {
                state.sessions.remove(&self.peer);
            }
        }
    }
}

/// The address a peer is counted under: IPv4 (an IPv4-mapped IPv6 address as IPv4), or
/// the /64 of an IPv6 address (one host or site usually holds a whole /64).
pub fn peer_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_ipv4_addresses_or_ipv6_slash_64s() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(peer_of(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(peer_of(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_of(a), peer_of(b));
        assert_ne!(peer_of(a), peer_of(c));
    }

    #[test]
    fn a_peer_past_100_unmatched_reports_is_throttled_until_its_minute_ends() {
        let peers = Peers::default();
        let p: IpAddr = "192.0.2.7".parse().unwrap();
        let q: IpAddr = "192.0.2.8".parse().unwrap();
        for i in 0..UNMATCHED_PER_MINUTE {
            assert!(!peers.throttled(p, 1_000 + i64::from(i)));
            assert!(!peers.unmatched(p, 1_000 + i64::from(i)));
        }
        assert!(peers.throttled(p, 2_000));
        assert!(peers.unmatched(p, 2_000));
        assert!(!peers.throttled(q, 2_000), "another peer is not");
        assert!(peers.throttled(p, 1_000 + MINUTE_MS - 1));
        assert!(!peers.throttled(p, 1_000 + MINUTE_MS));
        assert!(!peers.unmatched(p, 1_000 + MINUTE_MS));
    }

    #[test]
    fn the_limits_are_the_contracts() {
        assert_eq!(UNMATCHED_PER_MINUTE, 100);
        assert_eq!(MINUTE_MS, 60_000);
    }
}

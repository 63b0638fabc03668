//! Who a request comes from: the client IP behind `EMAILVERIFY_TRUSTED_PROXIES` proxies
//! (what the link pages' brute-force guard counts against).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// The client a request came from. With `trusted_proxies` = N > 0: the entry N places from
/// the right of X-Forwarded-For, read across all the header's lines in order — each of our
/// N proxies appended one entry, so that one was written by the outermost of them, and
/// whatever stands left of it came from the client and proves nothing. With fewer entries,
/// the leftmost (the request reached an inner proxy directly); without the header, or with
/// N = 0, the socket's peer.
pub fn client_of(trusted_proxies: usize, peer: SocketAddr, headers: &HeaderMap) -> String {
    let peer_ip = || peer.ip().to_canonical().to_string();
    if trusted_proxies == 0 {
        return peer_ip();
    }
    let lines: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let entries: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .collect();
    let Some(entry) = entries
        .len()
        .checked_sub(trusted_proxies)
        .map_or(entries.first(), |i| entries.get(i))
    else {
        return peer_ip();
    };
    match parse_ip(entry) {
        Some(ip) => ip.to_canonical().to_string(),
        // Not an address (a proxy may write `unknown`): the entry itself names the client.
        None if !entry.is_empty() => entry.chars().take(64).collect(),
        None => peer_ip(),
    }
}

/// `203.0.113.7`, `2001:db8::7`, and the same with a port (`203.0.113.7:4711`,
/// `[2001:db8::7]:4711`).
fn parse_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    #[test]
    fn the_client_is_counted_from_the_right_across_all_lines() {
        let peer: SocketAddr = "10.0.0.5:40000".parse().unwrap();
        let h = forwarded(&["203.0.113.9, 198.51.100.7", "192.0.2.10"]);
        assert_eq!(client_of(0, peer, &h), "10.0.0.5");
        assert_eq!(client_of(1, peer, &h), "192.0.2.10");
        assert_eq!(client_of(2, peer, &h), "198.51.100.7");
        assert_eq!(client_of(3, peer, &h), "203.0.113.9");
        // Fewer entries than proxies: the leftmost; no header: the peer.
        assert_eq!(client_of(5, peer, &h), "203.0.113.9");
        assert_eq!(client_of(1, peer, &HeaderMap::new()), "10.0.0.5");
    }

    #[test]
    fn entries_with_ports_brackets_or_mapped_addresses_name_the_same_client() {
        let peer: SocketAddr = "[::ffff:10.0.0.5]:40000".parse().unwrap();
        assert_eq!(client_of(0, peer, &HeaderMap::new()), "10.0.0.5");
        for entry in ["198.51.100.7", "198.51.100.7:4711", "::ffff:198.51.100.7"] {
            assert_eq!(
                client_of(1, peer, &forwarded(&[entry])),
                "198.51.100.7",
                "{entry}"
            );
        }
        for entry in ["2001:db8::7", "[2001:db8::7]", "[2001:db8::7]:4711"] {
            assert_eq!(
                client_of(1, peer, &forwarded(&[entry])),
                "2001:db8::7",
                "{entry}"
            );
        }
        // What a proxy writes when it does not know: a name of its own.
        assert_eq!(client_of(1, peer, &forwarded(&["unknown"])), "unknown");
        assert_eq!(client_of(1, peer, &forwarded(&[""])), "10.0.0.5");
    }
}

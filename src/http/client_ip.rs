//! Who is calling, network-wise: the key of per-IP rate limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's IP address.
///
/// With `trusted_proxy_hops` = 0 (no proxy in front), the socket's peer. Behind `n` proxies that
/// each append to `X-Forwarded-For`, the entry `n` from the right: those entries were written by
/// our proxies, anything left of them by the client, who can write what it likes.
pub fn client_ip(req: &HttpRequest, trusted_proxy_hops: usize) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|addr| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if trusted_proxy_hops == 0 {
        return peer;
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all(&X_FORWARDED_FOR)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    forwarded
        .len()
        .checked_sub(trusted_proxy_hops)
        .and_then(|index| parse_address(forwarded[index]))
        // Fewer entries than proxies: the chain is not what was configured; fall back to the peer.
        .unwrap_or(peer)
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`.
fn parse_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The rate-limit key of an address: IPv4 as is, IPv6 by its /64 (one subscriber usually holds a
/// whole /64, so per-address keys would let a client rotate through them).
pub fn rate_limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn request(forwarded: &[&str]) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr("10.0.0.2:5555".parse().unwrap());
        for value in forwarded {
            req = req.append_header(("x-forwarded-for", *value));
        }
        req.to_http_request()
    }

    #[test]
    fn without_proxies_the_peer_is_the_client() {
        let req = request(&["203.0.113.9"]);
        assert_eq!(client_ip(&req, 0).to_string(), "10.0.0.2");
    }

    #[test]
    fn behind_one_proxy_the_rightmost_entry_is_the_client() {
        let req = request(&["1.1.1.1, 203.0.113.9"]);
        assert_eq!(client_ip(&req, 1).to_string(), "203.0.113.9");
        let req = request(&["1.1.1.1", "203.0.113.9:4444"]);
        assert_eq!(client_ip(&req, 1).to_string(), "203.0.113.9");
    }

    #[test]
    fn behind_two_proxies_the_second_from_the_right() {
        let req = request(&["spoofed, 198.51.100.7, 172.16.0.1"]);
        assert_eq!(client_ip(&req, 2).to_string(), "198.51.100.7");
        let req = request(&["[2001:db8::7]:443, 172.16.0.1"]);
        assert_eq!(client_ip(&req, 2).to_string(), "2001:db8::7");
    }

    #[test]
    fn a_short_or_garbled_chain_falls_back_to_the_peer() {
        assert_eq!(client_ip(&request(&[]), 1).to_string(), "10.0.0.2");
        assert_eq!(
            client_ip(&request(&["203.0.113.9"]), 2).to_string(),
            "10.0.0.2"
        );
        assert_eq!(
            client_ip(&request(&["not-an-ip"]), 1).to_string(),
            "10.0.0.2"
        );
    }

    #[test]
    fn ipv6_addresses_share_a_key_per_64() {
        let a = rate_limit_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = rate_limit_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = rate_limit_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(rate_limit_key(v4), v4);
    }
}

//! Who is calling, network-wise: the key of per-IP rate limits.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::HttpRequest;

/// The client's IP address. Proxy headers (`X-Forwarded-For`, `Forwarded`) are believed only
/// when `trust_proxy_headers` is on: anyone can send them, so trusting them without a proxy
/// would let a client pick its own rate-limit key.
pub fn client_ip(req: &HttpRequest, trust_proxy_headers: bool) -> IpAddr {
    if trust_proxy_headers
        && let Some(ip) = req.connection_info().realip_remote_addr().and_then(|addr| {
            addr.parse::<IpAddr>()
                .ok()
                .or_else(|| addr.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        })
    {
        return ip;
    }
    req.peer_addr()
        .map(|addr| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

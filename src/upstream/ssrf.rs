//! The SSRF guard: which addresses an upstream may not resolve to, and a resolver that drops them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Refused because the destination is internal; carried through reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {addr}, a private or internal address")]
pub struct ForbiddenAddress {
    pub host: String,
    pub addr: IpAddr,
}

/// True for addresses an open proxy must never connect to: loopback, private, link-local,
/// shared (CGNAT), benchmarking, unique-local, multicast, unspecified, broadcast and reserved
/// ranges, prefixes that lead into a translator or tunnel whose far end we cannot check
/// (local-use NAT64, IPv4-translated, Teredo, discard-only), and IPv6 forms that embed a
/// forbidden IPv4 address (v4-mapped, v4-compatible, NAT64, 6to4).
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata lives here
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // 100.64/10 shared address space
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // 192.0.0/24 IETF protocol assignments
        || (a == 198 && (b & 0xfe) == 18) // 198.18/15 benchmarking: lab networks, never public
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let seg = ip.segments();
    // ::a.b.c.d (deprecated v4-compatible), except :: and ::1 handled below
    if seg[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return forbidden_v4(Ipv4Addr::from(ip.to_bits() as u32));
    }
    // ::ffff:0:a.b.c.d (RFC 2765 IPv4-translated, ::ffff:0:0:0/96): only a translator
    // between us and the host decides where it leads.
    if seg[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return true;
    }
    // 64:ff9b::/96 NAT64 embeds an IPv4 address in the last 32 bits.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(Ipv4Addr::from(ip.to_bits() as u32));
    }
    // 64:ff9b:1::/48 local-use NAT64 (RFC 8215): a site's own translator, with any mapping.
    if seg[..3] == [0x64, 0xff9b, 1] {
        return true;
    }
    // 2001::/32 Teredo tunnels to an address hidden in the suffix; 2001:2::/48 is the IPv6
    // benchmarking range (like 198.18/15); 100::/64 is discard-only.
    if seg[..2] == [0x2001, 0] || seg[..3] == [0x2001, 2, 0] || seg[..4] == [0x100, 0, 0, 0] {
        return true;
    }
    // 2002::/16 6to4 embeds one in bits 16..48.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        );
        return forbidden_v4(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (seg[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (seg[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
}

/// Resolves with the system resolver and keeps only allowed addresses, so the address
/// actually connected to is the one checked (no DNS-rebinding gap between check and use).
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            match (allowed.is_empty(), resolved.first()) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
                (true, Some(first)) => Err(Box::new(ForbiddenAddress {
                    host,
                    addr: first.ip(),
                }) as _),
                (true, None) => Err(format!("{host}: no addresses").into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classification() {
        for bad in [
            "127.0.0.1",
            "127.255.0.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            // issue 11, item 7
            "198.18.0.1",
            "198.19.255.254",
            "::ffff:198.18.0.1",
            "64:ff9b::c612:1",  // NAT64 of 198.18.0.1
            "2002:c612:1::1",   // 6to4 of 198.18.0.1
            "2002:c0a8:101::1", // 6to4 of 192.168.1.1
            "2002:a00:1::",     // 6to4 of 10.0.0.1
            "64:ff9b::a00:1",   // NAT64 of 10.0.0.1
            "::ffff:10.0.0.1",  // mapped
            "::ffff:0:a00:1",   // translated 10.0.0.1
            "::ffff:0:7f00:1",  // translated 127.0.0.1
            "::ffff:0:808:808", // translated, even of a public address
            "64:ff9b:1::1",     // local-use NAT64
            "64:ff9b:1:ffff::808:808",
            "2001::1", // Teredo
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1", // discard-only
            "100::ffff:ffff:ffff:ffff",
            "2001:2::1", // benchmarking
        ] {
            assert!(is_forbidden(ip(bad)), "{bad} must be forbidden");
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "2002:0808:0808::",
            "198.17.255.255",
            "198.20.0.1",
            "64:ff9b::808:808", // NAT64 of a public address
            "64:ff9b:2::1",
            "2001:200::1", // 2001::/23 but neither Teredo nor benchmarking
            "2a00:1450:4001::1",
            "100:0:0:1::1", // just past 100::/64
        ] {
            assert!(!is_forbidden(ip(good)), "{good} must be allowed");
        }
    }

    #[tokio::test]
    async fn resolver_refuses_localhost() {
        let name: Name = "localhost".parse().unwrap();
        let err = GuardedResolver.resolve(name).await.err().expect("refused");
        assert!(err.downcast_ref::<ForbiddenAddress>().is_some(), "{err}");
    }
}

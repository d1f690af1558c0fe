//! IP ranges (`10.88.0.0/16`, `fd00::/64`) as the Node's `spec.podCIDR` and the control plane's
//! `--cluster-cidr` write them: parsing, containment, overlap, and the blocks of a range.

use std::net::IpAddr;

/// A network range: an address with no host bits set and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix`; host bits must be clear.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (want address/prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        let max = max_prefix(addr);
        if prefix > max {
            return Err(format!("/{prefix} is longer than /{max}"));
        }
        let cidr = Cidr { addr, prefix };
        if cidr.first() != bits(addr) {
            return Err(format!("{s} has host bits set"));
        }
        Ok(cidr)
    }

    /// The range's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// 32 for IPv4, 128 for IPv6.
    pub fn max_prefix(&self) -> u8 {
        max_prefix(self.addr)
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The first address as a number (IPv4 in the low 32 bits).
    pub fn first(&self) -> u128 {
        bits(self.addr) & !self.host_mask()
    }

    /// The last address as a number.
    pub fn last(&self) -> u128 {
        self.first() | self.host_mask()
    }

    fn host_mask(&self) -> u128 {
        let host_bits = u32::from(self.max_prefix() - self.prefix);
        1u128.checked_shl(host_bits).map_or(u128::MAX, |b| b - 1)
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && (self.first()..=self.last()).contains(&bits(ip))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && self.first() <= other.last()
            && other.first() <= self.last()
    }

    /// The range of the same family starting at address number `first` with `prefix`.
    pub fn from_bits(v4: bool, first: u128, prefix: u8) -> Cidr {
        let addr = if v4 {
            IpAddr::V4((first as u32).into())
        } else {
            IpAddr::V6(first.into())
        };
        Cidr { addr, prefix }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        Cidr::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = Cidr::parse(input).map(|c| c.to_string());
        assert_eq!(
            got.as_deref().map_err(String::as_str),
            expected,
            "for {input:?}"
        );
    }

    #[test]
    fn parsing() {
        check("10.88.0.0/16", Ok("10.88.0.0/16"));
        check("10.88.3.0/24", Ok("10.88.3.0/24"));
        check("0.0.0.0/0", Ok("0.0.0.0/0"));
        check("10.0.0.1/32", Ok("10.0.0.1/32"));
        check("fd00:88::/64", Ok("fd00:88::/64"));
        check("::/0", Ok("::/0"));
        check("10.88.0.1/16", Err("10.88.0.1/16 has host bits set"));
        check("10.88.0.0/33", Err("/33 is longer than /32"));
        check(
            "10.88.0.0",
            Err("\"10.88.0.0\" is not a CIDR (want address/prefix)"),
        );
        check(
            "10.88.0.300/16",
            Err("\"10.88.0.300\" is not an IP address"),
        );
        check("10.88.0.0/x", Err("\"x\" is not a prefix length"));
    }

    #[test]
    fn containment_and_overlap() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        let cluster = c("10.88.0.0/16");
        assert!(cluster.contains("10.88.255.255".parse().unwrap()));
        assert!(!cluster.contains("10.89.0.0".parse().unwrap()));
        assert!(!cluster.contains("::1".parse().unwrap()));
        for (a, b, overlap) in [
            ("10.88.0.0/16", "10.88.4.0/24", true),
            ("10.88.4.0/24", "10.88.0.0/16", true),
            ("10.88.0.0/16", "10.89.0.0/16", false),
            ("10.88.0.0/24", "10.88.1.0/24", false),
            ("0.0.0.0/0", "10.0.0.0/8", true),
            ("::/0", "10.0.0.0/8", false),
        ] {
            assert_eq!(c(a).overlaps(&c(b)), overlap, "{a} {b}");
        }
        assert_eq!(
            Cidr::from_bits(true, cluster.first() + 256, 24),
            c("10.88.1.0/24")
        );
        assert_eq!(cluster.last() - cluster.first(), 65535);
    }
}

//! The kernel side of the pod network across nodes, through netlink (rtnetlink): the VXLAN
//! device, its FDB and neighbour entries, and the routes to other nodes' pods, made to match
//! an [`overlay::Desired`]. Thin: every decision is in [`crate::overlay`].
//!
//! kumo's routes carry their own protocol number ([`ROUTE_PROTOCOL`]) so that a reconcile
//! removes exactly the stale ones it made and never a route of anyone else; the FDB and
//! neighbour entries it manages are those on its own device.

use crate::error::NetError;
use crate::overlay::{
    self, Backend, Desired, FdbEntry, NeighbourEntry, PeerNode, PodRoute, VXLAN_DEVICE,
    VXLAN_OVERHEAD, VXLAN_PORT, VXLAN_VNI,
};
use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkVxlan, RouteMessageBuilder};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The protocol number on kumo's routes (`ip route` shows `proto 77`).
pub const ROUTE_PROTOCOL: u8 = 77;

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;

fn err(op: &'static str, e: impl std::fmt::Display) -> NetError {
    NetError::Netlink {
        op,
        message: e.to_string(),
    }
}

/// The errno of a netlink error, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// What a reconcile changed, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub added: usize,
    pub removed: usize,
}

/// A netlink connection in the network namespace of the thread that opened it.
pub struct Links {
    handle: Handle,
}

impl Links {
    /// Opens a connection (its task runs on the current tokio runtime).
    pub fn connect() -> Result<Links, NetError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| err("opening a netlink socket", e))?;
        tokio::spawn(connection);
        Ok(Links { handle })
    }

    async fn links(&self) -> Result<Vec<LinkMessage>, NetError> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| err("listing links", e))
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, NetError> {
        match self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
        {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(19) => Ok(None), // ENODEV
            Err(e) => Err(err("looking up a link", e)),
        }
    }

    /// The host's networks as `(link, network)`: the network of every address, on every link
    /// but kumo's own (named `kumo…`: pod bridges and the VXLAN device).
    pub async fn host_networks(&self) -> Result<Vec<(String, String)>, NetError> {
        let names: Vec<(u32, String)> = self
            .links()
            .await?
            .iter()
            .map(|l| (l.header.index, link_name(l)))
            .collect();
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| err("listing addresses", e))?;
        let mut out = Vec::new();
        for a in addrs {
            let Some(name) = names
                .iter()
                .find(|(i, _)| *i == a.header.index)
                .map(|(_, n)| n)
            else {
                continue;
            };
            if name.starts_with("kumo") {
                continue;
            }
            let ip = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = ip {
                out.push((name.clone(), network(ip, a.header.prefix_len)));
            }
        }
        Ok(out)
    }

    /// The MTU of the link that holds `address`, if one does.
    pub async fn mtu_of_address(&self, address: IpAddr) -> Result<Option<u32>, NetError> {
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_address_filter(address)
            .execute()
            .try_collect()
            .await
            .map_err(|e| err("listing addresses", e))?;
        let Some(index) = addrs.first().map(|a| a.header.index) else {
            return Ok(None);
        };
        Ok(self
            .links()
            .await?
            .iter()
            .find(|l| l.header.index == index)
            .and_then(|l| {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Mtu(m) => Some(*m),
                    _ => None,
                })
            }))
    }

    /// Makes (or remakes, if its local address, VNI, port or MAC differ) this node's VXLAN
    /// device, up, with its VTEP gateway as a /32; its index.
    pub async fn ensure_vxlan(&self, local: &PeerNode, underlay_mtu: u32) -> Result<u32, NetError> {
        let IpAddr::V4(local_ip) = local.address else {
            return Err(err(
                "making the vxlan device",
                format!("node address {} is not IPv4", local.address),
            ));
        };
        let gateway = overlay::vtep_gateway(&local.pod_cidr)
            .map_err(|e| err("making the vxlan device", e))?;
        let mac = overlay::vtep_mac(&local.name);
        let mtu = underlay_mtu.saturating_sub(VXLAN_OVERHEAD).max(68);
        if let Some(link) = self.link_by_name(VXLAN_DEVICE).await? {
            let ok = vxlan_matches(&link, local_ip, &mac) && link_mtu(&link) == Some(mtu);
            if ok {
                self.ensure_gateway(link.header.index, gateway).await?;
                return Ok(link.header.index);
            }
            self.handle
                .link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(|e| err("removing a stale vxlan device", e))?;
        }
        let msg = LinkVxlan::new(VXLAN_DEVICE, VXLAN_VNI)
            .port(VXLAN_PORT)
            .local(local_ip)
            .learning(false)
            .address(mac.to_vec())
            .mtu(mtu)
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| err("making the vxlan device", e))?;
        let link = self
            .link_by_name(VXLAN_DEVICE)
            .await?
            .ok_or_else(|| err("making the vxlan device", "it is gone after being made"))?;
        self.ensure_gateway(link.header.index, gateway).await?;
        Ok(link.header.index)
    }

    /// The VTEP gateway as the device's only address.
    async fn ensure_gateway(&self, index: u32, gateway: IpAddr) -> Result<(), NetError> {
        let prefix = if gateway.is_ipv4() { 32 } else { 128 };
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| err("listing addresses", e))?;
        let mut have = false;
        for a in addrs {
            let ip = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if ip.is_some_and(|ip| ip.is_ipv4() != gateway.is_ipv4()) {
                continue; // the kernel's IPv6 link-local address
            }
            if ip == Some(gateway) && a.header.prefix_len == prefix {
                have = true;
            } else {
                self.handle
                    .address()
                    .del(a)
                    .execute()
                    .await
                    .map_err(|e| err("removing a stale vxlan address", e))?;
            }
        }
        if !have {
            match self
                .handle
                .address()
                .add(index, gateway, prefix)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(err("adding the vxlan gateway address", e)),
            }
        }
        Ok(())
    }

    /// Removes the VXLAN device (with its entries and routes) and every route kumo made; what
    /// is already gone is not an error. Whether anything was there.
    pub async fn remove_all(&self) -> Result<bool, NetError> {
        let vxlan = self.remove_vxlan().await?;
        let routes = self.remove_routes().await?;
        Ok(vxlan || !routes.is_empty())
    }

    /// Removes every route kumo made in this network namespace (`proto 77`: host-gw's routes
    /// outlive any device kumo removes); each one removed, as `DST/PREFIX via GATEWAY`.
    pub async fn remove_routes(&self) -> Result<Vec<String>, NetError> {
        let mut removed = Vec::new();
        for route in self.kumo_routes().await? {
            let what = match route_key(&route) {
                Some((r, _)) => format!("{}/{} via {}", r.dst.0, r.dst.1, r.via),
                None => format!(
                    "to a /{} (proto {ROUTE_PROTOCOL})",
                    route.header.destination_prefix_length
                ),
            };
            self.delete_route(route).await?;
            removed.push(what);
        }
        Ok(removed)
    }

    /// Removes the VXLAN device, with its entries and routes; whether it was there.
    pub async fn remove_vxlan(&self) -> Result<bool, NetError> {
        let Some(link) = self.link_by_name(VXLAN_DEVICE).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(19) => Ok(false), // ENODEV: gone meanwhile
            Err(e) => Err(err("removing the vxlan device", e)),
        }
    }

    /// Makes the routes (and, on vxlan, the FDB and neighbour entries on device `vxlan`) match
    /// `desired`, removing kumo's stale ones.
    pub async fn apply(
        &self,
        backend: Backend,
        vxlan: Option<u32>,
        desired: &Desired,
    ) -> Result<Applied, NetError> {
        let mut applied = Applied::default();
        if let (Backend::Vxlan, Some(index)) = (backend, vxlan) {
            // Entries first: a route is usable as soon as it exists.
            self.apply_fdb(index, &desired.fdb, &mut applied).await?;
            self.apply_neighbours(index, &desired.neighbours, &mut applied)
                .await?;
        }
        let mut have = BTreeSet::new();
        for route in self.kumo_routes().await? {
            let key = route_key(&route);
            let wanted = key.is_some_and(|(r, dev)| {
                desired.routes.contains(&r) && (backend == Backend::HostGw || dev == vxlan)
            });
            if wanted {
                have.extend(key.map(|(r, _)| r));
            } else {
                self.delete_route(route).await?;
                applied.removed += 1;
            }
        }
        for route in desired.routes.difference(&have) {
            self.add_route(backend, vxlan, route).await?;
            applied.added += 1;
        }
        Ok(applied)
    }

    async fn kumo_routes(&self) -> Result<Vec<RouteMessage>, NetError> {
        let mut out = Vec::new();
        for family in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(family)
                .execute()
                .try_collect()
                .await
                .map_err(|e| err("listing routes", e))?;
            out.extend(
                routes
                    .into_iter()
                    .filter(|r| r.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL)),
            );
        }
        Ok(out)
    }

    async fn delete_route(&self, route: RouteMessage) -> Result<(), NetError> {
        match self.handle.route().del(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ESRCH) | Some(ENOENT)) => Ok(()),
            Err(e) => Err(err("removing a route", e)),
        }
    }

    async fn add_route(
        &self,
        backend: Backend,
        vxlan: Option<u32>,
        route: &PodRoute,
    ) -> Result<(), NetError> {
        fn bad(e: impl std::fmt::Display) -> NetError {
            err("adding a route", e)
        }
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.dst.0, route.dst.1)
            .map_err(bad)?
            .gateway(route.via)
            .map_err(bad)?
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        if let (Backend::Vxlan, Some(index)) = (backend, vxlan) {
            b = b.output_interface(index).onlink();
        }
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(|e| err("adding a route", e))
    }

    async fn neighbours(
        &self,
        family: AddressFamily,
        index: u32,
    ) -> Result<Vec<NeighbourMessage>, NetError> {
        let all: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .map_err(|e| err("listing neighbours", e))?;
        Ok(all
            .into_iter()
            .filter(|n| n.header.ifindex == index)
            .collect())
    }

    async fn delete_neighbour(&self, n: NeighbourMessage) -> Result<(), NetError> {
        match self.handle.neighbours().del(n).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENOENT) | Some(ESRCH)) => Ok(()),
            Err(e) => Err(err("removing a neighbour entry", e)),
        }
    }

    async fn apply_fdb(
        &self,
        index: u32,
        desired: &BTreeSet<FdbEntry>,
        applied: &mut Applied,
    ) -> Result<(), NetError> {
        let mut have = BTreeSet::new();
        for n in self.neighbours(AddressFamily::Bridge, index).await? {
            let entry = fdb_key(&n);
            match entry {
                Some(e) if desired.contains(&e) => {
                    have.insert(e);
                }
                // The device's own entries (its MAC, with no destination) are the kernel's.
                None => {}
                Some(_) => {
                    self.delete_neighbour(n).await?;
                    applied.removed += 1;
                }
            }
        }
        for e in desired.difference(&have) {
            let mut req = self
                .handle
                .neighbours()
                .add_bridge(index, &e.mac)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace();
            req.message_mut()
                .attributes
                .push(NeighbourAttribute::Destination(neighbour_address(e.dst)));
            req.execute()
                .await
                .map_err(|err_| err("adding an fdb entry", err_))?;
            applied.added += 1;
        }
        Ok(())
    }

    async fn apply_neighbours(
        &self,
        index: u32,
        desired: &BTreeSet<NeighbourEntry>,
        applied: &mut Applied,
    ) -> Result<(), NetError> {
        let mut have = BTreeSet::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            // Only permanent entries are kumo's (the kernel keeps its own, e.g. multicast).
            let permanent = self.neighbours(family, index).await?.into_iter();
            for n in permanent.filter(|n| n.header.state == NeighbourState::Permanent) {
                match neighbour_key(&n) {
                    Some(e) if desired.contains(&e) => {
                        have.insert(e);
                    }
                    _ => {
                        self.delete_neighbour(n).await?;
                        applied.removed += 1;
                    }
                }
            }
        }
        for e in desired.difference(&have) {
            self.handle
                .neighbours()
                .add(index, e.ip)
                .link_layer_address(&e.mac)
                .state(NeighbourState::Permanent)
                .kind(RouteType::Unicast)
                .replace()
                .execute()
                .await
                .map_err(|err_| err("adding a neighbour entry", err_))?;
            applied.added += 1;
        }
        Ok(())
    }
}

fn link_name(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn link_mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// Whether an existing device is the VXLAN device this node wants.
fn vxlan_matches(l: &LinkMessage, local: std::net::Ipv4Addr, mac: &[u8; 6]) -> bool {
    let address = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m.as_slice()),
        _ => None,
    });
    let info: Vec<&InfoVxlan> = l
        .attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .flatten()
        .filter_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
            _ => None,
        })
        .flatten()
        .collect();
    let has = |want: &InfoVxlan| info.contains(&want);
    address == Some(mac.as_slice())
        && has(&InfoVxlan::Id(VXLAN_VNI))
        && has(&InfoVxlan::Local(local))
        && has(&InfoVxlan::Port(VXLAN_PORT))
        && has(&InfoVxlan::Learning(false))
}

fn network(ip: IpAddr, prefix: u8) -> String {
    let net = match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    format!("{net}/{prefix}")
}

fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// A kumo route as a [`PodRoute`], with its output device.
fn route_key(r: &RouteMessage) -> Option<(PodRoute, Option<u32>)> {
    let mut dst = None;
    let mut via = None;
    let mut dev = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_address(d),
            RouteAttribute::Gateway(g) => via = route_address(g),
            RouteAttribute::Oif(i) => dev = Some(*i),
            _ => {}
        }
    }
    Some((
        PodRoute {
            dst: (dst?, r.header.destination_prefix_length),
            via: via?,
        },
        dev,
    ))
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn neighbour_ip(n: &NeighbourMessage) -> Option<IpAddr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        // An FDB entry's (AF_BRIDGE) destination comes unparsed.
        NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => match raw.len() {
            4 => <[u8; 4]>::try_from(raw.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(raw.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

fn neighbour_mac(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) => m.as_slice().try_into().ok(),
        _ => None,
    })
}

fn fdb_key(n: &NeighbourMessage) -> Option<FdbEntry> {
    Some(FdbEntry {
        mac: neighbour_mac(n)?,
        dst: neighbour_ip(n)?,
    })
}

fn neighbour_key(n: &NeighbourMessage) -> Option<NeighbourEntry> {
    Some(NeighbourEntry {
        ip: neighbour_ip(n)?,
        mac: neighbour_mac(n)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_of_addresses() {
        for (ip, prefix, want) in [
            ("192.168.1.17", 24, "192.168.1.0/24"),
            ("10.1.2.3", 32, "10.1.2.3/32"),
            ("10.1.2.3", 0, "0.0.0.0/0"),
            ("fd00::17", 64, "fd00::/64"),
        ] {
            assert_eq!(network(ip.parse().unwrap(), prefix), want);
        }
    }
}

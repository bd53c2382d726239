//! Loopback address plan of the pod runner: which 127.x.y.z a node and its pods get.
//!
//! The runner is given a `/16` inside `127.0.0.0/8` (default `127.0.0.0/16`, so addresses look
//! like `127.0.x.y`). Node `i` owns the `/24` whose third octet is `i + 1`: its host IP is
//! `.1` and its pods get `.2 ..= .254`. Linux routes all of `127.0.0.0/8` to `lo` without any
//! configuration, so every pod can bind its own address and the same port as its neighbours.
//! Allocation is pure: a pool hands out the next free address after the last one it gave, so a
//! deleted pod's address is not reused at once (late packets and TIME_WAIT stay harmless).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Errors of the address plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    /// The network is not written as `a.b.c.d/16` (or a narrower-than-8 prefix was given).
    #[error("pod network {0:?} is not of the form 127.X.0.0/16")]
    BadNetwork(String),
    /// The network is outside `127.0.0.0/8`; only loopback addresses may be used.
    #[error("pod network {0} is outside 127.0.0.0/8 (only loopback addresses are allowed)")]
    NotLoopback(Ipv4Addr),
    /// More nodes than the /16 has /24s for.
    #[error("node index {0} does not fit the pod network (at most 254 nodes)")]
    TooManyNodes(usize),
    /// Every pod address of the node is in use.
    #[error("all {0} pod addresses of this node are in use")]
    Exhausted(usize),
}

/// A `/16` of loopback addresses split into one `/24` per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodNetwork {
    /// Second octet of the network (`127.<second>.0.0/16`).
    second: u8,
}

impl PodNetwork {
    /// The node's own address (its `InternalIP` and every pod's `hostIP`).
    pub fn host_ip(&self, node_index: usize) -> Result<Ipv4Addr, AddrError> {
        Ok(Ipv4Addr::new(127, self.second, third_octet(node_index)?, 1))
    }

    /// A fresh pool of pod addresses for node `node_index`.
    pub fn pool(&self, node_index: usize) -> Result<AddressPool, AddrError> {
        Ok(AddressPool {
            second: self.second,
            third: third_octet(node_index)?,
            in_use: BTreeSet::new(),
            last: FIRST_POD_OCTET - 1,
        })
    }

    /// Whether `ip` belongs to this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 127 && o[1] == self.second
    }
}

impl FromStr for PodNetwork {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| AddrError::BadNetwork(s.to_string()))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| AddrError::BadNetwork(s.to_string()))?;
        if prefix != "16" {
            return Err(AddrError::BadNetwork(s.to_string()));
        }
        let o = ip.octets();
        if o[0] != 127 {
            return Err(AddrError::NotLoopback(ip));
        }
        if o[2] != 0 || o[3] != 0 {
            return Err(AddrError::BadNetwork(s.to_string()));
        }
        Ok(Self { second: o[1] })
    }
}

impl std::fmt::Display for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "127.{}.0.0/16", self.second)
    }
}

const FIRST_POD_OCTET: u8 = 2;
const LAST_POD_OCTET: u8 = 254;

fn third_octet(node_index: usize) -> Result<u8, AddrError> {
    u8::try_from(node_index + 1)
        .ok()
        .filter(|o| *o <= 254)
        .ok_or(AddrError::TooManyNodes(node_index))
}

/// The pod addresses of one node; hands out the next free one after the last allocation.
#[derive(Debug, Clone)]
pub struct AddressPool {
    second: u8,
    third: u8,
    in_use: BTreeSet<u8>,
    last: u8,
}

impl AddressPool {
    /// Number of addresses a node can give to pods at the same time.
    pub const CAPACITY: usize = (LAST_POD_OCTET - FIRST_POD_OCTET + 1) as usize;

    /// Takes a free address.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, AddrError> {
        let mut candidate = self.last;
        for _ in 0..Self::CAPACITY {
            candidate = if candidate >= LAST_POD_OCTET {
                FIRST_POD_OCTET
            } else {
                candidate + 1
            };
            if self.in_use.insert(candidate) {
                self.last = candidate;
                return Ok(Ipv4Addr::new(127, self.second, self.third, candidate));
            }
        }
        Err(AddrError::Exhausted(Self::CAPACITY))
    }

    /// Returns an address to the pool; addresses of other nodes are ignored.
    pub fn release(&mut self, ip: Ipv4Addr) {
        let o = ip.octets();
        if o[0] == 127 && o[1] == self.second && o[2] == self.third {
            self.in_use.remove(&o[3]);
        }
    }

    /// Addresses currently handed out.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loopback_slash_16_only() {
        assert_eq!(
            "127.0.0.0/16".parse::<PodNetwork>(),
            Ok(PodNetwork { second: 0 })
        );
        assert_eq!(
            "127.42.0.0/16".parse::<PodNetwork>(),
            Ok(PodNetwork { second: 42 })
        );
        assert!(matches!(
            "10.0.0.0/16".parse::<PodNetwork>(),
            Err(AddrError::NotLoopback(_))
        ));
        assert!(matches!(
            "127.0.0.0/24".parse::<PodNetwork>(),
            Err(AddrError::BadNetwork(_))
        ));
        assert!(matches!(
            "127.0.1.0/16".parse::<PodNetwork>(),
            Err(AddrError::BadNetwork(_))
        ));
        assert!(matches!(
            "127.0.0.0".parse::<PodNetwork>(),
            Err(AddrError::BadNetwork(_))
        ));
        assert_eq!(
            "127.9.0.0/16".parse::<PodNetwork>().map(|n| n.to_string()),
            Ok("127.9.0.0/16".into())
        );
    }

    #[test]
    fn nodes_get_their_own_slash_24() {
        let net: PodNetwork = "127.3.0.0/16".parse().unwrap();
        assert_eq!(net.host_ip(0), Ok(Ipv4Addr::new(127, 3, 1, 1)));
        assert_eq!(net.host_ip(2), Ok(Ipv4Addr::new(127, 3, 3, 1)));
        assert_eq!(net.host_ip(254), Err(AddrError::TooManyNodes(254)));
        let mut pool = net.pool(1).unwrap();
        let ip = pool.allocate().unwrap();
        assert_eq!(ip, Ipv4Addr::new(127, 3, 2, 2));
        assert!(net.contains(ip));
        assert!(!net.contains(Ipv4Addr::new(127, 4, 2, 2)));
    }

    #[test]
    fn released_addresses_are_not_reused_at_once() {
        let mut pool = PodNetwork::default().pool(0).unwrap();
        let a = pool.allocate().unwrap();
        pool.release(a);
        let b = pool.allocate().unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.in_use(), 1);
    }

    #[test]
    fn exhaustion_is_an_error_and_release_makes_room() {
        let mut pool = PodNetwork::default().pool(0).unwrap();
        let all: Vec<_> = (0..AddressPool::CAPACITY)
            .map(|_| pool.allocate().unwrap())
            .collect();
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), AddressPool::CAPACITY);
        assert!(
            all.iter()
                .all(|ip| ip.octets()[3] >= 2 && ip.octets()[3] <= 254)
        );
        assert_eq!(
            pool.allocate(),
            Err(AddrError::Exhausted(AddressPool::CAPACITY))
        );
        pool.release(all[10]);
        assert_eq!(pool.allocate(), Ok(all[10]));
    }

    #[test]
    fn releasing_a_foreign_address_changes_nothing() {
        let mut pool = PodNetwork::default().pool(0).unwrap();
        pool.allocate().unwrap();
        pool.release(Ipv4Addr::new(127, 0, 2, 2));
        assert_eq!(pool.in_use(), 1);
    }
}

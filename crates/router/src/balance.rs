//! Per-request balancing: power of two choices on least outstanding requests, skipping ejected
//! endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use http::uri::Authority;

use crate::health::{EjectPolicy, Health};
use crate::table::Endpoint;
use crate::upstream::{IdleConns, Pooled};

/// What the router knows about one endpoint. It outlives route table swaps: a new table that
/// names the same endpoint (address and id) keeps its counters and its health.
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub endpoint: Endpoint,
    /// `ip:port`, made once for the URIs of h2c requests.
    pub authority: Authority,
    /// Its idle HTTP/1.1 keep-alive connections.
    pub idle: IdleConns,
    in_flight: AtomicUsize,
    health: Mutex<Health>,
}

impl EndpointState {
    pub fn new(endpoint: Endpoint) -> Self {
        let authority = Authority::try_from(endpoint.addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("invalid"));
        EndpointState {
            endpoint,
            authority,
            idle: IdleConns::default(),
            in_flight: AtomicUsize::new(0),
            health: Mutex::new(Health::default()),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        // Nothing panics while holding the lock, but a poisoned lock still holds valid data.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn selectable(&self, now: Instant) -> bool {
        self.health().selectable(now)
    }
}

/// Picks an endpoint among `endpoints`, never one of `tried`. Ejected endpoints are skipped
/// unless every untried endpoint is ejected ("panic mode", as Envoy does: better a doubtful
/// endpoint than none). `random(n)` returns a number in `0..n`.
pub(crate) fn pick(
    endpoints: &[Arc<EndpointState>],
    tried: &[usize],
    now: Instant,
    random: &mut dyn FnMut(usize) -> usize,
) -> Option<usize> {
    // The candidates' indices, on the stack for the usual handful of endpoints.
    let mut small = [0usize; 16];
    let mut large = Vec::new();
    let slots: &mut [usize] = if endpoints.len() <= small.len() {
        &mut small
    } else {
        large.resize(endpoints.len(), 0);
        &mut large
    };
    let mut collect = |keep: &dyn Fn(usize) -> bool| {
        let mut n = 0;
        for i in (0..endpoints.len()).filter(|i| !tried.contains(i) && keep(*i)) {
            slots[n] = i;
            n += 1;
        }
        n
    };
    let mut n = collect(&|i| endpoints[i].selectable(now));
    if n == 0 {
        n = collect(&|_| true);
    }
    let candidates = &slots[..n];
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = random(n);
            // A second, distinct choice.
            let b = (a + 1 + random(n - 1)) % n;
            let (a, b) = (candidates[a], candidates[b]);
            let (la, lb) = (endpoints[a].in_flight(), endpoints[b].in_flight());
            Some(match la.cmp(&lb) {
                std::cmp::Ordering::Less => a,
                std::cmp::Ordering::Greater => b,
                std::cmp::Ordering::Equal if random(2) == 0 => a,
                std::cmp::Ordering::Equal => b,
            })
        }
    }
}

/// One request outstanding on an endpoint: counted from the pick until the response ends
/// (or the upgraded connection closes), and the source of the endpoint's health verdict.
#[derive(Debug)]
pub(crate) struct Lease {
    state: Arc<EndpointState>,
    policy: EjectPolicy,
    judged: bool,
}

impl Lease {
    pub fn begin(state: Arc<EndpointState>, policy: EjectPolicy, now: Instant) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.health().on_pick(now);
        Lease {
            state,
            policy,
            judged: false,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.state.endpoint
    }

    pub fn state(&self) -> &EndpointState {
        &self.state
    }

    /// Puts back the endpoint's connection once the response on it has been read to its end.
    pub fn keep(&self, conn: Pooled, now: Instant) {
        self.state.idle.put(conn, now);
    }

    pub fn succeed(&mut self) {
        if !self.judged {
            self.judged = true;
            self.state.health().on_success();
        }
    }

    pub fn fail(&mut self, now: Instant) {
        if !self.judged {
            self.judged = true;
            self.state.health().on_failure(now, self.policy);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.judged {
            self.state.health().on_abandon(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const POLICY: EjectPolicy = EjectPolicy {
        after: 1,
        duration: Duration::from_secs(60),
    };

    fn endpoints(n: usize) -> Vec<Arc<EndpointState>> {
        (0..n)
            .map(|i| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
                Arc::new(EndpointState::new(Endpoint::new(addr, format!("e{i}"))))
            })
            .collect()
    }

    /// Loads endpoint i with `load[i]` leases and ejects those in `ejected`, then picks with a
    /// scripted random source.
    fn check(
        load: &[usize],
        ejected: &[usize],
        tried: &[usize],
        script: &[usize],
        want: Option<usize>,
    ) {
        let eps = endpoints(load.len());
        let now = Instant::now();
        let mut leases = Vec::new();
        for (i, &n) in load.iter().enumerate() {
            for _ in 0..n {
                leases.push(Lease::begin(eps[i].clone(), POLICY, now));
            }
        }
        for &i in ejected {
            Lease::begin(eps[i].clone(), POLICY, now).fail(now);
        }
        let mut script = script.iter().copied();
        let mut random = |n: usize| script.next().unwrap_or(0) % n;
        assert_eq!(
            pick(&eps, tried, now, &mut random),
            want,
            "load {load:?} ejected {ejected:?}"
        );
    }

    #[test]
    fn two_choices_take_the_less_loaded() {
        check(&[], &[], &[], &[], None);
        check(&[5], &[], &[], &[], Some(0));
        // Choices 0 and 1: 1 is less loaded.
        check(&[3, 1, 0], &[], &[], &[0, 0], Some(1));
        // Choices 2 and 0 (a=2, b=(2+1+0)%3=0): 2 is idle.
        check(&[3, 1, 0], &[], &[], &[2, 0], Some(2));
        // A tie is broken by the third draw.
        check(&[1, 1], &[], &[], &[0, 0, 1], Some(1));
        check(&[1, 1], &[], &[], &[0, 0, 0], Some(0));
    }

    #[test]
    fn skips_tried_and_ejected_endpoints() {
        check(&[0, 0, 0], &[], &[0, 1], &[], Some(2));
        check(&[0, 0, 0], &[], &[0, 1, 2], &[], None);
        check(&[0, 9, 9], &[0], &[], &[0, 0], Some(1));
        // Every untried endpoint ejected: panic mode still answers.
        check(&[0, 0], &[0, 1], &[0], &[], Some(1));
    }

    #[test]
    fn a_lease_counts_until_dropped() {
        let eps = endpoints(1);
        let lease = Lease::begin(eps[0].clone(), POLICY, Instant::now());
        assert_eq!(eps[0].in_flight(), 1);
        drop(lease);
        assert_eq!(eps[0].in_flight(), 0);
    }
}

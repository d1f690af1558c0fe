//! The control plane's loops under leader election: each on its own Lease in `kumo-system`.

use crate::duration::parse_duration;
use clap::Args;
use kumo_client::leader::{run_while_leading, LeaseLock, Timing, TimingError};
use kumo_client::Client;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Leader election flags (Kubernetes' names and defaults).
#[derive(Args, Debug, Clone)]
pub struct LeaderElectArgs {
    /// How long a loop's Lease lasts without renewal before another server may take it
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long a leader keeps trying to renew before it stops its loop (below the lease
    /// duration)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often leaders renew and candidates try to acquire (below the renew deadline)
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
}

impl LeaderElectArgs {
    /// The timing, checked; the error names the flag at fault.
    pub fn timing(&self) -> anyhow::Result<Timing> {
        let timing = Timing {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        };
        timing.check().map_err(|e| {
            let flag = match e {
                TimingError::LeaseDuration(_) => "--leader-elect-lease-duration",
                TimingError::RenewDeadline { .. } => "--leader-elect-renew-deadline",
                TimingError::RetryPeriod { .. } => "--leader-elect-retry-period",
            };
            anyhow::anyhow!("{flag}: {e}")
        })?;
        Ok(timing)
    }
}

/// The holder identity of a server: its host and the address it listens on, so that it is
/// the same across restarts of one server (which then takes its own leases back at once) and
/// differs between servers (two cannot listen on one host's address).
pub fn identity(host: &str, listen: SocketAddr) -> String {
    format!("{host}_{listen}")
}

/// Runs the loop `make_loop` makes under the Lease `kumo-system/NAME`, until `shutdown`.
pub fn spawn<F, Fut>(
    client: &Client,
    identity: &str,
    timing: Timing,
    name: &str,
    make_loop: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let lock = LeaseLock {
        namespace: kumo_api::SYSTEM_NAMESPACE.to_string(),
        name: name.to_string(),
        identity: identity.to_string(),
    };
    tokio::spawn(run_while_leading(
        client.clone(),
        lock,
        timing,
        make_loop,
        shutdown,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lease: &str, renew: &str, retry: &str, expected: Result<(), &str>) {
        let args = LeaderElectArgs {
            leader_elect_lease_duration: parse_duration(lease).unwrap(),
            leader_elect_renew_deadline: parse_duration(renew).unwrap(),
            leader_elect_retry_period: parse_duration(retry).unwrap(),
        };
        let got = args.timing().map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_string));
    }

    #[test]
    fn flags_are_checked_and_named() {
        check("15s", "10s", "2s", Ok(()));
        check("3s", "2s", "200ms", Ok(()));
        check(
            "15s",
            "20s",
            "2s",
            Err("--leader-elect-renew-deadline: renew deadline (20s) must be shorter than the lease duration (15s)"),
        );
        check(
            "15s",
            "10s",
            "10s",
            Err("--leader-elect-retry-period: retry period (10s) must be above zero and shorter than the renew deadline (10s)"),
        );
        check(
            "1500ms",
            "1s",
            "100ms",
            Err("--leader-elect-lease-duration: lease duration must be a whole number of seconds between 1s and 31536000s, got 1.5s"),
        );
    }

    #[test]
    fn identity_names_host_and_address() {
        assert_eq!(
            identity("host-a", "127.0.0.1:7400".parse().unwrap()),
            "host-a_127.0.0.1:7400"
        );
        assert_eq!(
            identity("host-a", "[::1]:7400".parse().unwrap()),
            "host-a_[::1]:7400"
        );
    }
}

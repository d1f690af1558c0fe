//! Leader election on a `coordination.k8s.io/v1` Lease, as Kubernetes' client-go does it.
//!
//! Each candidate reads the Lease and decides ([`decide`], pure): take it when it is absent,
//! free, expired (`renewTime + leaseDurationSeconds` before now) or already its own; otherwise
//! wait. Every write is conditional on the `resourceVersion` read, so of two candidates racing
//! for one Lease exactly one wins (the other gets a 409). The leader renews every retry period
//! and gives up leadership when no renewal has succeeded within the renew deadline, which is
//! shorter than the lease: it stops acting before anyone else may take over.
//! [`run_while_leading`] runs a loop only while leading, cancels it as soon as leadership is
//! lost, campaigns again, and on shutdown releases the Lease (holder cleared) so that another
//! candidate takes over at once.

use crate::{clock, Client, ClientError};
use kumo_api::lease::{Lease, LeaseSpec};
use kumo_api::{ObjectMeta, Resource, Time};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How long a lease lasts, how long a leader keeps trying to renew it, and how often it tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    /// Kubernetes' defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Timings that would let two leaders act at once, or that a Lease cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("lease duration must be a whole number of seconds between 1s and {max}s, got {0:?}", max = kumo_api::bounds::MAX_DURATION_SECONDS)]
    LeaseDuration(Duration),
    #[error("renew deadline ({renew:?}) must be shorter than the lease duration ({lease:?})")]
    RenewDeadline { renew: Duration, lease: Duration },
    #[error("retry period ({retry:?}) must be above zero and shorter than the renew deadline ({renew:?})")]
    RetryPeriod { retry: Duration, renew: Duration },
}

impl Timing {
    /// Checks `retry < renew deadline < lease duration` and that the lease is whole seconds.
    pub fn check(&self) -> Result<(), TimingError> {
        let lease = self.lease_duration;
        if lease.subsec_nanos() != 0
            || lease.as_secs() < 1
            || lease.as_secs() > kumo_api::bounds::MAX_DURATION_SECONDS as u64
        {
            return Err(TimingError::LeaseDuration(lease));
        }
        if self.renew_deadline >= lease {
            return Err(TimingError::RenewDeadline {
                renew: self.renew_deadline,
                lease,
            });
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(TimingError::RetryPeriod {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        Ok(())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Which Lease, and who is asking for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLock {
    pub namespace: String,
    pub name: String,
    /// The candidate's identity, written as `holderIdentity`; stable across restarts so that a
    /// restarted candidate takes its own lease back at once.
    pub identity: String,
}

/// What a candidate does after reading the Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No Lease exists: create it with this spec.
    Create(LeaseSpec),
    /// Take or renew: write this spec, conditional on the version read.
    Write(LeaseSpec),
    /// Another holder's lease runs until `expires` (`None`: beyond the calendar).
    Held {
        holder: String,
        expires: Option<Time>,
    },
}

/// The decision of candidate `identity` at `now` on the Lease it read (`None`: absent).
pub fn decide(current: Option<&LeaseSpec>, identity: &str, timing: &Timing, now: Time) -> Decision {
    let mine = |acquire_time, transitions| LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(timing.lease_seconds()),
        acquire_time: Some(acquire_time),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
    };
    let Some(spec) = current else {
        return Decision::Create(mine(now, 0));
    };
    match spec.holder() {
        Some(h) if h == identity => Decision::Write(mine(
            spec.acquire_time.unwrap_or(now),
            spec.lease_transitions.unwrap_or(0),
        )),
        Some(holder) => {
            // The holder's own lease duration counts, not ours; no renew time is expired.
            let expires = match spec.renew_time {
                Some(renewed) => clock::add_seconds(
                    renewed,
                    i64::from(
                        spec.lease_duration_seconds
                            .unwrap_or_else(|| timing.lease_seconds()),
                    ),
                ),
                None => Some(Time::MIN_UTC),
            };
            if expires.is_none_or(|e| e > now) {
                Decision::Held {
                    holder: holder.to_string(),
                    expires,
                }
            } else {
                Decision::Write(mine(now, next_transition(spec)))
            }
        }
        None => Decision::Write(mine(now, next_transition(spec))),
    }
}

fn next_transition(spec: &LeaseSpec) -> i32 {
    spec.lease_transitions.unwrap_or(0).saturating_add(1)
}

/// The outcome of one attempt to acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The write took: the candidate leads.
    Leading,
    /// Someone else holds the lease (or won the race for it).
    Held(String),
}

/// One candidate for one Lease.
#[derive(Clone)]
pub struct Elector {
    client: Client,
    lock: LeaseLock,
    timing: Timing,
}

impl Elector {
    pub fn new(client: Client, lock: LeaseLock, timing: Timing) -> Self {
        Elector {
            client,
            lock,
            timing,
        }
    }

    /// Reads the Lease and takes or renews it if [`decide`] says so.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, ClientError> {
        let lock = &self.lock;
        let current = self
            .client
            .get_opt::<Lease>(&lock.namespace, &lock.name)
            .await?;
        let decision = decide(
            current.as_ref().map(|l| &l.spec),
            &lock.identity,
            &self.timing,
            chrono::Utc::now(),
        );
        let written = match (decision, current) {
            (Decision::Held { holder, .. }, _) => return Ok(Attempt::Held(holder)),
            (Decision::Create(spec), _) | (Decision::Write(spec), None) => {
                let mut lease = Lease {
                    metadata: ObjectMeta {
                        name: lock.name.clone(),
                        namespace: Some(lock.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec,
                    ..Lease::default()
                };
                lease.set_type_meta();
                self.client.create(&lease).await
            }
            (Decision::Write(spec), Some(mut lease)) => {
                // Keeps metadata.resourceVersion as read: a write in between makes this a 409.
                lease.spec = spec;
                self.client.update(&lease).await
            }
        };
        match written {
            Ok(_) => Ok(Attempt::Leading),
            // Another candidate wrote first; it leads.
            Err(e) if e.is_conflict() => Ok(Attempt::Held(String::new())),
            Err(e) => Err(e),
        }
    }

    /// Clears the holder if it is still this candidate (ReleaseOnCancel); true when released.
    pub async fn release(&self) -> Result<bool, ClientError> {
        let lock = &self.lock;
        let Some(mut lease) = self
            .client
            .get_opt::<Lease>(&lock.namespace, &lock.name)
            .await?
        else {
            return Ok(false);
        };
        if lease.spec.holder() != Some(lock.identity.as_str()) {
            return Ok(false);
        }
        let now = chrono::Utc::now();
        lease.spec.holder_identity = None;
        lease.spec.lease_duration_seconds = Some(1);
        lease.spec.acquire_time = Some(now);
        lease.spec.renew_time = Some(now);
        match self.client.update(&lease).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The leading loop's task: cancelled when this is dropped, so that dropping
/// [`run_while_leading`] itself (an aborted task) never leaves a loop running unled.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why leading stopped.
enum Stopped {
    Shutdown,
    Lost(&'static str),
    Finished,
}

/// Runs the loop `make_loop` makes only while `lock.identity` holds the Lease: campaigns until
/// it leads, runs a fresh loop, renews every retry period, cancels the loop (drops it) as soon
/// as leadership is lost and campaigns again. On `shutdown` it cancels the loop and releases
/// the Lease; a loop that ends by itself releases it too, and this returns.
pub async fn run_while_leading<F, Fut>(
    client: Client,
    lock: LeaseLock,
    timing: Timing,
    mut make_loop: F,
    shutdown: impl Future<Output = ()> + Send,
) where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = ()> + Send + 'static,
{
    let elector = Elector::new(client, lock, timing);
    let lease = format!("{}/{}", elector.lock.namespace, elector.lock.name);
    tokio::pin!(shutdown);
    loop {
        // Campaign: the first try is immediate, so a free lease is taken at once.
        let mut last_renewal = loop {
            let started = Instant::now();
            match tokio::time::timeout(timing.renew_deadline, elector.try_acquire_or_renew()).await
            {
                Ok(Ok(Attempt::Leading)) => break started,
                Ok(Ok(Attempt::Held(holder))) => {
                    tracing::debug!(%lease, %holder, "lease held by another")
                }
                Ok(Err(e)) => tracing::debug!(%lease, error = %e, "cannot read the lease"),
                Err(_) => tracing::debug!(%lease, "acquiring the lease timed out"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(timing.retry_period) => {}
            }
        };
        tracing::info!(%lease, identity = %elector.lock.identity, "became leader");
        let mut task = AbortOnDrop(tokio::spawn(make_loop()));
        let stopped = loop {
            let deadline = last_renewal + timing.renew_deadline;
            tokio::select! {
                _ = &mut shutdown => break Stopped::Shutdown,
                _ = &mut task.0 => break Stopped::Finished,
                _ = tokio::time::sleep_until(deadline) => break Stopped::Lost("renew deadline passed"),
                _ = tokio::time::sleep(timing.retry_period) => {
                    let started = Instant::now();
                    match tokio::time::timeout_at(deadline, elector.try_acquire_or_renew()).await {
                        Ok(Ok(Attempt::Leading)) => last_renewal = started,
                        Ok(Ok(Attempt::Held(_))) => break Stopped::Lost("another holder took the lease"),
                        Ok(Err(e)) => tracing::warn!(%lease, error = %e, "cannot renew the lease"),
                        Err(_) => break Stopped::Lost("renew deadline passed"),
                    }
                }
            }
        };
        if !matches!(stopped, Stopped::Finished) {
            // Waiting for the aborted task means the loop has been dropped before anything else.
            task.0.abort();
            let _ = (&mut task.0).await;
        }
        match stopped {
            Stopped::Lost(why) => {
                tracing::warn!(%lease, reason = why, "lost leadership; stopped the loop");
            }
            Stopped::Shutdown | Stopped::Finished => {
                match tokio::time::timeout(timing.renew_deadline, elector.release()).await {
                    Ok(Ok(true)) => tracing::info!(%lease, "released the lease"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::warn!(%lease, error = %e, "cannot release the lease"),
                    Err(_) => tracing::warn!(%lease, "releasing the lease timed out"),
                }
                return;
            }
        }
    }
}

//! Flags that bound what clients may cost: the connection limits of the API server and of the
//! agent's endpoint, and the watch history's size. Each is checked when parsed (0 and absurd
//! values are a CLI error naming the flag's range).

use crate::duration::parse_duration;
use clap::Args;
use std::time::Duration;

/// The API server's connections, for `up` and `server`.
#[derive(Args, Debug, Clone)]
pub struct ServerLimitArgs {
    /// How long a client has to send a whole request head before its connection is closed
    #[arg(long, default_value = "30s", value_parser = header_timeout)]
    pub request_header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (watches and log
    /// streams in flight are never idle)
    #[arg(long, default_value = "2m", value_parser = idle_timeout)]
    pub idle_connection_timeout: Duration,
    /// The most connections open at once that have not presented a valid token; more are
    /// closed at once
    #[arg(long, default_value_t = kumo_serve::Limits::DEFAULT_MAX_ANONYMOUS, value_parser = connection_count)]
    pub max_anonymous_connections: usize,
}

impl ServerLimitArgs {
    pub fn limits(&self) -> kumo_serve::Limits {
        kumo_serve::Limits {
            header_timeout: self.request_header_timeout,
            idle_timeout: self.idle_connection_timeout,
            max_anonymous: self.max_anonymous_connections,
        }
    }
}

/// The agent's endpoint (logs, exec), for `up` and `agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentLimitArgs {
    /// How long a client of the agent's endpoint has to send a whole request head
    #[arg(long, default_value = "30s", value_parser = header_timeout)]
    pub agent_request_header_timeout: Duration,
    /// How long a kept-alive connection to the agent's endpoint may wait for its next request
    #[arg(long, default_value = "2m", value_parser = idle_timeout)]
    pub agent_idle_connection_timeout: Duration,
    /// The most connections to the agent's endpoint open at once without the agent's token
    #[arg(long, default_value_t = kumo_serve::Limits::DEFAULT_MAX_ANONYMOUS, value_parser = connection_count)]
    pub agent_max_anonymous_connections: usize,
}

impl AgentLimitArgs {
    pub fn limits(&self) -> kumo_serve::Limits {
        kumo_serve::Limits {
            header_timeout: self.agent_request_header_timeout,
            idle_timeout: self.agent_idle_connection_timeout,
            max_anonymous: self.agent_max_anonymous_connections,
        }
    }
}

fn duration_within(
    text: &str,
    min: Duration,
    max: Duration,
    range: &str,
) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < min || d > max {
        return Err(format!("must be from {range}"));
    }
    Ok(d)
}

fn header_timeout(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_secs(1),
        Duration::from_secs(3600),
        "1s to 1h",
    )
}

fn idle_timeout(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
        "1s to 24h",
    )
}

/// `--heartbeat-interval`: 100ms to 1h (a zero interval cannot tick; a node silent for longer
/// than an hour is lost long before).
pub fn heartbeat_interval(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_millis(100),
        Duration::from_secs(3600),
        "100ms to 1h",
    )
}

/// `--node-credential-ttl`: long enough to rotate (at two thirds), at most a year.
pub fn node_credential_ttl(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_secs(3),
        Duration::from_secs(365 * 24 * 3600),
        "3s to 8760h",
    )
}

/// `--node-grace`: 1s to 24h (no grace would mark every node NotReady between heartbeats).
pub fn node_grace(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_secs(1),
        Duration::from_secs(24 * 3600),
        "1s to 24h",
    )
}

/// `--event-ttl`: 1s to 8760h.
pub fn event_ttl(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_secs(1),
        Duration::from_secs(365 * 24 * 3600),
        "1s to 8760h",
    )
}

/// `--backoff-base` and `--task-backoff`: 100ms to 1h (a zero base would restart a crashing
/// container or gang in a hot loop).
pub fn backoff_base(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_millis(100),
        Duration::from_secs(3600),
        "100ms to 1h",
    )
}

/// A period a loop ticks at (`--image-gc-interval`): 100ms to 24h (a ticker cannot tick at
/// zero).
pub fn tick_interval(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_millis(100),
        Duration::from_secs(24 * 3600),
        "100ms to 24h",
    )
}

/// `--image-gc-min-age`: 0 to 8760h.
pub fn image_gc_min_age(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::ZERO,
        Duration::from_secs(365 * 24 * 3600),
        "0s to 8760h",
    )
}

/// `--etcd-compaction-interval`: 0 turns compaction off (as kube-apiserver's), else 1s to
/// 8760h.
pub fn compaction_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Ok(d);
    }
    duration_within(
        text,
        Duration::from_secs(1),
        Duration::from_secs(365 * 24 * 3600),
        "1s to 8760h, or 0 for none",
    )
}

/// `--tls-san`: an IP address or a DNS name (lower-case, as a certificate names it).
pub fn tls_san(text: &str) -> Result<String, String> {
    if text.parse::<std::net::IpAddr>().is_ok() || kumo_api::validation::is_dns_subdomain(text) {
        Ok(text.to_string())
    } else {
        Err("must be an IP address or a DNS name (lower-case letters, digits, '-' and '.')".into())
    }
}

fn count_within(text: &str, max: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {max}")),
    }
}

fn connection_count(text: &str) -> Result<usize, String> {
    count_within(text, 1_000_000)
}

/// `--watch-window`: events kept for watches to resume from.
pub fn watch_window(text: &str) -> Result<usize, String> {
    count_within(text, 10_000_000)
}

/// `--watch-window-bytes`: a size (`64Mi`, `1Gi`, `500000000`) from 1Mi to 64Gi.
pub fn watch_window_bytes(text: &str) -> Result<usize, String> {
    const RANGE: &str = "must be a size from 1Mi to 64Gi, e.g. 64Mi";
    let q = kumo_api::Quantity::parse(text).map_err(|_| RANGE.to_string())?;
    let bytes = q.units_ceil();
    if !((1 << 20)..=(64 << 30)).contains(&bytes) {
        return Err(RANGE.into());
    }
    usize::try_from(bytes).map_err(|_| RANGE.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: PartialEq + std::fmt::Debug>(
        parse: fn(&str) -> Result<T, String>,
        input: &str,
        expected: Result<T, &str>,
    ) {
        match (parse(input), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{input}: {e}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn bounds() {
        let secs = Duration::from_secs;
        check(header_timeout, "30s", Ok(secs(30)));
        check(header_timeout, "0s", Err("must be from 1s to 1h"));
        check(header_timeout, "2h", Err("must be from 1s to 1h"));
        check(
            header_timeout,
            "99999999999999999999h",
            Err("invalid duration"),
        );
        check(idle_timeout, "2m", Ok(secs(120)));
        check(heartbeat_interval, "1s", Ok(secs(1)));
        check(heartbeat_interval, "0s", Err("must be from 100ms to 1h"));
        check(
            heartbeat_interval,
            "9999999h",
            Err("must be from 100ms to 1h"),
        );
        check(node_credential_ttl, "720h", Ok(secs(720 * 3600)));
        check(node_credential_ttl, "0s", Err("must be from 3s to 8760h"));
        check(
            node_credential_ttl,
            "9999999999h",
            Err("must be from 3s to 8760h"),
        );
        check(
            tls_san,
            "kumo.example.com",
            Ok("kumo.example.com".to_string()),
        );
        check(tls_san, "10.0.0.7", Ok("10.0.0.7".to_string()));
        check(tls_san, "::1", Ok("::1".to_string()));
        for bad in ["", "a b", "*", "Upper.example.com"] {
            check(tls_san, bad, Err("must be an IP address or a DNS name"));
        }
        check(idle_timeout, "500ms", Err("must be from 1s to 24h"));
        check(node_grace, "3s", Ok(secs(3)));
        check(node_grace, "0s", Err("must be from 1s to 24h"));
        check(node_grace, "25h", Err("must be from 1s to 24h"));
        check(event_ttl, "2s", Ok(secs(2)));
        check(event_ttl, "0s", Err("must be from 1s to 8760h"));
        check(backoff_base, "200ms", Ok(Duration::from_millis(200)));
        check(backoff_base, "0s", Err("must be from 100ms to 1h"));
        check(backoff_base, "99999h", Err("must be from 100ms to 1h"));
        check(tick_interval, "5m", Ok(secs(300)));
        check(tick_interval, "300ms", Ok(Duration::from_millis(300)));
        check(tick_interval, "0s", Err("must be from 100ms to 24h"));
        check(image_gc_min_age, "0s", Ok(Duration::ZERO));
        check(
            image_gc_min_age,
            "9999999h",
            Err("must be from 0s to 8760h"),
        );
        check(compaction_interval, "0s", Ok(Duration::ZERO));
        check(compaction_interval, "5m", Ok(secs(300)));
        check(
            compaction_interval,
            "500ms",
            Err("1s to 8760h, or 0 for none"),
        );
        check(
            compaction_interval,
            "99999999h",
            Err("1s to 8760h, or 0 for none"),
        );
        check(connection_count, "1024", Ok(1024));
        check(connection_count, "0", Err("from 1 to 1000000"));
        check(connection_count, "-1", Err("from 1 to 1000000"));
        check(connection_count, "1000001", Err("from 1 to 1000000"));
        check(
            connection_count,
            "18446744073709551616",
            Err("from 1 to 1000000"),
        );
        check(watch_window, "10000", Ok(10_000));
        check(watch_window, "0", Err("from 1 to 10000000"));
        check(watch_window_bytes, "64Mi", Ok(64 << 20));
        check(watch_window_bytes, "1Gi", Ok(1 << 30));
        check(watch_window_bytes, "1048576", Ok(1 << 20));
        check(watch_window_bytes, "0", Err("from 1Mi to 64Gi"));
        check(watch_window_bytes, "1Ki", Err("from 1Mi to 64Gi"));
        check(watch_window_bytes, "65Gi", Err("from 1Mi to 64Gi"));
        check(watch_window_bytes, "1Ei", Err("from 1Mi to 64Gi"));
        check(watch_window_bytes, "lots", Err("from 1Mi to 64Gi"));
    }
}

//! Which store the control plane keeps its state in: the embedded redb file (default) or etcd
//! (`--store etcd://HOST:PORT[,HOST:PORT…]`), and the flags that reach etcd.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;

/// Flags choosing and reaching the store, shared by `up` and `server`.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Where the state lives: etcd://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...] for etcd
    /// (default: the embedded store in the data dir); from the environment keeps a password
    /// out of the process list
    // Parsed in `open`, not by clap: clap's error would print the value, password included.
    #[arg(long = "store", env = "KUMO_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// CA certificate (PEM) that signed etcd's certificate; etcd is then reached over TLS
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-cert-auth
    #[arg(long, requires = "etcd_keyfile")]
    pub etcd_certfile: Option<PathBuf>,
    /// Key (PEM) of --etcd-certfile
    #[arg(long, requires = "etcd_certfile")]
    pub etcd_keyfile: Option<PathBuf>,
    /// How often etcd's history is compacted (to the revision seen one interval earlier; 0
    /// for never, when something else compacts it)
    #[arg(long, default_value = "5m", value_parser = super::limits::compaction_interval)]
    pub etcd_compaction_interval: Duration,
}

/// A parsed `--store` value.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// `HOST:PORT`, in the order given.
    pub hosts: Vec<String>,
    pub user: Option<(String, String)>,
}

/// Never prints the password.
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUrl")
            .field("hosts", &self.hosts)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// Parses `etcd://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]`.
pub fn parse_store(text: &str) -> Result<StoreUrl, String> {
    let rest = text.strip_prefix("etcd://").ok_or_else(|| {
        // Only the scheme is named: the rest may hold a password.
        let scheme = text.split_once("://").map_or("", |(scheme, _)| scheme);
        format!("unsupported store {scheme:?}: expected etcd://HOST:PORT[,HOST:PORT...]")
    })?;
    let rest = rest.trim_end_matches('/');
    let (user, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = userinfo
                .split_once(':')
                .ok_or("etcd://USER:PASSWORD@...: the password is missing")?;
            if user.is_empty() {
                return Err("etcd://USER:PASSWORD@...: the user is empty".into());
            }
            (Some((user.to_owned(), password.to_owned())), hosts)
        }
        None => (None, rest),
    };
    let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    for host in &hosts {
        let port = host.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
        match port {
            Some((h, Ok(p))) if !h.is_empty() && !h.contains('/') && p > 0 => {}
            _ => return Err(format!("etcd endpoint {host:?}: expected HOST:PORT")),
        }
    }
    Ok(StoreUrl { hosts, user })
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
}

/// Opens the store: redb in `data_dir`, or etcd as the flags say (a clear error naming the
/// endpoints when it does not answer within a few seconds).
pub async fn open(
    args: &StoreArgs,
    data_dir: &Path,
    window: kumo_store::WatchWindow,
) -> anyhow::Result<Arc<dyn kumo_store::Store>> {
    let Some(text) = &args.store else {
        let path = data_dir.join("store.redb");
        let store = kumo_store::RedbStore::open(&path, window).map_err(|e| {
            anyhow!(
                "cannot open the store {}: {e} (is another kumo using this data dir?)",
                path.display()
            )
        })?;
        return Ok(Arc::new(store));
    };
    let url = parse_store(text).map_err(|e| anyhow!("--store: {e}"))?;
    let tls = args.etcd_cafile.is_some() || args.etcd_certfile.is_some();
    let scheme = if tls { "https" } else { "http" };
    let mut config = kumo_store::EtcdConfig::new(
        url.hosts
            .iter()
            .map(|host| format!("{scheme}://{host}"))
            .collect(),
    );
    config.user = url.user.clone();
    if let Some(ca) = &args.etcd_cafile {
        config.ca_pem = Some(read(ca, "--etcd-cafile")?);
    }
    if let (Some(cert), Some(key)) = (&args.etcd_certfile, &args.etcd_keyfile) {
        config.identity_pem = Some((read(cert, "--etcd-certfile")?, read(key, "--etcd-keyfile")?));
    }
    let store = kumo_store::EtcdStore::connect(&config, window)
        .await
        .map_err(|e| anyhow!("cannot open the store: {e}"))?;
    let store = Arc::new(store);
    if !args.etcd_compaction_interval.is_zero() {
        store.compact_periodically(args.etcd_compaction_interval);
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hosts and the user and password a `--store` value gives, or the error.
    type Parsed<'a> = Result<(&'a [&'a str], Option<(&'a str, &'a str)>), &'a str>;

    fn check(text: &str, expected: Parsed<'_>) {
        let got = parse_store(text);
        let expected = expected
            .map(|(hosts, user)| StoreUrl {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                user: user.map(|(u, p)| (u.to_owned(), p.to_owned())),
            })
            .map_err(str::to_owned);
        assert_eq!(got, expected, "{text}");
    }

    #[test]
    fn store_urls() {
        check("etcd://127.0.0.1:2379", Ok((&["127.0.0.1:2379"], None)));
        check(
            "etcd://a:2379,b:2379,c:2379/",
            Ok((&["a:2379", "b:2379", "c:2379"], None)),
        );
        check(
            "etcd://kumo:s3cr:t@a:2379,b:2379",
            Ok((&["a:2379", "b:2379"], Some(("kumo", "s3cr:t")))),
        );
        check(
            "http://u:pw@a:2379",
            Err("unsupported store \"http\": expected etcd://HOST:PORT[,HOST:PORT...]"),
        );
        check(
            "a:2379",
            Err("unsupported store \"\": expected etcd://HOST:PORT[,HOST:PORT...]"),
        );
        check("etcd://a", Err("etcd endpoint \"a\": expected HOST:PORT"));
        check(
            "etcd://a:2379,",
            Err("etcd endpoint \"\": expected HOST:PORT"),
        );
        check(
            "etcd://a:0",
            Err("etcd endpoint \"a:0\": expected HOST:PORT"),
        );
        check(
            "etcd://kumo@a:2379",
            Err("etcd://USER:PASSWORD@...: the password is missing"),
        );
        check(
            "etcd://:pw@a:2379",
            Err("etcd://USER:PASSWORD@...: the user is empty"),
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let url = parse_store("etcd://kumo:hunter2@a:2379").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}

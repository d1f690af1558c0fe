//! The control plane's certificates in `<data-dir>/pki` (0700, every file 0600): the cluster CA
//! (`ca.crt`, `ca.key`, made on first start), the API server's serving certificate
//! (`apiserver.crt/.key`, made again when its names change or it expires within 30 days) and
//! its client certificate for calling agents (`apiserver-kubelet-client.crt/.key`). And, for
//! `kumo agent --ca-cert-hash`, fetching the CA from the server pinned by its hash.

use super::private;
use anyhow::{anyhow, Context};
use kumo_pki::Ca;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A leaf that expires within this is made again at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The API server's client certificate towards agents: who it is to them.
pub const APISERVER_CLIENT_CN: &str = "kumo-apiserver";

pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

pub fn ca_path(data_dir: &Path) -> PathBuf {
    pki_dir(data_dir).join("ca.crt")
}

/// The control plane's TLS, loaded or made.
pub struct ControlPlaneTls {
    pub cluster: kumo_apiserver::ClusterTls,
    pub ca_pem: String,
}

/// Loads the CA and the API server's certificates from `<data_dir>/pki`, making what is
/// missing, stale (expiring within 30 days) or for other names than `names`.
pub fn load_or_make(data_dir: &Path, names: &[String]) -> anyhow::Result<ControlPlaneTls> {
    let dir = pki_dir(data_dir);
    private::dir(&dir)?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (ca, fresh) = match (ca_crt.exists(), ca_key.exists()) {
        (true, true) => {
            private::file(&ca_key)?;
            let ca = Ca::from_pem(&read(&ca_crt)?, &read(&ca_key)?)
                .with_context(|| format!("the cluster CA in {} is not usable", dir.display()))?;
            (ca, false)
        }
        (false, false) => {
            let ca = Ca::generate().context("cannot make the cluster CA")?;
            write_private(&ca_key, &ca.key_pem())?;
            write_private(&ca_crt, ca.cert_pem())?;
            (ca, true)
        }
        _ => {
            return Err(anyhow!(
                "{} holds only one of ca.crt and ca.key: restore the other (agents trust this CA), or remove both to make a new CA",
                dir.display()
            ))
        }
    };

    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let serving = leaf(
        &dir,
        "apiserver",
        fresh,
        |cert| {
            let have = kumo_pki::subject_alt_names(cert)?;
            Ok(have.iter().map(String::as_str).collect::<BTreeSet<_>>() == wanted)
        },
        || ca.issue_server(names, kumo_pki::LEAF_VALIDITY),
    )?;
    let client = leaf(
        &dir,
        "apiserver-kubelet-client",
        fresh,
        |_| Ok(true),
        || {
            ca.issue_client(
                APISERVER_CLIENT_CN,
                &[kumo_api::user::GROUP_MASTERS],
                kumo_pki::LEAF_VALIDITY,
            )
        },
    )?;

    // The CA after the leaf: a client can then pin it by its hash (`--ca-cert-hash`).
    let chain = format!("{}{}", serving.0, ca.cert_pem());
    let cluster = kumo_apiserver::ClusterTls {
        serving: kumo_pki::server_config(&chain, &serving.1, None)?,
        agent_client: kumo_pki::client_config(ca.cert_pem(), Some((&client.0, &client.1)))?,
        ca: Arc::new(ca),
    };
    Ok(ControlPlaneTls {
        ca_pem: cluster.ca.cert_pem().to_string(),
        cluster,
    })
}

/// `<name>.crt` and `<name>.key` in `dir` (PEM texts): kept when the CA is not new, both are
/// there, the certificate still `fits` and it does not expire within [`RENEW_BEFORE`]; made
/// by `issue` and written otherwise.
fn leaf(
    dir: &Path,
    name: &str,
    fresh_ca: bool,
    fits: impl Fn(&str) -> Result<bool, kumo_pki::PkiError>,
    issue: impl Fn() -> Result<kumo_pki::Issued, kumo_pki::PkiError>,
) -> anyhow::Result<(String, String)> {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    if !fresh_ca && crt.exists() && key.exists() {
        private::file(&key)?;
        let cert = read(&crt)?;
        let current = kumo_pki::not_after(&cert)
            .map(|t| t > SystemTime::now() + RENEW_BEFORE)
            .unwrap_or(false)
            && fits(&cert).unwrap_or(false);
        if current {
            return Ok((cert, read(&key)?));
        }
        tracing::info!(cert = %crt.display(), "the certificate expires soon or names other addresses: making it again");
    }
    let issued = issue().with_context(|| format!("cannot make {}", crt.display()))?;
    write_private(&key, &issued.key_pem)?;
    write_private(&crt, &issued.cert_pem)?;
    Ok((issued.cert_pem, issued.key_pem))
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Replaces `path` with `text`, 0600 from its first byte.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    private::create_file(&tmp, text)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The names of the API server's certificate: the listen address (for 0.0.0.0 or [::]: the
/// loopback addresses, `localhost`, the hostname and the host's interface addresses; for a
/// loopback address `localhost` too), then `extra` (`--tls-san`). Sorted, without repeats.
pub fn serving_names(listen: SocketAddr, hostname: &str, extra: &[String]) -> Vec<String> {
    let mut names = BTreeSet::new();
    let ip = listen.ip();
    if ip.is_unspecified() {
        names.extend(["127.0.0.1", "::1", "localhost"].map(String::from));
        names.insert(hostname.to_string());
        names.extend(interface_addresses().iter().map(IpAddr::to_string));
    } else {
        names.insert(ip.to_string());
        if ip.is_loopback() {
            names.insert("localhost".to_string());
        }
    }
    names.extend(extra.iter().map(|n| n.trim().to_string()));
    names.retain(|n| !n.is_empty());
    names.into_iter().collect()
}

/// The host's own addresses, from procfs (IPv4 LOCAL routes of `fib_trie`, global IPv6 of
/// `if_inet6`); none when procfs cannot be read.
fn interface_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        found.extend(local_ipv4(&trie));
    }
    if let Ok(inet6) = std::fs::read_to_string("/proc/net/if_inet6") {
        found.extend(global_ipv6(&inet6));
    }
    found
}

/// `|-- 10.0.0.5` followed by `/32 host LOCAL`: an address of this host.
fn local_ipv4(fib_trie: &str) -> Vec<IpAddr> {
    let lines: Vec<&str> = fib_trie.lines().collect();
    let mut found: Vec<IpAddr> = lines
        .windows(2)
        .filter(|w| w[1].trim() == "/32 host LOCAL")
        .filter_map(|w| w[0].trim().trim_start_matches("|--").trim().parse().ok())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Addresses of `if_inet6` (32 hex digits first) that are not link-local (those need a scope).
fn global_ipv6(if_inet6: &str) -> Vec<IpAddr> {
    if_inet6
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(std::net::Ipv6Addr::from)
        .filter(|a| a.segments()[0] & 0xffc0 != 0xfe80)
        .map(IpAddr::V6)
        .collect()
}

/// The CA of the server at `url`, trusted because a certificate the server sends has `hash`
/// (and its chain verifies against it for the URL's host): kubeadm's discovery by CA hash.
pub async fn fetch_pinned_ca(url: &str, hash: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("--server {url:?} is not a URL"))?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("--server {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let pinned = kumo_pki::PinnedCa::new(hash);
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .with_context(|| format!("--server {url:?}: {host:?} is not a host name"))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| anyhow!("cannot reach {url}: no answer within 10s"))?
    .with_context(|| format!("cannot reach {url}"))?;
    tokio_rustls::TlsConnector::from(pinned.client_config()?)
        .connect(name, tcp)
        .await
        .with_context(|| {
            format!("cannot trust {url} by --ca-cert-hash {hash} (is it the hash `kumo server` printed?)")
        })?;
    pinned
        .found_pem()
        .ok_or_else(|| anyhow!("{url} sent no certificate with the hash {hash}"))
}

/// Checks the form of a `--ca-cert-hash`: `sha256:` and 64 hex digits.
pub fn parse_ca_cert_hash(text: &str) -> Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    match lower.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(lower),
        _ => Err(format!(
            "{text:?} is not sha256:<64 hex digits> (the hash `kumo server` prints)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_names(listen: &str, extra: &[&str], expected: &[&str]) {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            serving_names(listen.parse().unwrap(), "host-a", &extra),
            expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "{listen}"
        );
    }

    #[test]
    fn the_serving_names_follow_the_listen_address() {
        check_names("127.0.0.1:7400", &[], &["127.0.0.1", "localhost"]);
        check_names(
            "10.1.2.3:7400",
            &["api.example", " "],
            &["10.1.2.3", "api.example"],
        );
        check_names("[::1]:7400", &["::1"], &["::1", "localhost"]);
        let any = serving_names("0.0.0.0:7400".parse().unwrap(), "host-a", &[]);
        for name in ["127.0.0.1", "::1", "localhost", "host-a"] {
            assert!(any.contains(&name.to_string()), "{any:?}");
        }
    }

    #[test]
    fn interface_addresses_from_procfs() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     |-- 10.0.0.5\n        /32 host LOCAL\n     |-- 10.0.0.255\n        /32 link BROADCAST\nLocal:\n     |-- 10.0.0.5\n        /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        assert_eq!(
            local_ipv4(trie),
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\n20010db8000000000000000000000005 02 40 00 80     eth0\n";
        assert_eq!(
            global_ipv6(inet6),
            vec![
                "::1".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn ca_cert_hashes() {
        let good = format!("sha256:{}", "aB".repeat(32));
        assert_eq!(parse_ca_cert_hash(&good).unwrap(), good.to_lowercase());
        for bad in [
            "",
            "sha256:",
            "md5:00",
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(parse_ca_cert_hash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_pki_is_made_once_and_remade_when_the_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["127.0.0.1".to_string()];
        let first = load_or_make(dir.path(), &names).unwrap();
        let pki = pki_dir(dir.path());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki), 0o700);
        for f in [
            "ca.crt",
            "ca.key",
            "apiserver.crt",
            "apiserver.key",
            "apiserver-kubelet-client.crt",
            "apiserver-kubelet-client.key",
        ] {
            assert_eq!(mode(&pki.join(f)), 0o600, "{f}");
        }
        let serving = read(&pki.join("apiserver.crt")).unwrap();
        // Again with the same names: nothing is made.
        let again = load_or_make(dir.path(), &names).unwrap();
        assert_eq!(again.ca_pem, first.ca_pem);
        assert_eq!(read(&pki.join("apiserver.crt")).unwrap(), serving);
        // Another name: a new serving certificate from the same CA.
        let more = vec!["127.0.0.1".to_string(), "api.example".to_string()];
        let third = load_or_make(dir.path(), &more).unwrap();
        assert_eq!(third.ca_pem, first.ca_pem);
        let remade = read(&pki.join("apiserver.crt")).unwrap();
        assert_ne!(remade, serving);
        assert_eq!(kumo_pki::subject_alt_names(&remade).unwrap(), more);
        // A serving certificate that expires within 30 days is made again; so is a missing
        // client certificate.
        let ca = Ca::from_pem(&first.ca_pem, &read(&pki.join("ca.key")).unwrap()).unwrap();
        let short = ca
            .issue_server(&more, Duration::from_secs(29 * 24 * 3600))
            .unwrap();
        write_private(&pki.join("apiserver.crt"), &short.cert_pem).unwrap();
        write_private(&pki.join("apiserver.key"), &short.key_pem).unwrap();
        std::fs::remove_file(pki.join("apiserver-kubelet-client.crt")).unwrap();
        load_or_make(dir.path(), &more).unwrap();
        let renewed = read(&pki.join("apiserver.crt")).unwrap();
        assert_ne!(renewed, short.cert_pem);
        assert!(
            kumo_pki::not_after(&renewed).unwrap() > SystemTime::now() + RENEW_BEFORE,
            "renewed for long"
        );
        assert!(pki.join("apiserver-kubelet-client.crt").exists());
        // Half a CA is refused rather than replaced.
        std::fs::remove_file(pki.join("ca.key")).unwrap();
        let err = load_or_make(dir.path(), &names).err().unwrap().to_string();
        assert!(err.contains("only one of ca.crt and ca.key"), "{err}");
    }
}

//! The CA's certificates as peers see them: rustls' own verifiers decide.

use super::*;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn der(pem: &str) -> CertificateDer<'static> {
    certs_from_pem("test", pem).unwrap().remove(0)
}

/// Whether `cert_pem` verifies against `ca` as a server for `name`, and as a client.
fn verdicts(ca: &Ca, cert_pem: &str, name: &str) -> (Result<(), String>, Result<(), String>) {
    let roots = Arc::new(roots("test", ca.cert_pem()).unwrap());
    let cert = der(cert_pem);
    let server = WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider())
        .build()
        .unwrap()
        .verify_server_cert(
            &cert,
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(drop)
        .map_err(|e| e.to_string());
    let client = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .unwrap()
        .verify_client_cert(&cert, &[], UnixTime::now())
        .map(drop)
        .map_err(|e| e.to_string());
    (server, client)
}

fn check(ca: &Ca, cert_pem: &str, name: &str, server_ok: bool, client_ok: bool) {
    let (server, client) = verdicts(ca, cert_pem, name);
    assert_eq!(
        server.is_ok(),
        server_ok,
        "as a server for {name}: {server:?}"
    );
    assert_eq!(client.is_ok(), client_ok, "as a client: {client:?}");
}

#[test]
fn leaves_verify_for_their_usage_and_names_only() {
    let ca = Ca::generate().unwrap();
    let other = Ca::generate().unwrap();
    let names = vec!["node-a".to_string(), "127.0.0.1".to_string()];
    let server = ca.issue_server(&names, DAY).unwrap();
    let client = ca
        .issue_client("kumo-apiserver", &["system:masters"], DAY)
        .unwrap();
    let foreign = other.issue_server(&names, DAY).unwrap();
    check(&ca, &server.cert_pem, "node-a", true, false);
    check(&ca, &server.cert_pem, "127.0.0.1", true, false);
    check(&ca, &server.cert_pem, "node-b", false, false);
    check(&ca, &client.cert_pem, "node-a", false, true);
    check(&ca, &foreign.cert_pem, "node-a", false, false);
    check(&other, &foreign.cert_pem, "node-a", true, false);
}

#[test]
fn a_signed_csr_carries_only_the_names_the_ca_chose() {
    let ca = Ca::generate().unwrap();
    let (csr, _key) = new_csr("evil-node").unwrap();
    let cert = ca
        .sign_csr(&csr, &["node-a".to_string()], Usage::Server, DAY)
        .unwrap();
    assert_eq!(subject_alt_names(&cert).unwrap(), vec!["node-a"]);
    check(&ca, &cert, "node-a", true, false);
    check(&ca, &cert, "evil-node", false, false);
}

#[test]
fn bad_csrs_are_refused() {
    let ca = Ca::generate().unwrap();
    let (csr, _) = new_csr("n").unwrap();
    // One byte of the signed body changed: the signature no longer matches.
    let mut tampered = csr.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in ["", "not pem", tampered.as_str(), ca.cert_pem()] {
        let refused = ca.sign_csr(bad, &["n".to_string()], Usage::Server, DAY);
        assert!(
            matches!(refused, Err(PkiError::Csr(_))),
            "{bad:?}: {refused:?}"
        );
    }
}

#[test]
fn expiry_and_names_read_back() {
    let ca = Ca::generate().unwrap();
    let issued = ca
        .issue_server(&["localhost".into(), "::1".into()], 90 * DAY)
        .unwrap();
    let read = not_after(&issued.cert_pem).unwrap();
    assert_eq!(read, issued.not_after);
    let left = read.duration_since(SystemTime::now()).unwrap();
    assert!(left > 89 * DAY && left <= 90 * DAY, "{left:?}");
    assert_eq!(
        subject_alt_names(&issued.cert_pem).unwrap(),
        vec!["localhost", "::1"]
    );
    let ca_left = not_after(ca.cert_pem())
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(ca_left > CA_VALIDITY - DAY, "{ca_left:?}");
}

#[test]
fn the_ca_reads_back_and_still_signs() {
    let ca = Ca::generate().unwrap();
    let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    let issued = again.issue_server(&["n".into()], DAY).unwrap();
    check(&ca, &issued.cert_pem, "n", true, false);
    assert!(Ca::from_pem("x", &ca.key_pem()).is_err());
    assert!(Ca::from_pem(ca.cert_pem(), "x").is_err());
}

#[test]
fn the_hash_is_of_the_certificate_der() {
    let ca = Ca::generate().unwrap();
    let hash = ca_cert_hash(ca.cert_pem()).unwrap();
    assert_eq!(hash, der_hash(&der(ca.cert_pem())));
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    assert_ne!(
        hash,
        ca_cert_hash(Ca::generate().unwrap().cert_pem()).unwrap()
    );
}

#[test]
fn a_pinned_hash_trusts_the_ca_in_the_chain() {
    let ca = Ca::generate().unwrap();
    let leaf = ca.issue_server(&["127.0.0.1".into()], DAY).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let pinned = PinnedCa::new(&ca_cert_hash(ca.cert_pem()).unwrap());
    let chain = [der(ca.cert_pem())];
    let leaf = der(&leaf.cert_pem);
    // Without the CA in the chain the hash has nothing to match.
    assert!(pinned
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .is_err());
    assert!(pinned.found_pem().is_none());
    pinned
        .verify_server_cert(&leaf, &chain, &name, &[], UnixTime::now())
        .unwrap();
    assert_eq!(pinned.found_pem().as_deref(), Some(ca.cert_pem()));
    let wrong = PinnedCa::new(&ca_cert_hash(Ca::generate().unwrap().cert_pem()).unwrap());
    assert!(wrong
        .verify_server_cert(&leaf, &chain, &name, &[], UnixTime::now())
        .is_err());
}

#[test]
fn configs_build_from_what_the_ca_issues() {
    let ca = Ca::generate().unwrap();
    let server = ca.issue_server(&["n".into()], DAY).unwrap();
    let chain = format!("{}{}", server.cert_pem, ca.cert_pem());
    server_config(&chain, &server.key_pem, Some(ca.cert_pem())).unwrap();
    server_config(&chain, &server.key_pem, None).unwrap();
    let client = ca.issue_client("c", &[], DAY).unwrap();
    client_config(ca.cert_pem(), Some((&client.cert_pem, &client.key_pem))).unwrap();
    client_config(ca.cert_pem(), None).unwrap();
    // A key that is not the certificate's.
    assert!(server_config(&chain, &client.key_pem, None).is_err());
    assert!(client_config("nope", None).is_err());
}

/// The certificate a server with `server` presents to a client with `client` for `name`, or
/// why the handshake failed (in memory, both sides driven until done).
fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<CertificateDer<'static>, String> {
    let mut c =
        rustls::ClientConnection::new(client, ServerName::try_from(name.to_string()).unwrap())
            .map_err(|e| e.to_string())?;
    let mut s = rustls::ServerConnection::new(server).map_err(|e| e.to_string())?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        s.read_tls(&mut buf.as_slice()).unwrap();
        s.process_new_packets().map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        c.read_tls(&mut buf.as_slice()).unwrap();
        c.process_new_packets().map_err(|e| e.to_string())?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(c.peer_certificates().unwrap()[0].clone().into_owned());
        }
    }
    Err("the handshake did not finish".into())
}

#[test]
fn a_rotated_certificate_is_served_from_the_next_handshake() {
    let ca = Ca::generate().unwrap();
    let first = ca.issue_server(&["n".into()], DAY).unwrap();
    let second = ca.issue_server(&["n".into()], DAY).unwrap();
    let resolver = Arc::new(RotatingCert::from_pem(&first.cert_pem, &first.key_pem).unwrap());
    let server = server_config_with(
        Arc::clone(&resolver) as Arc<dyn rustls::server::ResolvesServerCert>,
        None,
    )
    .unwrap();
    let client = client_config(ca.cert_pem(), None).unwrap();
    assert_eq!(
        handshake(Arc::clone(&server), Arc::clone(&client), "n"),
        Ok(der(&first.cert_pem))
    );
    resolver.replace(&second.cert_pem, &second.key_pem).unwrap();
    // A new client (the first one would resume its session, which needs no certificate).
    let client = client_config(ca.cert_pem(), None).unwrap();
    assert_eq!(handshake(server, client, "n"), Ok(der(&second.cert_pem)));
    // A key that is not the certificate's is refused, and the current one stays.
    assert!(resolver.replace(&second.cert_pem, &first.key_pem).is_err());
}

#[test]
fn a_server_requiring_client_certificates_takes_only_the_cas_clients() {
    let ca = Ca::generate().unwrap();
    let other = Ca::generate().unwrap();
    let leaf = ca.issue_server(&["n".into()], DAY).unwrap();
    let server = server_config(&leaf.cert_pem, &leaf.key_pem, Some(ca.cert_pem())).unwrap();
    let client = ca
        .issue_client("kumo-apiserver", &["system:masters"], DAY)
        .unwrap();
    let stranger = other.issue_client("kumo-apiserver", &[], DAY).unwrap();
    let cases: [(&str, Option<&Issued>, bool); 4] = [
        ("the CA's client", Some(&client), true),
        ("no certificate", None, false),
        ("another CA's client", Some(&stranger), false),
        ("the CA's server certificate", Some(&leaf), false),
    ];
    for (what, identity, ok) in cases {
        let config = client_config(
            ca.cert_pem(),
            identity.map(|i| (i.cert_pem.as_str(), i.key_pem.as_str())),
        )
        .unwrap();
        let got = handshake(Arc::clone(&server), config, "n");
        assert_eq!(got.is_ok(), ok, "{what}: {got:?}");
    }
}

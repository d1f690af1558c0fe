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

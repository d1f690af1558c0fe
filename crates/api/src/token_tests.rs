use super::*;
use crate::validation::join_errors;

fn at(secs: i64) -> Time {
    chrono::DateTime::from_timestamp(secs, 0).unwrap()
}

fn check(token: Token, expected: &str) {
    let mut errors = Errors::default();
    validate_token(&token, &mut errors);
    let got = match errors.into_result() {
        Ok(()) => "ok".to_string(),
        Err(e) => join_errors(&e),
    };
    assert_eq!(got, expected, "{token:?}");
}

fn login(user: &str, groups: &[&str]) -> Token {
    Token {
        metadata: ObjectMeta {
            name: "t".into(),
            ..Default::default()
        },
        spec: TokenSpec {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn hashes_are_sha256_hex() {
    assert_eq!(
        hash_secret("abc"),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(format_secret(&[0xab; 32]), "ab".repeat(32));
}

#[test]
fn validation_names_the_field() {
    check(login("alice", &["ml-team"]), "ok");
    check(
        login("", &[]),
        "spec.user: Required value: the user the token authenticates as",
    );
    check(
        login("alice", &["ml team", ""]),
        "spec.groups[0]: Invalid value: \"ml team\": must be at most 253 printable characters without white space or ',', \
         spec.groups[1]: Invalid value: \"\": must be at most 253 printable characters without white space or ','",
    );
    check(
        login("system:node:n1", &["system:nodes"]),
        "spec.user: Invalid value: \"system:node:n1\": node and bootstrap users are given only to node and join tokens, \
         spec.groups: Invalid value: system:nodes and system:bootstrappers are given only to node and join tokens",
    );
    let mut ttl = login("alice", &[]);
    ttl.spec.ttl_seconds = Some(0);
    check(
        ttl.clone(),
        "spec.ttlSeconds: Invalid value: 0: must be between 1 and 31536000, inclusive",
    );
    ttl.spec.ttl_seconds = Some(i64::MAX);
    check(
        ttl,
        "spec.ttlSeconds: Invalid value: 9223372036854775807: must be between 1 and 31536000, inclusive",
    );
    let mut uses = login("alice", &[]);
    uses.spec.usage_limit = Some(2);
    check(
        uses,
        "spec.usageLimit: Forbidden: only join tokens count uses",
    );
}

#[test]
fn join_and_node_tokens_carry_their_own_identities() {
    check(Token::join("t", 3600, 1), "ok");
    let mut bad = Token::join("t", 3600, 0);
    bad.spec.user = "alice".into();
    bad.spec.ttl_seconds = None;
    check(
        bad,
        "spec.user: Invalid value: \"alice\": a join token's user is \"system:bootstrap:t\", \
         spec.ttlSeconds: Required value: a join token must expire (give ttlSeconds or expirationTimestamp), \
         spec.usageLimit: Invalid value: 0: must be between 1 and 1000, inclusive",
    );
    check(Token::node("n", "node-1", at(100)), "ok");
    let mut node = Token::node("n", "Bad_Node", at(100));
    node.spec.groups.push("system:masters".into());
    check(
        node,
        "spec.user: Invalid value: \"system:node:Bad_Node\": a node token's user is system:node:<node name>, \
         spec.groups: Invalid value: a node token's groups are [system:nodes]",
    );
}

fn check_join(token: &Token, now: i64, expected: Result<i64, &str>) {
    let got = use_join_token(token, at(now))
        .map(|t| t.usage_count())
        .map_err(|e| e.to_string());
    assert_eq!(got, expected.map_err(str::to_string));
}

#[test]
fn a_join_token_is_used_up_to_its_limit_before_it_expires() {
    let mut t = Token::join("j", 60, 2);
    t.spec.expiration_timestamp = Some(at(1000));
    check_join(&t, 999, Ok(1));
    let once = use_join_token(&t, at(0)).unwrap();
    check_join(&once, 999, Ok(2));
    let twice = use_join_token(&once, at(0)).unwrap();
    check_join(&twice, 999, Err("join token j is used up (2 of 2 uses)"));
    check_join(&t, 1000, Err("join token j expired"));
    check_join(
        &Token::node("n", "n1", at(5000)),
        0,
        Err("token n is not a join token"),
    );
    // No limit given: one use.
    let mut one = t.clone();
    one.spec.usage_limit = None;
    let used = use_join_token(&one, at(0)).unwrap();
    check_join(&used, 0, Err("join token j is used up (1 of 1 uses)"));
}

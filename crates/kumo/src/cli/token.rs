//! `kumo token create|ls|revoke`: the API's managed tokens. A secret is printed once, when
//! made; the server keeps only its hash, so `ls` never shows one.

use super::format::{age, human_duration, Table};
use super::{client, out};
use crate::duration::parse_duration;
use anyhow::anyhow;
use kumo_api::token::{TokenSpec, TokenType};
use kumo_api::{ObjectMeta, Token};
use kumo_client::{ClientConfig, ListParams};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token and print its secret (once): for a user, or with --join for a node
    Create(CreateArgs),
    /// List tokens (never their secrets)
    Ls,
    /// Delete a token: it is refused from then on (within a second)
    Revoke {
        /// The token's name
        name: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The token's name
    pub name: String,
    /// The user the token authenticates as
    #[arg(long, required_unless_present = "join", conflicts_with = "join")]
    pub user: Option<String>,
    /// The user's groups, comma-separated (RBAC binds roles to them)
    #[arg(long, value_delimiter = ',', conflicts_with = "join")]
    pub groups: Vec<String>,
    /// How long the token works (e.g. 24h; default: until revoked, or 1h for --join)
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// A join token: exchanged by `kumo agent --join` for a node credential
    #[arg(long)]
    pub join: bool,
    /// How many nodes a join token may join (default 1)
    #[arg(long)]
    pub uses: Option<i64>,
}

/// The default life of a join token, as short as a join needs.
const JOIN_TTL: Duration = Duration::from_secs(3600);

pub async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    super::finish(token(args).await)
}

async fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.connect)?;
    match args.command {
        TokenCommand::Create(c) => {
            let wanted = token_of(&c)?;
            let made: Token = client.create(&wanted).await?;
            let secret = made
                .status
                .as_ref()
                .and_then(|s| s.token.clone())
                .ok_or_else(|| anyhow!("the server's answer holds no secret"))?;
            // The join command pins the cluster CA the CLI itself trusts.
            let config = ClientConfig::resolve(args.connect.server.clone(), args.connect.token()?)
                .map_err(anyhow::Error::msg)?;
            let ca_hash = match config.ca_pem().map_err(anyhow::Error::msg)? {
                Some(pem) => Some(kumo_pki::ca_cert_hash(&pem)?),
                None => None,
            };
            // Every server the CLI knows, so that the agent fails over as the CLI does.
            let servers = client.servers().join(",");
            let join = JoinTarget {
                server: &servers,
                ca_hash: ca_hash.as_deref(),
            };
            for line in created_message(&made, &secret, &join) {
                out(line);
            }
        }
        TokenCommand::Ls => {
            let list = client.list::<Token>(None, &ListParams::default()).await?;
            print!("{}", table(&list.items, chrono::Utc::now()).render(true));
        }
        TokenCommand::Revoke { name } => {
            client.delete::<Token>("", &name, None).await?;
            out(format!("token {name} revoked"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The Token `create` asks for.
fn token_of(c: &CreateArgs) -> anyhow::Result<Token> {
    if c.uses.is_some() && !c.join {
        return Err(anyhow!(
            "--uses counts the nodes a join token joins: add --join"
        ));
    }
    let ttl = match (c.ttl, c.join) {
        (Some(t), _) => Some(t),
        (None, true) => Some(JOIN_TTL),
        (None, false) => None,
    };
    // Rounded up: a ttl of 500ms still lives a second.
    let ttl_seconds = ttl.map(|d| i64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(i64::MAX));
    if c.join {
        let mut t = Token::join(&c.name, ttl_seconds.unwrap_or(0), 1);
        // Unset, the server's default (one use) applies.
        t.spec.usage_limit = c.uses;
        return Ok(t);
    }
    Ok(Token {
        metadata: ObjectMeta {
            name: c.name.clone(),
            ..Default::default()
        },
        spec: TokenSpec {
            user: c.user.clone().unwrap_or_default(),
            groups: c.groups.iter().filter(|g| !g.is_empty()).cloned().collect(),
            type_: TokenType::Login,
            ttl_seconds,
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Where a joining node goes: the server, and the hash of its CA (`None` for plain HTTP).
pub struct JoinTarget<'a> {
    pub server: &'a str,
    pub ca_hash: Option<&'a str>,
}

/// The command that joins a node with `secret`, pinning the cluster CA by its hash.
pub fn join_command(to: &JoinTarget, secret: &str) -> String {
    let mut command = format!("kumo agent --server {} --join {secret}", to.server);
    if let Some(hash) = to.ca_hash {
        command.push_str(&format!(" --ca-cert-hash {hash}"));
    }
    command
}

/// What `create` prints: the secret once, and how to use it.
fn created_message(t: &Token, secret: &str, join: &JoinTarget) -> Vec<String> {
    let name = &t.metadata.name;
    let expires = t
        .spec
        .expiration_timestamp
        .map(|e| format!(", expires {}", kumo_api::keys::format_time(e)))
        .unwrap_or_default();
    if t.spec.type_ == TokenType::Join {
        return vec![
            format!(
                "join token {name} created ({} use(s){expires}); on the new node run:",
                t.usage_limit()
            ),
            String::new(),
            format!("  {}", join_command(join, secret)),
            String::new(),
            "The join token is shown only now; the node keeps a credential of its own.".to_string(),
        ];
    }
    vec![
        format!("token {name} created for user {}{expires}:", t.spec.user),
        String::new(),
        format!("  {secret}"),
        String::new(),
        "It is shown only now. Give it to its user, who uses it with".to_string(),
        format!(
            "  KUMO_TOKEN=<token> kumo --server {} get pods   (or --token-file FILE)",
            join.server
        ),
    ]
}

/// `kumo token ls`: NAME, USER, GROUPS, TYPE, EXPIRES, AGE.
fn table(tokens: &[Token], now: kumo_api::Time) -> Table {
    let mut t = Table::new(&["NAME", "USER", "GROUPS", "TYPE", "EXPIRES", "AGE"]);
    for tok in tokens {
        let expires = match tok.spec.expiration_timestamp {
            None => "never".to_string(),
            Some(e) if e <= now => "expired".to_string(),
            Some(e) => format!("in {}", human_duration(e - now)),
        };
        let kind = match tok.spec.type_ {
            TokenType::Join => format!("join ({}/{})", tok.usage_count(), tok.usage_limit()),
            other => other.as_str().to_string(),
        };
        t.rows.push(vec![
            tok.metadata.name.clone(),
            tok.spec.user.clone(),
            if tok.spec.groups.is_empty() {
                "<none>".to_string()
            } else {
                tok.spec.groups.join(",")
            },
            kind,
            expires,
            age(tok.metadata.creation_timestamp, now),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        create: CreateArgs,
    }

    fn check(argv: &[&str], expected: Result<&str, &str>) {
        let got = Cli::try_parse_from(std::iter::once("create").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())
            .and_then(|c| token_of(&c.create).map_err(|e| e.to_string()))
            .map(|t| serde_json::to_string(&t.spec).unwrap());
        match (got, expected) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{argv:?}"),
            (Err(a), Err(b)) => assert!(a.contains(b), "{argv:?}: {a}"),
            (got, want) => panic!("{argv:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn create_flags_make_the_token_spec() {
        check(
            &[
                "alice",
                "--user",
                "alice",
                "--groups",
                "ml-team,ops",
                "--ttl",
                "24h",
            ],
            Ok(r#"{"user":"alice","groups":["ml-team","ops"],"type":"login","ttlSeconds":86400}"#),
        );
        check(
            &["bob", "--user", "bob"],
            Ok(r#"{"user":"bob","type":"login"}"#),
        );
        check(
            &["j", "--join", "--ttl", "1h", "--uses", "3"],
            Ok(
                r#"{"user":"system:bootstrap:j","groups":["system:bootstrappers"],"type":"join","ttlSeconds":3600,"usageLimit":3}"#,
            ),
        );
        check(
            &["j", "--join"],
            Ok(
                r#"{"user":"system:bootstrap:j","groups":["system:bootstrappers"],"type":"join","ttlSeconds":3600}"#,
            ),
        );
        check(&["x"], Err("--user <USER>"));
        check(&["x", "--join", "--user", "a"], Err("cannot be used with"));
        check(&["x", "--user", "a", "--uses", "2"], Err("--join"));
    }

    #[test]
    fn the_list_never_shows_a_secret_and_says_when_tokens_end() {
        let now = chrono::DateTime::from_timestamp(100_000, 0).unwrap();
        let mut alice = Token::default();
        alice.metadata.name = "alice".into();
        alice.metadata.creation_timestamp = Some(now - chrono::Duration::hours(2));
        alice.spec.user = "alice".into();
        alice.spec.groups = vec!["ml-team".into()];
        alice.status = Some(kumo_api::token::TokenStatus {
            token_hash: "sha256:abc".into(),
            ..Default::default()
        });
        let mut join = Token::join("j", 60, 2);
        join.spec.expiration_timestamp = Some(now + chrono::Duration::minutes(30));
        let mut old = Token::node("node-n1-x", "n1", now);
        old.metadata.creation_timestamp = Some(now - chrono::Duration::days(30));
        let text = table(&[alice, join, old], now).render(true);
        assert_eq!(
            text,
            "NAME        USER                 GROUPS                 TYPE         EXPIRES   AGE\n\
             alice       alice                ml-team                login        never     120m\n\
             j           system:bootstrap:j   system:bootstrappers   join (0/2)   in 30m    <unknown>\n\
             node-n1-x   system:node:n1       system:nodes           node         expired   30d\n"
        );
        assert!(!text.contains("sha256"));
    }

    #[test]
    fn a_join_token_prints_the_whole_join_command() {
        let mut t = Token::join("j", 60, 1);
        t.spec.ttl_seconds = None;
        let join = JoinTarget {
            server: "https://10.0.0.1:7400",
            ca_hash: Some("sha256:ab12"),
        };
        let lines = created_message(&t, "s3cret", &join);
        assert!(lines.contains(
            &"  kumo agent --server https://10.0.0.1:7400 --join s3cret --ca-cert-hash sha256:ab12"
                .to_string()
        ));
    }
}

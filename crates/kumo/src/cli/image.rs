//! `kumo image pull|ls|rm|import` on this node's image store, and `kumo registry login|logout`.

use super::format::{age, bytes, Table};
use anyhow::{bail, Context};
use kumo_image::{
    Credentials, ImageStore, PullPhase, PullPolicy, PullProgress, Registries, RegistryAuth,
};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

/// Where the node's image store is: `--images-dir`, else `<data-dir>/agent/images`.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// kumo data dir, as given to `kumo up` (the store is <data-dir>/agent/images; default
    /// ~/.kumo/data)
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The image store itself (for `kumo agent --data-dir D`: D/images)
    #[arg(long, global = true, conflicts_with = "data_dir")]
    pub images_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn dir(&self) -> PathBuf {
        match (&self.images_dir, &self.data_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(data)) => data.join("agent").join("images"),
            (None, None) => crate::default_data_dir().join("agent").join("images"),
        }
    }
}

/// `kumo image`: manage the local node's images directly, like `crictl`/`ctr` on a node.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image from a registry into the node's store
    Pull {
        /// Image reference, e.g. busybox:1.36 or 127.0.0.1:5000/app:v1
        reference: String,
        /// Also reach this registry (host[:port]) over plain HTTP; loopback always may
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure_registry: Vec<String>,
    },
    /// List the images in the node's store
    #[command(visible_alias = "list")]
    Ls {
        /// Print only the digests
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove images (a reference untags; the last reference or the digest removes)
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Import an OCI layout directory, an OCI archive or a `docker save` archive
    Import {
        path: PathBuf,
        /// Name the imported image (the archive must hold one)
        #[arg(long)]
        name: Option<String>,
    },
}

pub async fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let dir = args.store.dir();
    match args.command {
        ImageCommand::Pull {
            reference,
            insecure_registry,
        } => {
            let registries = Registries::load_default()?.with_insecure(insecure_registry);
            let store = open(&dir, registries)?;
            pull(&store, &reference).await
        }
        ImageCommand::Ls { quiet } => {
            let store = open(&dir, Registries::new())?;
            let images = store.list();
            if quiet {
                for i in images {
                    super::out(i.digest);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let now = chrono::Utc::now();
            let mut table = Table::new(&["REFERENCE", "DIGEST", "SIZE", "CREATED", "LAST USED"]);
            for i in images {
                let refs = if i.references.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    i.references.clone()
                };
                for r in refs {
                    table.rows.push(vec![
                        r,
                        short(&i.digest),
                        bytes(i128::from(i.size)),
                        age(Some(i.created.into()), now),
                        age(Some(i.last_used.into()), now),
                    ]);
                }
            }
            print!("{}", table.render(true));
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Rm { references } => {
            let store = open(&dir, Registries::new())?;
            let mut code = ExitCode::SUCCESS;
            for r in references {
                match store.remove(&r) {
                    Ok(()) => super::out(format!("removed {r}")),
                    Err(e) => {
                        eprintln!("error: {}", e.full_message());
                        code = ExitCode::FAILURE;
                    }
                }
            }
            Ok(code)
        }
        ImageCommand::Import { path, name } => {
            let store = open(&dir, Registries::new())?;
            let images = store
                .import(&path, name.as_deref())
                .map_err(|e| anyhow::anyhow!("{}", e.full_message()))?;
            for i in images {
                super::out(format!("imported {} ({})", i.reference, i.digest));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open(dir: &std::path::Path, registries: Registries) -> anyhow::Result<ImageStore> {
    ImageStore::open_with(dir, registries)
        .map_err(|e| anyhow::anyhow!("{}", e.full_message()))
        .with_context(|| format!("cannot open the image store {}", dir.display()))
}

/// `sha256:0123456789ab`.
fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

/// Pulls with one progress bar per layer (drawn on stderr when it is a terminal).
async fn pull(store: &ImageStore, reference: &str) -> anyhow::Result<ExitCode> {
    let multi = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let bars: Mutex<BTreeMap<usize, indicatif::ProgressBar>> = Mutex::new(BTreeMap::new());
    let on_progress = |p: PullProgress| {
        let Ok(mut bars) = bars.lock() else {
            return;
        };
        let bar = bars.entry(p.layer).or_insert_with(|| {
            let bar = multi.add(indicatif::ProgressBar::new(p.total));
            bar.set_style(style.clone());
            bar.set_prefix(short(&p.digest));
            bar
        });
        bar.set_length(p.total.max(p.bytes));
        bar.set_position(p.bytes);
        match p.phase {
            PullPhase::Downloading => bar.set_message("downloading"),
            PullPhase::Unpacking => bar.set_message("unpacking"),
            PullPhase::Done => bar.finish_with_message("done"),
            PullPhase::Cached => bar.finish_with_message("already present"),
        }
    };
    let image = store
        .ensure(
            reference,
            PullPolicy::Always,
            &RegistryAuth::Anonymous,
            &on_progress,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.full_message()))?;
    let _ = multi.clear();
    super::out(format!("{}: {}", image.reference, image.digest));
    Ok(ExitCode::SUCCESS)
}

/// `kumo registry`: credentials for pulling from private registries.
#[derive(clap::Args, Debug)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub command: RegistryCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RegistryCommand {
    /// Store credentials for a registry in ~/.kumo/registries.json (mode 0600)
    Login {
        /// Registry host[:port] (docker.io for Docker Hub)
        server: String,
        #[arg(short, long)]
        username: String,
        /// Read the password or token from standard input
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Forget the credentials for a registry
    Logout { server: String },
}

pub async fn run_registry(args: RegistryArgs) -> anyhow::Result<ExitCode> {
    let path = Credentials::default_path();
    let mut creds =
        Credentials::load(&path).map_err(|e| anyhow::anyhow!("{}", e.full_message()))?;
    match args.command {
        RegistryCommand::Login {
            server,
            username,
            password_stdin: _,
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("empty password on standard input");
            }
            creds.insert(&server, &username, password);
            creds
                .save(&path)
                .map_err(|e| anyhow::anyhow!("{}", e.full_message()))?;
            super::out(format!("login stored for {server} in {}", path.display()));
        }
        RegistryCommand::Logout { server } => {
            if !creds.remove(&server) {
                bail!("no login stored for {server}");
            }
            creds
                .save(&path)
                .map_err(|e| anyhow::anyhow!("{}", e.full_message()))?;
            super::out(format!("removed the login for {server}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_dir_follows_the_flags() {
        let s = |data: Option<&str>, images: Option<&str>| StoreArgs {
            data_dir: data.map(PathBuf::from),
            images_dir: images.map(PathBuf::from),
        };
        assert_eq!(s(Some("/d"), None).dir(), PathBuf::from("/d/agent/images"));
        assert_eq!(s(None, Some("/i")).dir(), PathBuf::from("/i"));
        assert!(s(None, None).dir().ends_with(".kumo/data/agent/images"));
        assert_eq!(
            short(&format!("sha256:{}", "ab".repeat(32))),
            "sha256:abababababab"
        );
    }
}

//! `kumo dataset push|pull|ls|rm` (training data kept by the server) and `kumo output pull` (what an
//! MLTask's replicas wrote to /output).

use super::format::{age, bytes, Table};
use super::{check_name, client, out, NamespaceArgs};
use kumo_api::dataset::{FileEntry, Manifest};
use kumo_client::data::{self, DataError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct DatasetArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(subcommand)]
    pub command: DatasetCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DatasetCommand {
    /// Upload a directory as a dataset (in 4 MiB chunks, each sha256-checked by the server); it
    /// becomes visible only once complete
    Push { dir: PathBuf, name: String },
    /// Download a dataset into DIR (new or empty), every chunk checked against its sha256
    Pull { name: String, dir: PathBuf },
    /// List the datasets
    #[command(visible_alias = "list")]
    Ls,
    /// Remove a dataset (tasks already running keep their node's copy)
    #[command(visible_alias = "remove")]
    Rm { name: String },
}

#[derive(clap::Args, Debug)]
pub struct OutputArgs {
    #[command(flatten)]
    pub connect: crate::ConnectArgs,
    #[command(subcommand)]
    pub command: OutputCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum OutputCommand {
    /// Download what an MLTask wrote to /output into DIR (new or empty), every chunk checked
    Pull {
        task: String,
        dir: PathBuf,
        #[command(flatten)]
        ns: NamespaceArgs,
    },
}

/// A data error as the CLI reports it: the server's refusals as `Error from server`.
fn lift(e: DataError) -> anyhow::Error {
    match e {
        DataError::Api(e) => e.into(),
        other => other.into(),
    }
}

pub async fn run(args: DatasetArgs) -> anyhow::Result<ExitCode> {
    super::finish(dataset(args).await)
}

async fn dataset(args: DatasetArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.connect)?;
    match args.command {
        DatasetCommand::Push { dir, name } => {
            let name = check_name(&name)?;
            // Refused before uploading anything: a name is pushed once.
            if data::get_dataset(&client, &name).await.is_ok() {
                anyhow::bail!(
                    "dataset {name:?} already exists (kumo dataset rm {name} to replace it)"
                );
            }
            let info = data::push_dataset(&client, &dir, &name)
                .await
                .map_err(lift)?;
            out(format!(
                "dataset/{} pushed: {} files, {}, sha256:{}",
                info.name,
                info.files,
                bytes(info.size as i128),
                info.digest
            ));
        }
        DatasetCommand::Pull { name, dir } => {
            let name = check_name(&name)?;
            let dataset = data::get_dataset(&client, &name).await?;
            ready_dir(&dir)?;
            data::fetch_into(&client, &dataset.manifest, &dir)
                .await
                .map_err(lift)?;
            out(format!(
                "dataset/{name} pulled: {} files ({}) into {}",
                dataset.manifest.files.len(),
                bytes(dataset.manifest.size() as i128),
                dir.display()
            ));
        }
        DatasetCommand::Ls => {
            let items = data::list_datasets(&client).await?;
            if items.is_empty() {
                out("No datasets.");
                return Ok(ExitCode::SUCCESS);
            }
            let now = chrono::Utc::now();
            let mut table = Table::new(&["NAME", "FILES", "SIZE", "DIGEST", "AGE"]);
            for d in items {
                table.rows.push(vec![
                    d.name,
                    d.files.to_string(),
                    bytes(d.size as i128),
                    format!("sha256:{}", &d.digest[..12.min(d.digest.len())]),
                    age(Some(d.created), now),
                ]);
            }
            print!("{}", table.render(true));
        }
        DatasetCommand::Rm { name } => {
            let info = data::delete_dataset(&client, &name).await?;
            out(format!("dataset/{} removed", info.name));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_output(args: OutputArgs) -> anyhow::Result<ExitCode> {
    super::finish(output(args).await)
}

/// What `GET .../mltasks/NAME/output` answers.
#[derive(serde::Deserialize)]
struct TaskOutput {
    path: String,
    ranks: Vec<RankOutput>,
}

#[derive(serde::Deserialize)]
struct RankOutput {
    rank: u32,
    manifest: Manifest,
}

/// One tree from every rank's files: where two ranks wrote the same path, the lower rank wins
/// (rank 0 is the one that usually saves the model). Pure.
fn merge(ranks: &[(u32, Manifest)]) -> Manifest {
    let mut files: BTreeMap<String, FileEntry> = BTreeMap::new();
    let mut sorted: Vec<&(u32, Manifest)> = ranks.iter().collect();
    sorted.sort_by_key(|(r, _)| *r);
    for (_, m) in sorted {
        for f in &m.files {
            files.entry(f.path.clone()).or_insert_with(|| f.clone());
        }
    }
    let mut merged = Manifest {
        files: files.into_values().collect(),
    };
    // A path that is a file in one rank and a directory in another: keep the lower rank's.
    while let Err(_conflict) = merged.validate() {
        let paths: Vec<String> = merged.files.iter().map(|f| f.path.clone()).collect();
        let before = merged.files.len();
        merged
            .files
            .retain(|f| !paths.iter().any(|p| f.path.starts_with(&format!("{p}/"))));
        if merged.files.len() == before {
            break;
        }
    }
    merged
}

fn ready_dir(dir: &Path) -> anyhow::Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            anyhow::bail!("{}: exists and is not empty", dir.display());
        }
        // Empty: replaced by the complete download.
        std::fs::remove_dir(dir)?;
    }
    Ok(())
}

async fn output(args: OutputArgs) -> anyhow::Result<ExitCode> {
    let client = client(&args.connect)?;
    let OutputCommand::Pull { task, dir, ns } = args.command;
    let task = match task.split_once('/') {
        Some(_) => super::kind_and_name(&task)?.1,
        None => check_name(&task)?,
    };
    let path = format!(
        "{}/namespaces/{}/mltasks/{task}/output",
        data::DATA_PREFIX,
        ns.or_default()
    );
    let got: TaskOutput = client.request_json(http::Method::GET, &path, None).await?;
    if got.ranks.is_empty() {
        anyhow::bail!(
            "mltask {task:?} has no collected output yet (outputs are collected when replicas end)"
        );
    }
    let ranks: Vec<(u32, Manifest)> = got
        .ranks
        .into_iter()
        .map(|r| (r.rank, r.manifest))
        .collect();
    let merged = merge(&ranks);
    ready_dir(&dir)?;
    data::fetch_into(&client, &merged, &dir)
        .await
        .map_err(lift)?;
    let list: Vec<String> = ranks.iter().map(|(r, _)| r.to_string()).collect();
    out(format!(
        "pulled {} files ({}) of output {} from rank(s) {} into {}",
        merged.files.len(),
        bytes(merged.size() as i128),
        got.path,
        list.join(","),
        dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, c: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 1,
            mode: 0o644,
            chunks: vec![c.repeat(64)],
        }
    }

    #[test]
    fn lower_ranks_win() {
        let r0 = Manifest {
            files: vec![file("model.bin", "a"), file("log", "a")],
        };
        let r1 = Manifest {
            files: vec![
                file("model.bin", "b"),
                file("rank1.txt", "b"),
                file("log/x", "b"),
            ],
        };
        let m = merge(&[(1, r1), (0, r0)]);
        let got: Vec<(String, char)> = m
            .files
            .iter()
            .map(|f| (f.path.clone(), f.chunks[0].chars().next().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("log".to_string(), 'a'),
                ("model.bin".to_string(), 'a'),
                ("rank1.txt".to_string(), 'b')
            ]
        );
    }
}

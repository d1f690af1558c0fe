//! `kumo completion`: prints a shell completion script generated from the command definitions.

use clap::CommandFactory;
use clap_complete::Shell;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// The shell: bash, zsh or fish (also elvish, powershell)
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "kumo", &mut script);
    super::out(String::from_utf8_lossy(&script).trim_end());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_mention_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut crate::Cli::command(), "kumo", &mut script);
            let script = String::from_utf8_lossy(&script);
            assert!(
                script.contains("apply") && script.contains("describe"),
                "{shell}"
            );
        }
    }
}

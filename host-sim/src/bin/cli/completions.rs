//! `host-sim completions SHELL`: a shell completion script for host-sim, generated from the
//! same clap definitions the parser uses (clap_complete), on stdout.

use super::{print_stdout, Cli, Failure};
use anyhow::anyhow;
use clap::{Args, CommandFactory, ValueEnum};

/// Flags of `host-sim completions`.
#[derive(Debug, Args)]
#[command(after_help = "Install, for example:\n  \
    bash: host-sim completions bash > ~/.local/share/bash-completion/completions/host-sim\n  \
    zsh:  host-sim completions zsh > ~/.zfunc/_host-sim  (with ~/.zfunc in $fpath)\n  \
    fish: host-sim completions fish > ~/.config/fish/completions/host-sim.fish")]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Shells with a completion script.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// GNU Bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// The script for `shell`.
pub fn script(shell: Shell) -> Result<String, Failure> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    let name = command.get_name().to_string();
    match shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, &mut command, name, &mut out),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut command, name, &mut out),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut command, name, &mut out),
    }
    String::from_utf8(out).map_err(|e| Failure::runtime(anyhow!("completion script is not UTF-8: {e}")))
}

/// Prints the script.
pub fn run(args: CompletionsArgs) -> Result<(), Failure> {
    print_stdout(&script(args.shell)?)
}

//! Writes the man pages of `osstore` (osstore(1) and one osstore-COMMAND(1)
//! per command) and its bash and zsh completions into the directory given
//! as the only argument, generated from the command line definition the
//! binary parses. Run by `make cli-docs`.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;
use osstore_cli::args::Cli;

fn main() -> std::io::Result<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .expect("usage: gen-docs OUTPUT_DIR")
        .into();
    std::fs::create_dir_all(&out)?;
    let mut cmd = Cli::command();
    clap_mangen::generate_to(cmd.clone(), &out)?;
    for shell in [Shell::Bash, Shell::Zsh] {
        clap_complete::generate_to(shell, &mut cmd, "osstore", &out)?;
    }
    Ok(())
}

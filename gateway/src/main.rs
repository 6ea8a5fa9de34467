//! `tessera`: the S3 gateway and operator CLI.

use clap::Parser;
use tessera_gateway::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => tessera_gateway::serve::run(args),
        Command::Cp(args) => tessera_gateway::cp::run(args),
        Command::Ops(command) => tessera_gateway::ops::run(command),
    }
}

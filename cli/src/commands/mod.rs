//! One module per group of verbs; [`dispatch`] runs the parsed command line.

mod project;
mod pull;
mod sandboxes;
mod server;
pub mod session;

use crate::cli::{Cli, Command, ServerCommand};
use crate::error::Result;

/// Run `cli`; the exit status to leave with.
pub async fn dispatch(cli: Cli) -> Result<i32> {
    let json = cli.json;
    match cli.command {
        Command::Server(ServerCommand::Start { dev, detach }) => server::start(dev, detach).await,
        Command::Server(ServerCommand::Status) => server::status(json).await,
        Command::Pull { image } => pull::pull(&image, json).await,
        Command::Exe(a) => sandboxes::exe(a).await,
        Command::Ls => sandboxes::ls(json).await,
        Command::Stop { names, timeout } => sandboxes::stop(&names, timeout, json).await,
        Command::Rm { names } => sandboxes::rm(&names).await,
        Command::Metrics { name } => sandboxes::metrics(name.as_deref(), json).await,
        Command::Init => project::init(),
        Command::Add(a) => project::add(a),
        Command::Run(a) => project::run(a).await,
        Command::Mcp(a) => microsandbox_mcp::serve_stdio(a.keep_sandboxes)
            .await
            .map(|()| 0)
            .map_err(Into::into),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "msb", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _closed_pipe = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(0)
        }
    }
}

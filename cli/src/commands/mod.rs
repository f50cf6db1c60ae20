//! One module per group of verbs; [`dispatch`] runs the parsed command line.

mod install;
mod pools;
mod project;
mod pull;
mod sandboxes;
mod server;
pub mod session;
mod snapshots;

use crate::cli::{Cli, Command, PoolCommand, ServerCommand, SnapshotCommand};
use crate::error::Result;
use crate::target::Target;

/// Run `cli`; the exit status to leave with.
pub async fn dispatch(cli: Cli) -> Result<i32> {
    let json = cli.json;
    let target = || Target::of(&cli.cluster);
    match cli.command {
        Command::Server(ServerCommand::Start { dev, detach }) => server::start(dev, detach).await,
        Command::Server(ServerCommand::Status) => server::status(json).await,
        Command::Pull { image } => pull::pull(&image, json).await,
        Command::Exe(a) => sandboxes::exe(a, &target().await?).await,
        Command::Ls => sandboxes::ls(&target().await?, json).await,
        Command::Stop { names, timeout } => {
            sandboxes::stop(&target().await?, &names, timeout, json).await
        }
        Command::Start { names } => {
            sandboxes::change(&target().await?, &names, sandboxes::Change::Start, json).await
        }
        Command::Pause { names } => {
            sandboxes::change(&target().await?, &names, sandboxes::Change::Pause, json).await
        }
        Command::Resume { names } => {
            sandboxes::change(&target().await?, &names, sandboxes::Change::Resume, json).await
        }
        Command::Rm { names } => sandboxes::rm(&target().await?, &names).await,
        Command::Metrics { name } => {
            sandboxes::metrics(&target().await?, name.as_deref(), json).await
        }
        Command::Snapshot(SnapshotCommand::Create {
            sandbox,
            name,
            pause,
        }) => snapshots::create(&target().await?, &sandbox, &name, pause, json).await,
        Command::Snapshot(SnapshotCommand::Ls) => snapshots::ls(&target().await?, json).await,
        Command::Snapshot(SnapshotCommand::Rm { names }) => {
            snapshots::rm(&target().await?, &names).await
        }
        Command::Snapshot(SnapshotCommand::Push {
            name,
            reference,
            secret,
        }) => snapshots::push(&target().await?, &name, &reference, secret.as_deref(), json).await,
        Command::Pool(PoolCommand::Create(a)) => pools::create(&target().await?, a, json).await,
        Command::Pool(PoolCommand::Ls) => pools::ls(&target().await?, json).await,
        Command::Pool(PoolCommand::Rm { names }) => pools::rm(&target().await?, &names).await,
        Command::Exec {
            name,
            timeout,
            command,
        } => sandboxes::exec(&target().await?, &name, &command, timeout).await,
        Command::Shell { name, shell } => sandboxes::shell(&target().await?, &name, &shell).await,
        Command::Logs { name, tail } => sandboxes::logs(&target().await?, &name, tail).await,
        Command::Cp { src, dst } => sandboxes::cp(&target().await?, &src, &dst).await,
        Command::Install(a) => install::install(a),
        Command::Uninstall { name, dir } => install::uninstall(&name, dir),
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

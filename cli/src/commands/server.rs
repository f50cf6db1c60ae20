//! `msb server start|status`: the local node agent.

use microsandbox::agent;

use crate::error::{CliError, Result};
use crate::output;

/// Where `--dev` listens on TCP (the upstream server's port).
pub const DEV_LISTEN: &str = "127.0.0.1:5555";

pub async fn start(dev: bool, detach: bool) -> Result<i32> {
    let loc = agent::locate()?;
    let Some(state_dir) = loc.state_dir.clone() else {
        return Err(CliError::Usage(format!(
            "{} points at an agent this command does not start; unset it",
            agent::ENV_SOCKET
        )));
    };
    if detach {
        if dev {
            return Err(CliError::Usage(
                "--dev runs in the foreground; drop --detach".into(),
            ));
        }
        match agent::start(&state_dir).await? {
            Some(pid) => println!("agent started (pid {pid}) on {}", loc.endpoint),
            None => println!("agent already running on {}", loc.endpoint),
        }
        return Ok(0);
    }
    let binary = agent::find_binary()?;
    let mut cmd = std::process::Command::new(&binary);
    cmd.arg("serve").arg("--state-dir").arg(&state_dir);
    if std::env::var_os("MSB_HOST_ROOTS").is_none() {
        cmd.arg("--local").env_remove("MSB_HOST_ROOTS");
    }
    if dev {
        // As the upstream server's dev mode: MCP at http://127.0.0.1:5555/mcp without a token
        // (loopback only; the rest of the API still needs it).
        cmd.arg("--listen")
            .arg(DEV_LISTEN)
            .arg("--mcp-without-token");
        if std::env::var_os("MSB_LOG").is_none() {
            cmd.env("MSB_LOG", "debug");
        }
    }
    // Replaces this process: signals and the exit status are the agent's own.
    let err = std::os::unix::process::CommandExt::exec(&mut cmd);
    Err(CliError::Io(std::io::Error::new(
        err.kind(),
        format!("cannot run {}: {err}", binary.display()),
    )))
}

pub async fn status(json: bool) -> Result<i32> {
    let loc = agent::locate()?;
    let info = agent::info().await?;
    if json {
        output::json(&serde_json::json!({
            "endpoint": loc.endpoint.to_string(),
            "version": info.version,
            "node": info.node,
            "isolation": info.isolation,
            "sandboxes": info.sandboxes,
        }));
    } else {
        let isolation: Vec<String> = info.isolation.iter().map(|i| i.to_string()).collect();
        println!(
            "agent {} on {} (node {})",
            info.version, loc.endpoint, info.node
        );
        println!("isolation: {}", isolation.join(", "));
        println!("sandboxes: {}", info.sandboxes);
    }
    Ok(0)
}

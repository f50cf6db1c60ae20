//! The MCP server: sandbox tools for AI tools (Claude, Agno, ...), on the official Rust MCP SDK
//! (`rmcp`). `msb mcp` serves one session over stdio.
//!
//! Every sandbox belongs to the session that created it: the tools see only those, and they are
//! removed when the session ends (unless `--keep-sandboxes`). A failure (bad image, unknown
//! sandbox, command not found, timeout) is a tool error the model can read, never a crash.

mod tools;

pub use tools::SandboxTools;

use rmcp::ServiceExt;

use crate::error::{CliError, Result};

/// Serve one MCP session on stdin/stdout until the client goes away.
pub async fn serve_stdio(keep_sandboxes: bool) -> Result<i32> {
    let tools = SandboxTools::new();
    let service = tools
        .clone()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| CliError::Usage(format!("MCP session did not start: {e}")))?;
    let ended = service.waiting().await;
    if !keep_sandboxes {
        tools.remove_all().await;
    }
    ended.map_err(|e| CliError::Usage(format!("MCP session failed: {e}")))?;
    Ok(0)
}

//! The MCP server: sandbox tools for AI tools (Claude, Agno, ...), on the official Rust MCP SDK
//! (`rmcp`). `msb mcp` serves one session over stdio ([`serve_stdio`]); the agent serves
//! streamable HTTP at `/mcp` ([`http::HttpEndpoint`]).
//!
//! The tools see only the sandboxes they started. Over stdio those belong to the session and
//! are removed when it ends (unless `keep_sandboxes`). A failure (bad image, unknown sandbox,
//! command not found, timeout, bad arguments) is a tool error the model can read, never a crash.

pub mod args;
pub mod http;
mod prompts;
mod registry;
mod tools;

pub use registry::Registry;
pub use tools::SandboxTools;

use rmcp::ServiceExt;

/// A session that could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("MCP session did not start: {0}")]
    Start(String),
    #[error("MCP session failed: {0}")]
    Session(String),
}

/// Serve one MCP session on stdin/stdout until the client goes away; its sandboxes are removed
/// then unless `keep_sandboxes`.
pub async fn serve_stdio(keep_sandboxes: bool) -> Result<(), ServeError> {
    let tools = SandboxTools::default();
    let service = tools
        .clone()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Start(e.to_string()))?;
    let ended = service.waiting().await;
    if !keep_sandboxes {
        tools.remove_all().await;
    }
    ended.map_err(|e| ServeError::Session(e.to_string()))?;
    Ok(())
}

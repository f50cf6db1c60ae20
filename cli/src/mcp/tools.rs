//! The tools. Names follow the upstream microsandbox MCP server (`sandbox_start`,
//! `sandbox_run_code`, `sandbox_run_command`, `sandbox_get_metrics`, `sandbox_stop`), plus file
//! access, listing and removal.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use microsandbox::{Error, ExecOutput, Sandbox};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::schemars::{self, JsonSchema};
use rmcp::{tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde::Deserialize;
use tokio::sync::Mutex;

/// The session's sandboxes, by name.
type Owned = Arc<std::sync::Mutex<HashMap<String, Arc<Mutex<Sandbox>>>>>;

#[derive(Clone)]
pub struct SandboxTools {
    sandboxes: Owned,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartArgs {
    /// Name of the new sandbox (lowercase letters, digits, '-').
    pub sandbox: String,
    /// OCI image, e.g. "python" or "node" (default "python").
    #[serde(default)]
    pub image: Option<String>,
    /// Memory in MiB (default 512).
    #[serde(default)]
    pub memory: Option<u32>,
    /// Virtual CPUs (default 1).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Network: "none" (default), "public_only" or "allow_all".
    #[serde(default)]
    pub network: Option<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SandboxArg {
    /// A sandbox this session started.
    pub sandbox: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunCodeArgs {
    pub sandbox: String,
    /// The program's source code.
    pub code: String,
    /// "python" (default) or "javascript"/"node"; run by the image's interpreter.
    #[serde(default)]
    pub language: Option<String>,
    /// Seconds before the run is killed (default 60).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunCommandArgs {
    pub sandbox: String,
    /// Program (looked up in PATH) or absolute path.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Seconds before the command is killed (default 60).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadFileArgs {
    pub sandbox: String,
    /// Absolute path inside the sandbox.
    pub path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteFileArgs {
    pub sandbox: String,
    /// Absolute path inside the sandbox (created or replaced).
    pub path: String,
    /// Text content.
    pub content: String,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A tool error the model reads.
fn failed(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// A command's result as text and structured content.
fn ran(out: &ExecOutput) -> CallToolResult {
    let value = serde_json::json!({
        "exit_code": out.exit_code,
        "signal": out.signal,
        "stdout": out.stdout_str(),
        "stderr": out.stderr_str(),
        "success": out.success(),
    });
    if out.success() {
        CallToolResult::structured(value)
    } else {
        CallToolResult::structured_error(value)
    }
}

fn sdk_error(e: Error) -> CallToolResult {
    match e {
        Error::ExecTimeout { output } => {
            let mut r = ran(&output);
            r.content.insert(
                0,
                ContentBlock::text("the command timed out and was killed"),
            );
            r
        }
        other => failed(other.to_string()),
    }
}

fn timeout(secs: Option<f64>) -> Result<Duration, CallToolResult> {
    match secs {
        None => Ok(DEFAULT_TIMEOUT),
        Some(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(failed(format!("timeout_secs {s} must be in (0, 3600]"))),
    }
}

/// The interpreter of `language`: program and the flag that takes source code.
pub fn interpreter(language: Option<&str>) -> Result<(&'static str, &'static str), String> {
    match language.unwrap_or("python").to_ascii_lowercase().as_str() {
        "python" | "python3" | "py" => Ok(("python3", "-c")),
        "javascript" | "js" | "node" | "nodejs" => Ok(("node", "-e")),
        "sh" | "shell" | "bash" => Ok(("/bin/sh", "-c")),
        other => Err(format!(
            "language {other:?} is not supported: use python, javascript or shell"
        )),
    }
}

impl Default for SandboxTools {
    fn default() -> Self {
        Self::new()
    }
}

impl SandboxTools {
    pub fn new() -> Self {
        SandboxTools {
            sandboxes: Default::default(),
            tool_router: Self::tool_router(),
        }
    }

    fn owned(&self, name: &str) -> Result<Arc<Mutex<Sandbox>>, CallToolResult> {
        let map = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned().ok_or_else(|| {
            let mine: Vec<&String> = map.keys().collect();
            failed(format!(
                "no sandbox {name:?} in this session (started here: {mine:?}); start one with sandbox_start"
            ))
        })
    }

    /// Remove every sandbox this session started (at its end).
    pub async fn remove_all(&self) {
        let all: Vec<Arc<Mutex<Sandbox>>> = self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for sb in all {
            let name = sb.lock().await.name().to_string();
            if let Ok(sb) = Arc::try_unwrap(sb).map(Mutex::into_inner) {
                if let Err(e) = sb.remove().await {
                    eprintln!("msb mcp: cannot remove sandbox {name}: {e}");
                }
            } else if let Err(e) = Sandbox::remove_named(&name).await {
                eprintln!("msb mcp: cannot remove sandbox {name}: {e}");
            }
        }
    }

    async fn exec(
        &self,
        sandbox: &str,
        program: &str,
        args: Vec<String>,
        secs: Option<f64>,
    ) -> CallToolResult {
        let t = match timeout(secs) {
            Ok(t) => t,
            Err(e) => return e,
        };
        let sb = match self.owned(sandbox) {
            Ok(sb) => sb,
            Err(e) => return e,
        };
        let sb = sb.lock().await;
        match sb.command(program).args(args).timeout(t).run().await {
            Ok(out) => ran(&out),
            Err(e) => sdk_error(e),
        }
    }
}

#[tool_router]
impl SandboxTools {
    #[tool(
        description = "Start a new sandbox (a microVM, or a container where the node has no KVM) from an OCI image. It belongs to this session and is removed when the session ends."
    )]
    async fn sandbox_start(
        &self,
        Parameters(a): Parameters<StartArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        if self.owned(&a.sandbox).is_ok() {
            return Ok(failed(format!(
                "sandbox {:?} is already started in this session",
                a.sandbox
            )));
        }
        let network = match a.network.as_deref().unwrap_or("none") {
            "none" => microsandbox::NetworkPolicy::none(),
            "public_only" | "public-only" => microsandbox::NetworkPolicy::public_only(),
            "allow_all" | "allow-all" => microsandbox::NetworkPolicy::allow_all(),
            other => {
                return Ok(failed(format!(
                    "network {other:?}: use none, public_only or allow_all"
                )))
            }
        };
        let mut b = Sandbox::builder(&a.sandbox)
            .image(a.image.as_deref().unwrap_or("python"))
            .memory(a.memory.unwrap_or(512))
            .cpus(a.cpus.unwrap_or(1))
            .network(network);
        for (k, v) in a.env {
            b = b.env(k, v);
        }
        match b.create().await {
            Ok(sb) => {
                let info = serde_json::to_value(sb.info()).unwrap_or_default();
                self.sandboxes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(a.sandbox, Arc::new(Mutex::new(sb)));
                Ok(CallToolResult::structured(info))
            }
            Err(e) => Ok(sdk_error(e)),
        }
    }

    #[tool(
        description = "Run source code in a sandbox of this session with the image's interpreter (python: python3 -c, javascript: node -e, shell: sh -c). Returns stdout, stderr and the exit code."
    )]
    async fn sandbox_run_code(
        &self,
        Parameters(a): Parameters<RunCodeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let (program, flag) = match interpreter(a.language.as_deref()) {
            Ok(i) => i,
            Err(e) => return Ok(failed(e)),
        };
        Ok(self
            .exec(
                &a.sandbox,
                program,
                vec![flag.to_string(), a.code],
                a.timeout_secs,
            )
            .await)
    }

    #[tool(
        description = "Run a command with arguments in a sandbox of this session. Returns stdout, stderr and the exit code."
    )]
    async fn sandbox_run_command(
        &self,
        Parameters(a): Parameters<RunCommandArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .exec(&a.sandbox, &a.command, a.args, a.timeout_secs)
            .await)
    }

    #[tool(description = "Read a text file of a sandbox of this session.")]
    async fn sandbox_read_file(
        &self,
        Parameters(a): Parameters<ReadFileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let sb = match self.owned(&a.sandbox) {
            Ok(sb) => sb,
            Err(e) => return Ok(e),
        };
        let fs = sb.lock().await.fs();
        Ok(match fs.read_to_string(&a.path).await {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(e) => sdk_error(e),
        })
    }

    #[tool(description = "Write (create or replace) a text file in a sandbox of this session.")]
    async fn sandbox_write_file(
        &self,
        Parameters(a): Parameters<WriteFileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let sb = match self.owned(&a.sandbox) {
            Ok(sb) => sb,
            Err(e) => return Ok(e),
        };
        let fs = sb.lock().await.fs();
        Ok(match fs.write(&a.path, a.content.into_bytes()).await {
            Ok(n) => CallToolResult::structured(serde_json::json!({ "path": a.path, "bytes": n })),
            Err(e) => sdk_error(e),
        })
    }

    #[tool(description = "CPU, memory, disk and network use of a sandbox of this session.")]
    async fn sandbox_get_metrics(
        &self,
        Parameters(a): Parameters<SandboxArg>,
    ) -> Result<CallToolResult, ErrorData> {
        let sb = match self.owned(&a.sandbox) {
            Ok(sb) => sb,
            Err(e) => return Ok(e),
        };
        let metrics = sb.lock().await.metrics().await;
        Ok(match metrics {
            Ok(m) => CallToolResult::structured(serde_json::to_value(m).unwrap_or_default()),
            Err(e) => sdk_error(e),
        })
    }

    #[tool(description = "List the sandboxes this session started, with their state.")]
    async fn sandbox_list(&self) -> Result<CallToolResult, ErrorData> {
        let mine: Vec<Arc<Mutex<Sandbox>>> = self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out = Vec::new();
        for sb in mine {
            let mut sb = sb.lock().await;
            if let Ok(info) = sb.refresh().await {
                out.push(serde_json::to_value(info).unwrap_or_default());
            }
        }
        Ok(CallToolResult::structured(
            serde_json::json!({ "sandboxes": out }),
        ))
    }

    #[tool(
        description = "Stop a sandbox of this session (it stays listed as stopped until removed or the session ends)."
    )]
    async fn sandbox_stop(
        &self,
        Parameters(a): Parameters<SandboxArg>,
    ) -> Result<CallToolResult, ErrorData> {
        let sb = match self.owned(&a.sandbox) {
            Ok(sb) => sb,
            Err(e) => return Ok(e),
        };
        let mut sb = sb.lock().await;
        Ok(match sb.stop(None).await {
            Ok(info) => CallToolResult::structured(serde_json::to_value(info).unwrap_or_default()),
            Err(e) => sdk_error(e),
        })
    }

    #[tool(description = "Remove a sandbox of this session and everything it stored.")]
    async fn sandbox_remove(
        &self,
        Parameters(a): Parameters<SandboxArg>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(sb) = self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&a.sandbox)
        else {
            return Ok(failed(format!(
                "no sandbox {:?} in this session",
                a.sandbox
            )));
        };
        let result = match Arc::try_unwrap(sb) {
            Ok(sb) => sb.into_inner().remove().await,
            Err(_) => Sandbox::remove_named(&a.sandbox).await,
        };
        Ok(match result {
            Ok(()) => {
                CallToolResult::success(vec![ContentBlock::text(format!("removed {}", a.sandbox))])
            }
            Err(e) => sdk_error(e),
        })
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SandboxTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "microsandbox",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Run untrusted code in isolated sandboxes: sandbox_start, then sandbox_run_code / \
                 sandbox_run_command / sandbox_read_file / sandbox_write_file; sandboxes are \
                 removed when this session ends.",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages() {
        assert_eq!(interpreter(None).unwrap(), ("python3", "-c"));
        assert_eq!(interpreter(Some("JavaScript")).unwrap(), ("node", "-e"));
        assert!(interpreter(Some("cobol"))
            .unwrap_err()
            .contains("not supported"));
        assert!(timeout(Some(-1.0)).is_err() && timeout(Some(f64::NAN)).is_err());
    }
}

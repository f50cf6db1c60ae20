//! The tools. Names follow the upstream microsandbox MCP server (`sandbox_start`,
//! `sandbox_run_code`, `sandbox_run_command`, `sandbox_get_metrics`, `sandbox_stop`), plus file
//! access, listing and removal.

use std::sync::Arc;

use microsandbox::{Agent, Error, ExecOutput, Language, Repl, RunStatus, Sandbox, SandboxState};
use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{prompt_handler, tool, tool_handler, tool_router, ErrorData, ServerHandler};
use tokio::sync::Mutex;

use crate::args::{
    code_runner, network_policy, timeout, CodeRunner, MetricsArgs, ReadFileArgs, RunCodeArgs,
    RunCommandArgs, SandboxArg, StartArgs, WriteFileArgs,
};
use crate::registry::Registry;

/// The tool handler of one MCP session (stdio) or of the agent's HTTP endpoint (every request
/// shares one [`Registry`]).
#[derive(Clone)]
pub struct SandboxTools {
    /// The agent sandboxes are created on; `None`: this machine's, started when none runs.
    agent: Option<Agent>,
    sandboxes: Registry,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

/// A tool error the model reads.
fn failed(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// A command's result as text and structured content. A command that ran and exited non-zero
/// is a result, not a tool error (as the upstream server answers): `success` says which.
fn ran(out: &ExecOutput) -> CallToolResult {
    CallToolResult::structured(command_result(out))
}

fn command_result(out: &ExecOutput) -> serde_json::Value {
    serde_json::json!({
        "exit_code": out.exit_code,
        "signal": out.signal,
        "stdout": out.stdout_str(),
        "stderr": out.stderr_str(),
        "success": out.success(),
    })
}

fn sdk_error(e: Error) -> CallToolResult {
    match e {
        Error::ExecTimeout { output } => {
            let mut r = CallToolResult::structured_error(command_result(&output));
            r.content.insert(
                0,
                ContentBlock::text("the command timed out and was killed"),
            );
            r
        }
        other => failed(other.to_string()),
    }
}

fn structured(value: &impl serde::Serialize) -> CallToolResult {
    CallToolResult::structured(serde_json::to_value(value).unwrap_or_default())
}

impl Default for SandboxTools {
    fn default() -> Self {
        Self::new(None, Registry::default())
    }
}

impl SandboxTools {
    /// Tools creating sandboxes on `agent` (this machine's when `None`), keeping them in
    /// `sandboxes`.
    pub fn new(agent: Option<Agent>, sandboxes: Registry) -> Self {
        SandboxTools {
            agent,
            sandboxes,
            tool_router: Self::tool_router(),
            prompt_router: Self::prompt_router(),
        }
    }

    fn owned(&self, name: &str) -> Result<Arc<Mutex<Sandbox>>, CallToolResult> {
        self.sandboxes.get(name).ok_or_else(|| {
            failed(format!(
                "no sandbox {name:?} started here (started: {:?}); start one with sandbox_start",
                self.sandboxes.names()
            ))
        })
    }

    /// Remove every sandbox these tools started (at the end of a session).
    pub async fn remove_all(&self) {
        for sb in self.sandboxes.drain() {
            let name = sb.lock().await.name().to_string();
            if let Err(e) = self.remove(&name, sb).await {
                eprintln!("msb mcp: cannot remove sandbox {name}: {e}");
            }
        }
    }

    async fn remove(&self, name: &str, sb: Arc<Mutex<Sandbox>>) -> microsandbox::Result<()> {
        match Arc::try_unwrap(sb) {
            Ok(sb) => sb.into_inner().remove().await,
            Err(_) => match &self.agent {
                Some(a) => a.remove(name).await,
                None => Sandbox::remove_named(name).await,
            },
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
            Err(e) => return failed(e),
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

    /// Run `code` in the interpreter of `language` of `sandbox`, started on first use.
    async fn run_code(
        &self,
        sandbox: &str,
        language: Language,
        code: &str,
        secs: Option<f64>,
    ) -> CallToolResult {
        let t = match timeout(secs) {
            Ok(t) => t,
            Err(e) => return failed(e),
        };
        let repl = match self.sandboxes.repl(sandbox, language) {
            Some(repl) => repl,
            None => {
                let sb = match self.owned(sandbox) {
                    Ok(sb) => sb,
                    Err(e) => return e,
                };
                let started = Repl::start(&*sb.lock().await, language).await;
                match started {
                    Ok(repl) => self.sandboxes.insert_repl(sandbox, repl),
                    Err(e) => return sdk_error(e),
                }
            }
        };
        let mut repl = repl.lock().await;
        match repl.run(code, Some(t)).await {
            Ok(out) => {
                let status = match out.status {
                    RunStatus::Ok => "ok",
                    RunStatus::Error => "error",
                    RunStatus::TimedOut => "timed_out",
                    RunStatus::Exited => "exited",
                };
                let value = serde_json::json!({
                    "stdout": out.stdout,
                    "stderr": out.stderr,
                    "success": out.success(),
                    "status": status,
                });
                if out.status == RunStatus::TimedOut {
                    let mut r = CallToolResult::structured_error(value);
                    r.content.insert(
                        0,
                        ContentBlock::text(format!(
                            "the code timed out after {t:?} and was interrupted"
                        )),
                    );
                    r
                } else {
                    CallToolResult::structured(value)
                }
            }
            Err(e) => sdk_error(e),
        }
    }

    /// A sandbox of `name` that was started here and has ended (stopped, failed) is removed so
    /// that the name can start again, as the upstream server's stop frees it; a running one is
    /// an error.
    async fn free_name(&self, name: &str) -> Result<(), CallToolResult> {
        let Some(sb) = self.sandboxes.get(name) else {
            return Ok(());
        };
        let ended = match sb.lock().await.refresh().await {
            Ok(info) => matches!(info.state, SandboxState::Stopped | SandboxState::Failed),
            Err(e) => e.code() == Some(microsandbox::ErrorCode::SandboxNotFound),
        };
        if !ended {
            return Err(failed(format!(
                "sandbox {name:?} is already running; stop or remove it first"
            )));
        }
        if let Some(sb) = self.sandboxes.take(name) {
            match self.remove(name, sb).await {
                Err(e) if e.code() != Some(microsandbox::ErrorCode::SandboxNotFound) => {
                    return Err(sdk_error(e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The window over which `sandbox_get_metrics` measures CPU use.
const CPU_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

/// One reading of a sandbox's figures: `None` when it does not run (stopped, failed).
async fn reading(
    sb: &Sandbox,
) -> microsandbox::Result<Option<(microsandbox::Metrics, std::time::Instant)>> {
    match sb.metrics().await {
        Ok(m) => Ok(Some((m, std::time::Instant::now()))),
        Err(e)
            if matches!(
                e.code(),
                Some(
                    microsandbox::ErrorCode::SandboxNotRunning
                        | microsandbox::ErrorCode::SandboxDraining
                )
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

type Reading = Option<(microsandbox::Metrics, std::time::Instant)>;

/// The figures of `name` from two readings, under the upstream server's keys (`running`,
/// `cpu_usage` in percent, `memory_usage` in MiB, `disk_usage` in bytes) and the agent's own.
fn metrics_entry(name: &str, before: Reading, after: Reading) -> serde_json::Value {
    let Some((m, at)) = after else {
        return serde_json::json!({
            "name": name, "running": false,
            "cpu_usage": null, "memory_usage": null, "disk_usage": null,
        });
    };
    let cpu_usage = before.and_then(|(b, then)| {
        let secs = at.duration_since(then).as_secs_f64();
        (secs > 0.0).then(|| {
            let used = m.cpu_usage_us.saturating_sub(b.cpu_usage_us) as f64 / 1e6;
            (10_000.0 * used / secs).round() / 100.0
        })
    });
    let mut value = serde_json::to_value(&m).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("running".into(), true.into());
        obj.insert("cpu_usage".into(), serde_json::json!(cpu_usage));
        obj.insert(
            "memory_usage".into(),
            (m.memory_bytes / (1024 * 1024)).into(),
        );
        obj.insert(
            "disk_usage".into(),
            (m.disk_read_bytes + m.disk_write_bytes).into(),
        );
    }
    value
}

#[tool_router]
impl SandboxTools {
    #[tool(
        description = "Start a new sandbox (a microVM, or a container where the node has no KVM) from an OCI image. Arguments: sandbox (name), and either config {image, memory, cpus, envs: [\"K=V\"], workdir, network} or the same as flat fields. Sandboxes started over stdio are removed when the session ends."
    )]
    async fn sandbox_start(
        &self,
        Parameters(a): Parameters<StartArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let plan = match a.plan() {
            Ok(p) => p,
            Err(e) => return Ok(failed(e)),
        };
        if let Err(e) = self.free_name(&plan.name).await {
            return Ok(e);
        }
        let network = match network_policy(&plan.network) {
            Ok(n) => n,
            Err(e) => return Ok(failed(e)),
        };
        let mut b = Sandbox::builder(&plan.name)
            .image(plan.image)
            .memory(plan.memory)
            .cpus(plan.cpus)
            .network(network);
        if let Some(dir) = plan.workdir {
            b = b.workdir(dir);
        }
        for (k, v) in plan.env {
            b = b.env(k, v);
        }
        if let Some(agent) = &self.agent {
            b = b.agent(agent);
        }
        match b.create().await {
            Ok(sb) => {
                let info = structured(sb.info());
                self.sandboxes.insert(plan.name, sb);
                Ok(info)
            }
            Err(e) => Ok(sdk_error(e)),
        }
    }

    #[tool(
        description = "Run source code in a started sandbox. python (default) and javascript/nodejs run in the sandbox's long-lived interpreter: variables, functions and imports of one call are there in the next, and a trailing expression's value is printed. shell runs sh -c. Returns stdout, stderr, success and status (ok, error, exited)."
    )]
    async fn sandbox_run_code(
        &self,
        Parameters(a): Parameters<RunCodeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match code_runner(a.language.as_deref()) {
            Err(e) => failed(e),
            Ok(CodeRunner::Shell) => {
                self.exec(
                    &a.sandbox,
                    "/bin/sh",
                    vec!["-c".into(), a.code],
                    a.timeout_secs,
                )
                .await
            }
            Ok(CodeRunner::Repl(language)) => {
                self.run_code(&a.sandbox, language, &a.code, a.timeout_secs)
                    .await
            }
        })
    }

    #[tool(
        description = "Run a command with arguments in a started sandbox. Returns stdout, stderr and the exit code."
    )]
    async fn sandbox_run_command(
        &self,
        Parameters(a): Parameters<RunCommandArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .exec(&a.sandbox, &a.command, a.args, a.timeout_secs)
            .await)
    }

    #[tool(description = "Read a text file of a started sandbox.")]
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

    #[tool(description = "Write (create or replace) a text file in a started sandbox.")]
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

    #[tool(
        description = "CPU, memory, disk and network use of a started sandbox, or of all of them when no sandbox is named, running or not: {sandboxes: [{name, running, cpu_usage (percent of one core over 100 ms), memory_usage (MiB), disk_usage (bytes), ...}]}; one sandbox's figures are also at the top level."
    )]
    async fn sandbox_get_metrics(
        &self,
        Parameters(a): Parameters<MetricsArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let names = match a.sandbox {
            Some(name) => vec![name],
            None => self.sandboxes.names(),
        };
        let mut owned = Vec::new();
        for name in names {
            match self.owned(&name) {
                Ok(sb) => owned.push((name, sb)),
                Err(e) => return Ok(e),
            }
        }
        // Two readings 100 ms apart give the CPU use in percent.
        let mut first = Vec::new();
        for (_, sb) in &owned {
            first.push(reading(&*sb.lock().await).await);
        }
        tokio::time::sleep(CPU_WINDOW).await;
        let mut all = Vec::new();
        for ((name, sb), before) in owned.iter().zip(first) {
            match (before, reading(&*sb.lock().await).await) {
                (Ok(before), Ok(after)) => all.push(metrics_entry(name, before, after)),
                (Err(e), _) | (_, Err(e)) => return Ok(sdk_error(e)),
            }
        }
        let mut value = serde_json::json!({ "sandboxes": all.clone() });
        if let ([serde_json::Value::Object(one)], Some(top)) = (&all[..], value.as_object_mut()) {
            top.extend(one.clone());
        }
        Ok(CallToolResult::structured(value))
    }

    #[tool(description = "List the sandboxes started here, with their state.")]
    async fn sandbox_list(&self) -> Result<CallToolResult, ErrorData> {
        let mut out = Vec::new();
        for sb in self.sandboxes.all() {
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
        description = "Stop a started sandbox. It stays listed as stopped until removed; sandbox_start with its name starts it afresh."
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
            Ok(info) => structured(info),
            Err(e) => sdk_error(e),
        })
    }

    #[tool(description = "Remove a started sandbox and everything it stored.")]
    async fn sandbox_remove(
        &self,
        Parameters(a): Parameters<SandboxArg>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(sb) = self.sandboxes.take(&a.sandbox) else {
            return Ok(failed(format!("no sandbox {:?} started here", a.sandbox)));
        };
        Ok(match self.remove(&a.sandbox, sb).await {
            Ok(()) => {
                CallToolResult::success(vec![ContentBlock::text(format!("removed {}", a.sandbox))])
            }
            Err(e) => sdk_error(e),
        })
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for SandboxTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new(
            "microsandbox",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "Run untrusted code in isolated sandboxes: sandbox_start, then sandbox_run_code / \
                 sandbox_run_command / sandbox_read_file / sandbox_write_file; sandbox_remove \
                 when done.",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(cpu_usage_us: u64) -> microsandbox::Metrics {
        microsandbox::Metrics {
            name: "a".into(),
            cpu_usage_us,
            memory_bytes: 3 * 1024 * 1024,
            disk_read_bytes: 5,
            disk_write_bytes: 7,
            ..Default::default()
        }
    }

    #[test]
    fn metrics_entries_carry_the_upstream_keys() {
        let then = std::time::Instant::now();
        let now = then + std::time::Duration::from_millis(200);
        let e = metrics_entry("a", Some((metrics(0), then)), Some((metrics(50_000), now)));
        assert_eq!(e["running"], true);
        assert_eq!(e["cpu_usage"], 25.0); // 50 ms of CPU in 200 ms
        assert_eq!(
            (e["memory_usage"].as_u64(), e["disk_usage"].as_u64()),
            (Some(3), Some(12))
        );
        assert_eq!(e["cpu_usage_us"], 50_000);
        // Started between the readings: no CPU figure; stopped: not running, no figures.
        assert!(metrics_entry("a", None, Some((metrics(1), now)))["cpu_usage"].is_null());
        let stopped = metrics_entry("a", Some((metrics(1), then)), None);
        assert_eq!(stopped["running"], false);
        assert!(stopped["memory_usage"].is_null());
    }
}

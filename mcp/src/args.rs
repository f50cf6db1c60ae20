//! Tool arguments, typed (their JSON schemas are what clients see), and the pure checks that
//! turn them into SDK calls.
//!
//! `sandbox_start` takes the upstream microsandbox server's shape — `{"sandbox", "namespace",
//! "config": {"image", "memory", "cpus", "envs": ["K=V"], ...}}` — and flat fields (`image`,
//! `memory`, `cpus`, `env`, `network`) as well; `config` wins where both are given.

use std::collections::BTreeMap;
use std::time::Duration;

use microsandbox::{Language, NetworkPolicy};
use rmcp::schemars::{self, JsonSchema};
use serde::Deserialize;

/// Default run time of a command before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct StartArgs {
    /// Name of the new sandbox (lowercase letters, digits, '-').
    pub sandbox: String,
    /// Accepted for compatibility with the upstream server; sandbox names are unique per
    /// agent, whatever the namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Configuration in the upstream server's shape.
    #[serde(default)]
    pub config: Option<StartConfig>,
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

/// `sandbox_start`'s `config` object (the upstream server's field names).
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct StartConfig {
    /// OCI image, e.g. "python", "node", "microsandbox/python".
    #[serde(default)]
    pub image: Option<String>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory: Option<u32>,
    /// Virtual CPUs.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Environment variables as "NAME=value".
    #[serde(default)]
    pub envs: Vec<String>,
    /// Working directory of commands (created if the image lacks it).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Network: "none" (default), "public_only" or "allow_all".
    #[serde(default)]
    pub network: Option<String>,
    /// Not supported over MCP (the tools cannot name directories of this machine); write files
    /// with sandbox_write_file.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Not supported over MCP.
    #[serde(default)]
    pub ports: Vec<String>,
}

/// What `sandbox_start` creates, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    pub name: String,
    pub image: String,
    pub memory: u32,
    pub cpus: u32,
    pub network: String,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
}

impl StartArgs {
    /// The sandbox to create, or the message of a tool error. Pure.
    pub fn plan(self) -> Result<StartPlan, String> {
        let config = self.config.unwrap_or_default();
        if !config.volumes.is_empty() {
            return Err(
                "config.volumes is not supported over MCP: the sandbox cannot see this \
                        machine's directories; write files with sandbox_write_file"
                    .into(),
            );
        }
        if !config.ports.is_empty() {
            return Err(
                "config.ports is not supported over MCP: reach the sandbox with \
                        sandbox_run_command"
                    .into(),
            );
        }
        let mut env = self.env;
        for pair in config.envs {
            match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    env.insert(k.to_string(), v.to_string());
                }
                _ => return Err(format!("config.envs entry {pair:?} is not NAME=value")),
            }
        }
        let network = config
            .network
            .or(self.network)
            .unwrap_or_else(|| "none".into());
        network_policy(&network)?;
        Ok(StartPlan {
            name: self.sandbox,
            image: config
                .image
                .or(self.image)
                .unwrap_or_else(|| "python".into()),
            memory: config.memory.or(self.memory).unwrap_or(512),
            cpus: config.cpus.or(self.cpus).unwrap_or(1),
            network,
            env,
            workdir: config.workdir,
        })
    }
}

/// The network policy a `network` argument names.
pub fn network_policy(name: &str) -> Result<NetworkPolicy, String> {
    match name {
        "none" => Ok(NetworkPolicy::none()),
        "public_only" | "public-only" => Ok(NetworkPolicy::public_only()),
        "allow_all" | "allow-all" => Ok(NetworkPolicy::allow_all()),
        other => Err(format!(
            "network {other:?}: use none, public_only or allow_all"
        )),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SandboxArg {
    /// A sandbox started with sandbox_start.
    pub sandbox: String,
    /// Accepted for compatibility with the upstream server (ignored).
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct MetricsArgs {
    /// A sandbox started with sandbox_start; all of them when absent.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// Accepted for compatibility with the upstream server (ignored).
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunCodeArgs {
    pub sandbox: String,
    /// Accepted for compatibility with the upstream server (ignored).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The program's source code.
    pub code: String,
    /// "python" (default) or "javascript"/"nodejs": run by the sandbox's long-lived interpreter
    /// (what one call defines the next finds); "shell": `sh -c`.
    #[serde(default)]
    pub language: Option<String>,
    /// Seconds before the run is interrupted (default 60).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunCommandArgs {
    pub sandbox: String,
    /// Accepted for compatibility with the upstream server (ignored).
    #[serde(default)]
    pub namespace: Option<String>,
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

/// The run time `secs` asks for.
pub fn timeout(secs: Option<f64>) -> Result<Duration, String> {
    match secs {
        None => Ok(DEFAULT_TIMEOUT),
        Some(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(format!("timeout_secs {s} must be in (0, 3600]")),
    }
}

/// The arguments of the prompts `create_python_sandbox` / `create_node_sandbox` (upstream's names).
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SandboxPromptArgs {
    /// The name of the sandbox to start.
    pub sandbox_name: String,
    /// Accepted for compatibility with the upstream server (ignored).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// How `sandbox_run_code` runs a language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRunner {
    /// The sandbox's long-lived interpreter of the language: state persists between calls.
    Repl(Language),
    /// `/bin/sh -c`, a fresh shell each call.
    Shell,
}

/// The runner of `language` (default python).
pub fn code_runner(language: Option<&str>) -> Result<CodeRunner, String> {
    let name = language.unwrap_or("python");
    if let Some(l) = Language::parse(name) {
        return Ok(CodeRunner::Repl(l));
    }
    match name.to_ascii_lowercase().as_str() {
        "sh" | "shell" | "bash" => Ok(CodeRunner::Shell),
        other => Err(format!(
            "language {other:?} is not supported: use python, javascript or shell"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: serde_json::Value) -> StartArgs {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn upstream_shape_and_flat_fields() {
        let up = args(serde_json::json!({
            "sandbox": "data", "namespace": "research",
            "config": {"image": "microsandbox/python", "memory": 1024, "cpus": 2,
                       "envs": ["PYTHONPATH=/workspace", "EMPTY="]}
        }))
        .plan()
        .unwrap();
        assert_eq!(
            (up.image.as_str(), up.memory, up.cpus),
            ("microsandbox/python", 1024, 2)
        );
        assert_eq!(up.env["PYTHONPATH"], "/workspace");
        assert_eq!(up.env["EMPTY"], "");
        assert_eq!(up.network, "none");

        let flat = args(
            serde_json::json!({"sandbox": "a", "image": "node", "env": {"A": "1"},
            "network": "public_only"}),
        )
        .plan()
        .unwrap();
        assert_eq!(
            (flat.image.as_str(), flat.memory, flat.cpus),
            ("node", 512, 1)
        );
        assert_eq!(flat.env["A"], "1");
        assert_eq!(flat.network, "public_only");

        let both = args(serde_json::json!({"sandbox": "a", "image": "node",
            "config": {"image": "python"}}))
        .plan()
        .unwrap();
        assert_eq!(both.image, "python");
    }

    #[test]
    fn refusals_name_the_field() {
        let bad_env = args(serde_json::json!({"sandbox": "a", "config": {"envs": ["NOEQUALS"]}}));
        assert!(bad_env.plan().unwrap_err().contains("NOEQUALS"));
        let vol = args(serde_json::json!({"sandbox": "a", "config": {"volumes": ["/:/host"]}}));
        assert!(vol.plan().unwrap_err().contains("config.volumes"));
        let ports = args(serde_json::json!({"sandbox": "a", "config": {"ports": ["8080:80"]}}));
        assert!(ports.plan().unwrap_err().contains("config.ports"));
        let net = args(serde_json::json!({"sandbox": "a", "network": "everything"}));
        assert!(net.plan().unwrap_err().contains("everything"));
    }

    #[test]
    fn timeouts_and_interpreters() {
        assert_eq!(timeout(None).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout(Some(1.5)).unwrap(), Duration::from_millis(1500));
        for bad in [0.0, -1.0, f64::NAN, 3601.0] {
            assert!(timeout(Some(bad)).is_err());
        }
        assert_eq!(code_runner(None), Ok(CodeRunner::Repl(Language::Python)));
        assert_eq!(
            code_runner(Some("NodeJS")),
            Ok(CodeRunner::Repl(Language::Node))
        );
        assert_eq!(code_runner(Some("shell")), Ok(CodeRunner::Shell));
        assert!(code_runner(Some("cobol")).is_err());
    }
}

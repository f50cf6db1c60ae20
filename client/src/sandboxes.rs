//! Sandbox lifecycle, collected exec and metrics routes.

use crate::error::{ClientError, Result};
use crate::http::{sandbox_path, AgentClient, Payload};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hyper::Method;
use microsandbox_wire::api::{
    AgentInfo, CreateSandbox, CreateSnapshot, ExecOutput, ExecRequest, Metrics, PoolInfo, PoolSpec,
    PushSnapshot, PushedSnapshot, SandboxInfo, SecretViolation, SnapshotInfo, StopSandbox,
};

/// `/v1/snapshots/{name}{rest}`, the name percent-encoded.
fn snapshot_path(name: &str, rest: &str) -> String {
    format!(
        "/v1/snapshots/{}{rest}",
        percent_encoding::utf8_percent_encode(name, crate::http::SEGMENT)
    )
}

fn pool_path(name: &str) -> String {
    format!(
        "/v1/pools/{}",
        percent_encoding::utf8_percent_encode(name, crate::http::SEGMENT)
    )
}

/// Result of a finished command, with stdout and stderr decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status (meaningless when `signal` is set; by convention 128 + signal then).
    pub exit_code: i32,
    /// Signal that killed the process, if any.
    pub signal: Option<i32>,
    /// Whether the exec's `timeout_ms` expired (the process was then killed).
    pub timed_out: bool,
    /// Everything the process wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the process wrote to stderr.
    pub stderr: Vec<u8>,
    /// Uses of secret placeholders the egress proxy blocked while it ran.
    pub secret_violations: Vec<SecretViolation>,
}

impl Output {
    /// Exited on its own with status 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0 && self.signal.is_none() && !self.timed_out
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }
}

impl TryFrom<ExecOutput> for Output {
    type Error = ClientError;

    /// Decodes the base64 streams of the API's [`ExecOutput`].
    fn try_from(o: ExecOutput) -> Result<Self> {
        let decode = |what: &str, s: &str| {
            B64.decode(s)
                .map_err(|e| ClientError::Protocol(format!("exec {what} is not valid base64: {e}")))
        };
        Ok(Output {
            exit_code: o.exit_code,
            signal: o.signal,
            timed_out: o.timed_out,
            stdout: decode("stdout", &o.stdout_b64)?,
            stderr: decode("stderr", &o.stderr_b64)?,
            secret_violations: o.secret_violations,
        })
    }
}

/// Base64 for [`ExecRequest::stdin_b64`] (collected exec: bytes fed to stdin, then closed).
pub fn encode_stdin(data: impl AsRef<[u8]>) -> String {
    B64.encode(data)
}

impl AgentClient {
    /// `GET /v1/info`: version, node name, available isolation, sandbox count.
    pub async fn info(&self) -> Result<AgentInfo> {
        self.call_json(Method::GET, "/v1/info", Payload::Empty)
            .await
    }

    /// `POST /v1/sandboxes`: creates and starts a sandbox (pulling its image per `pull_policy`).
    /// An attached sandbox (`detached: false`) must then be held with [`AgentClient::hold_lease`].
    pub async fn create(&self, req: CreateSandbox) -> Result<SandboxInfo> {
        self.call_json(Method::POST, "/v1/sandboxes", Payload::json(&req)?)
            .await
    }

    /// `GET /v1/sandboxes`: every sandbox of the node.
    pub async fn list(&self) -> Result<Vec<SandboxInfo>> {
        self.call_json(Method::GET, "/v1/sandboxes", Payload::Empty)
            .await
    }

    /// `GET /v1/sandboxes/{name}`.
    pub async fn get(&self, name: &str) -> Result<SandboxInfo> {
        self.call_json(Method::GET, &sandbox_path(name, ""), Payload::Empty)
            .await
    }

    /// `DELETE /v1/sandboxes/{name}`: kills the sandbox if running, then removes everything.
    pub async fn remove(&self, name: &str) -> Result<()> {
        self.call_unit(Method::DELETE, &sandbox_path(name, ""), Payload::Empty)
            .await
    }

    /// `POST /v1/sandboxes/{name}/stop`: SIGTERM, then SIGKILL after `timeout_ms`.
    pub async fn stop(&self, name: &str, req: StopSandbox) -> Result<SandboxInfo> {
        self.call_json(
            Method::POST,
            &sandbox_path(name, "/stop"),
            Payload::json(&req)?,
        )
        .await
    }

    /// `POST /v1/sandboxes/{name}/kill`: SIGKILL now.
    pub async fn kill(&self, name: &str) -> Result<SandboxInfo> {
        self.call_json(Method::POST, &sandbox_path(name, "/kill"), Payload::Empty)
            .await
    }

    /// `GET /v1/sandboxes/{name}/logs`: the sandbox's own output (microVM console, container
    /// init log), at most the last `tail_bytes`.
    pub async fn logs(&self, name: &str, tail_bytes: Option<u64>) -> Result<Vec<u8>> {
        let path = match tail_bytes {
            Some(n) => format!("{}?tail_bytes={n}", sandbox_path(name, "/logs")),
            None => sandbox_path(name, "/logs"),
        };
        let resp = self.send(Method::GET, &path, Payload::Empty).await?;
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(crate::http::body_error)?;
        Ok(body.to_bytes().to_vec())
    }

    /// `POST /v1/sandboxes/{name}/start`: starts a stopped or failed sandbox again (its files as
    /// the stop left them).
    pub async fn start(&self, name: &str) -> Result<SandboxInfo> {
        self.call_json(Method::POST, &sandbox_path(name, "/start"), Payload::Empty)
            .await
    }

    /// `PUT /v1/pools/{name}`: keep `spec.size` sandboxes of `spec.template` started.
    pub async fn put_pool(&self, name: &str, spec: &PoolSpec) -> Result<PoolInfo> {
        self.call_json(Method::PUT, &pool_path(name), Payload::json(spec)?)
            .await
    }

    /// `GET /v1/pools`: the warm pools of this agent.
    pub async fn pools(&self) -> Result<Vec<PoolInfo>> {
        self.call_json(Method::GET, "/v1/pools", Payload::Empty)
            .await
    }

    /// `DELETE /v1/pools/{name}`: the pool and its unclaimed sandboxes.
    pub async fn remove_pool(&self, name: &str) -> Result<()> {
        self.call_unit(Method::DELETE, &pool_path(name), Payload::Empty)
            .await
    }

    /// `POST /v1/sandboxes/{name}/snapshot`: saves a stopped or paused sandbox's files as
    /// snapshot `snapshot` (an image: [`SnapshotInfo::image`]).
    pub async fn snapshot(&self, name: &str, snapshot: &str) -> Result<SnapshotInfo> {
        let req = CreateSnapshot {
            name: snapshot.to_string(),
        };
        self.call_json(
            Method::POST,
            &sandbox_path(name, "/snapshot"),
            Payload::json(&req)?,
        )
        .await
    }

    /// `GET /v1/snapshots`: the snapshots of this node.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        self.call_json(Method::GET, "/v1/snapshots", Payload::Empty)
            .await
    }

    /// `DELETE /v1/snapshots/{name}`.
    pub async fn remove_snapshot(&self, name: &str) -> Result<()> {
        self.call_unit(Method::DELETE, &snapshot_path(name, ""), Payload::Empty)
            .await
    }

    /// `POST /v1/snapshots/{name}/push`: pushes snapshot `name` to a registry as image
    /// `reference`, which sandboxes on any node can then start from.
    pub async fn push_snapshot(&self, name: &str, reference: &str) -> Result<PushedSnapshot> {
        let req = PushSnapshot {
            reference: reference.to_string(),
        };
        self.call_json(
            Method::POST,
            &snapshot_path(name, "/push"),
            Payload::json(&req)?,
        )
        .await
    }

    /// `POST /v1/sandboxes/{name}/pause`: freezes the sandbox's processes until a resume.
    pub async fn pause(&self, name: &str) -> Result<SandboxInfo> {
        self.call_json(Method::POST, &sandbox_path(name, "/pause"), Payload::Empty)
            .await
    }

    /// `POST /v1/sandboxes/{name}/resume`: thaws a paused or idle-suspended sandbox.
    pub async fn resume(&self, name: &str) -> Result<SandboxInfo> {
        self.call_json(Method::POST, &sandbox_path(name, "/resume"), Payload::Empty)
            .await
    }

    /// `POST /v1/sandboxes/{name}/drain`: refuses new execs, waits for running ones, then stops.
    pub async fn drain(&self, name: &str, req: StopSandbox) -> Result<SandboxInfo> {
        self.call_json(
            Method::POST,
            &sandbox_path(name, "/drain"),
            Payload::json(&req)?,
        )
        .await
    }

    /// `POST /v1/sandboxes/{name}/exec`: runs a command to completion and returns its collected
    /// output. For large or interactive output use [`AgentClient::exec_stream`].
    pub async fn exec(&self, name: &str, req: ExecRequest) -> Result<Output> {
        self.exec_raw(name, req).await?.try_into()
    }

    /// Like [`AgentClient::exec`], returning the API's body as is (base64 streams).
    pub async fn exec_raw(&self, name: &str, req: ExecRequest) -> Result<ExecOutput> {
        self.call_json(
            Method::POST,
            &sandbox_path(name, "/exec"),
            Payload::json(&req)?,
        )
        .await
    }

    /// `GET /v1/sandboxes/{name}/metrics`.
    pub async fn metrics(&self, name: &str) -> Result<Metrics> {
        self.call_json(Method::GET, &sandbox_path(name, "/metrics"), Payload::Empty)
            .await
    }

    /// `GET /v1/sandboxes/{name}/secrets/violations`: requests carrying a secret's placeholder
    /// that the sandbox's egress proxy blocked (not an allowed host, or plain HTTP).
    pub async fn secret_violations(&self, name: &str) -> Result<Vec<SecretViolation>> {
        self.call_json(
            Method::GET,
            &sandbox_path(name, "/secrets/violations"),
            Payload::Empty,
        )
        .await
    }

    /// `GET /v1/metrics`: metrics of every running sandbox.
    pub async fn all_metrics(&self) -> Result<Vec<Metrics>> {
        self.call_json(Method::GET, "/v1/metrics", Payload::Empty)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_decodes_base64() {
        let o: Output = ExecOutput {
            exit_code: 0,
            signal: None,
            timed_out: false,
            stdout_b64: encode_stdin(b"hi\n\xff"),
            stderr_b64: String::new(),
            secret_violations: vec![SecretViolation {
                secret: "K".into(),
                host: "evil.test".into(),
                reason: "r".into(),
                at: 1,
            }],
        }
        .try_into()
        .unwrap();
        assert_eq!(o.stdout, b"hi\n\xff");
        assert!(o.stderr.is_empty());
        assert!(o.success());
        assert_eq!(o.stdout_str(), "hi\n\u{fffd}");
        assert_eq!(o.secret_violations[0].host, "evil.test");

        let bad = ExecOutput {
            exit_code: 1,
            signal: Some(9),
            timed_out: false,
            stdout_b64: "!!".into(),
            stderr_b64: String::new(),
            secret_violations: vec![],
        };
        assert!(matches!(
            Output::try_from(bad),
            Err(ClientError::Protocol(_))
        ));
    }
}

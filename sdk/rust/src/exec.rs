//! Running commands: collected ([`ExecOutput`]) or streamed ([`ExecStream`], a `Stream` of
//! [`ExecEvent`]s), with [`Command`] holding the options.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use microsandbox_client::api::{ExecRequest, Rlimit};
use microsandbox_client::{encode_stdin, AgentClient, ExecInput};

pub use microsandbox_client::ExecEvent;

use crate::error::{Error, Result};

/// What a command wrote and how it ended (the client's decoded output: `exit_code`, `signal`,
/// `timed_out`, `stdout`/`stderr` bytes, `stdout_str()`/`stderr_str()`, `success()`).
pub use microsandbox_client::Output as ExecOutput;

/// `Err(ExecTimeout)` for a command killed at its timeout, else the output.
fn or_timeout(out: ExecOutput) -> Result<ExecOutput> {
    if out.timed_out {
        Err(Error::ExecTimeout {
            output: Box::new(out),
        })
    } else {
        Ok(out)
    }
}

/// A command to run in a sandbox: `sb.command("python").arg("-c").arg("print(1)").run().await`.
#[derive(Debug, Clone)]
#[must_use = "a command does nothing until run() or stream()"]
pub struct Command {
    client: AgentClient,
    sandbox: String,
    req: ExecRequest,
    stdin: Option<Vec<u8>>,
}

impl Command {
    pub(crate) fn new(client: AgentClient, sandbox: String, program: &str) -> Self {
        Command {
            client,
            sandbox,
            req: ExecRequest {
                command: program.to_string(),
                args: Vec::new(),
                cwd: None,
                env: BTreeMap::new(),
                user: None,
                timeout_ms: None,
                rlimits: Vec::new(),
                stdin_b64: None,
                stdin: false,
                tty: None,
            },
            stdin: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.req.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.req.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Working directory (default: the sandbox's workdir).
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.req.cwd = Some(dir.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.env.insert(key.into(), value.into());
        self
    }

    /// User to run as (name or uid).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.req.user = Some(user.into());
        self
    }

    /// Kill the command after `timeout`; [`Command::run`] then fails with
    /// [`Error::ExecTimeout`] carrying the output until then.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.req.timeout_ms = Some(timeout.as_millis().try_into().unwrap_or(u64::MAX));
        self
    }

    /// A resource limit (`"nofile"`, `"nproc"`, `"cpu"`, ...).
    pub fn rlimit(mut self, resource: impl Into<String>, soft: u64, hard: u64) -> Self {
        self.req.rlimits.push(Rlimit {
            resource: resource.into(),
            soft,
            hard,
        });
        self
    }

    /// Run on a pseudo-terminal of `rows` x `cols` ([`Command::stream`] only; stdout then carries
    /// the terminal's output).
    pub fn tty(mut self, rows: u16, cols: u16) -> Self {
        self.req.tty = Some(microsandbox_client::api::TtySize { rows, cols });
        self
    }

    /// Bytes fed to stdin (then closed), for [`Command::run`].
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Run to completion and collect the output.
    pub async fn run(mut self) -> Result<ExecOutput> {
        self.req.stdin_b64 = self.stdin.take().map(encode_stdin);
        or_timeout(self.client.exec(&self.sandbox, self.req).await?)
    }

    /// Start it and stream its events; stdin stays open for [`ExecStream::input`].
    pub async fn stream(mut self) -> Result<ExecStream> {
        self.req.stdin = true;
        let inner = self.client.exec_stream(&self.sandbox, self.req).await?;
        Ok(ExecStream { inner })
    }
}

/// A running command's events, in order: `Started`, output chunks, `Exited` (last).
///
/// ```no_run
/// # async fn demo(sb: &microsandbox::Sandbox) -> microsandbox::Result<()> {
/// use futures::StreamExt;
/// use microsandbox::ExecEvent;
/// let mut events = sb.command("sh").args(["-c", "echo hi; exit 3"]).stream().await?;
/// while let Some(ev) = events.next().await {
///     match ev? {
///         ExecEvent::Stdout(data) => print!("{}", String::from_utf8_lossy(&data)),
///         ExecEvent::Exited { exit_code, .. } => println!("exited {exit_code}"),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ExecStream {
    inner: microsandbox_client::ExecStream,
}

impl ExecStream {
    /// Write stdin, close it, send signals, resize a terminal (usable from other tasks).
    pub fn input(&self) -> ExecInput {
        self.inner.input()
    }

    /// The process's pid inside the sandbox, once started.
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    /// Collect the rest until it exits; [`Error::ExecTimeout`] if it was killed at its timeout.
    pub async fn wait(self) -> Result<ExecOutput> {
        or_timeout(self.inner.wait_output().await?)
    }
}

impl Stream for ExecStream {
    type Item = Result<ExecEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|ev| ev.map(|r| r.map_err(Error::from)))
    }
}

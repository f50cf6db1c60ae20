//! A long-lived interpreter in a sandbox: code runs one piece at a time in one namespace, so what
//! one run defines the next one finds (upstream microsandbox's `sandbox.repl.run`, the earlier
//! SDKs' `PythonSandbox.run`).
//!
//! The interpreter runs a small driver ([`PYTHON_DRIVER`], [`NODE_DRIVER`]) reading JSON lines
//! `{"id", "code"[, "timeout_ms"]}` on stdin; after each run it writes `<token>:<id>:<ok|error>`
//! on both stdout and stderr, the end of that run's output. The token is random per interpreter,
//! so code cannot end a run early by printing a marker it cannot know.
//!
//! ```no_run
//! # async fn demo(sb: &microsandbox::Sandbox) -> microsandbox::Result<()> {
//! use microsandbox::{Language, Repl};
//! let mut repl = Repl::start(sb, Language::Python).await?;
//! repl.run("name = 'Python'", None).await?;
//! let out = repl.run("print(f'Hello {name}!')", None).await?;
//! assert_eq!(out.stdout, "Hello Python!\n");
//! # Ok(()) }
//! ```

use std::time::Duration;

use futures::StreamExt;

use microsandbox_client::AgentClient;

use crate::exec::Command;
use crate::{ExecEvent, ExecInput, ExecStream, Result, Sandbox};

/// The Python driver (`python3 -u -c DRIVER TOKEN`).
pub const PYTHON_DRIVER: &str = include_str!("python.py");
/// The Node.js driver (`node -e DRIVER TOKEN`).
pub const NODE_DRIVER: &str = include_str!("node.js");

/// How long an interrupted run gets to end before the interpreter is restarted.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);
/// Node stops synchronous code at the request's timeout itself (keeping its context); the wait
/// from outside, which restarts node, is this much longer.
const NODE_OUTSIDE_GRACE: Duration = Duration::from_secs(2);

/// An interpreter language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    Node,
}

impl Language {
    /// `python` / `python3` / `py`, `javascript` / `js` / `node` / `nodejs` (any case).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "python" | "python3" | "py" => Some(Language::Python),
            "javascript" | "js" | "node" | "nodejs" => Some(Language::Node),
            _ => None,
        }
    }

    /// The command line that starts the driver.
    fn argv(self, token: &str) -> (&'static str, Vec<String>) {
        match self {
            Language::Python => (
                "python3",
                vec!["-u".into(), "-c".into(), PYTHON_DRIVER.into(), token.into()],
            ),
            Language::Node => ("node", vec!["-e".into(), NODE_DRIVER.into(), token.into()]),
        }
    }

    /// One request line.
    fn request(self, id: u64, code: &str, timeout: Option<Duration>) -> String {
        let mut req = serde_json::json!({ "id": id, "code": code });
        if let (Language::Node, Some(t)) = (self, timeout) {
            req["timeout_ms"] = (t.as_millis().max(1) as u64).into();
        }
        format!("{req}\n")
    }

    /// How long a run is waited for before it is interrupted from outside.
    fn outside_wait(self, timeout: Option<Duration>) -> Option<Duration> {
        match self {
            Language::Python => timeout,
            Language::Node => timeout.map(|t| t + NODE_OUTSIDE_GRACE),
        }
    }

    /// Whether the interpreter stopped a run at its timeout itself (its state kept).
    fn stopped_at_timeout(self, stderr: &[u8]) -> bool {
        self == Language::Node && contains(stderr, b"Script execution timed out")
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// It ran to its end.
    Ok,
    /// It raised (the traceback is on stderr).
    Error,
    /// It ran past its timeout and was interrupted (the interpreter's state is kept when the
    /// interrupt worked; otherwise the interpreter was restarted).
    TimedOut,
    /// The interpreter exited during the run (`os._exit`, a crash): its state is lost; the
    /// next run starts a fresh one.
    Exited,
}

/// What one run printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub stdout: String,
    pub stderr: String,
    pub status: RunStatus,
}

impl RunOutput {
    /// It ran to its end without raising.
    pub fn success(&self) -> bool {
        self.status == RunStatus::Ok
    }
}

/// A running interpreter of one sandbox.
pub struct Repl {
    client: AgentClient,
    sandbox: String,
    language: Language,
    live: Option<Live>,
}

/// The interpreter process and what it has written but no run has taken yet.
struct Live {
    events: ExecStream,
    input: ExecInput,
    token: String,
    next_id: u64,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl std::fmt::Debug for Repl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repl")
            .field("sandbox", &self.sandbox)
            .field("language", &self.language)
            .field("running", &self.live.is_some())
            .finish()
    }
}

impl Repl {
    /// Start `language`'s interpreter in `sandbox` (its image must have `python3` / `node`).
    pub async fn start(sandbox: &Sandbox, language: Language) -> Result<Repl> {
        let (client, name) = sandbox.exec_target();
        let mut repl = Repl {
            client,
            sandbox: name,
            language,
            live: None,
        };
        repl.live = Some(repl.spawn().await?);
        Ok(repl)
    }

    /// The interpreter's language.
    pub fn language(&self) -> Language {
        self.language
    }

    async fn spawn(&self) -> Result<Live> {
        let token = format!("__msb_{}__", random_hex(12));
        let (program, args) = self.language.argv(&token);
        let events = Command::new(self.client.clone(), self.sandbox.clone(), program)
            .args(args)
            .stream()
            .await?;
        let input = events.input();
        Ok(Live {
            events,
            input,
            token,
            next_id: 0,
            out: Vec::new(),
            err: Vec::new(),
        })
    }

    /// Run `code`; what it defines stays for the next run. A trailing expression's value is
    /// printed, as in an interactive interpreter. Past `timeout` the run is interrupted
    /// (KeyboardInterrupt in Python, node's own timeout) and [`RunStatus::TimedOut`] returned.
    pub async fn run(&mut self, code: &str, timeout: Option<Duration>) -> Result<RunOutput> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.spawn().await?,
        };
        let id = live.next_id;
        live.next_id += 1;
        let marker = format!("{}:{id}:", live.token).into_bytes();
        live.input
            .write_stdin(self.language.request(id, code, timeout))
            .await?;
        let finished = match self.language.outside_wait(timeout) {
            None => Some(live.read_until(&marker).await?),
            Some(wait) => tokio::time::timeout(wait, live.read_until(&marker))
                .await
                .ok()
                .transpose()?,
        };
        match finished {
            // Ended within its time: ok or error as the driver says.
            Some(Some(ok)) => {
                let (out, err) = live.take(&marker);
                let status = match ok {
                    true => RunStatus::Ok,
                    false if self.language.stopped_at_timeout(&err) => RunStatus::TimedOut,
                    false => RunStatus::Error,
                };
                self.live = Some(live);
                Ok(output(out, err, status))
            }
            // The interpreter exited: this run's output, and a fresh interpreter next time.
            Some(None) => {
                let (out, mut err) = live.take(&marker);
                err.extend_from_slice(b"\nthe interpreter exited; its state is lost\n");
                Ok(output(out, err, RunStatus::Exited))
            }
            // Past its time: interrupt it; restart the interpreter if that does not work.
            None => {
                let kept = live.interrupt(&marker).await;
                let (out, err) = live.take(&marker);
                if kept {
                    self.live = Some(live);
                } else {
                    let _ = live.input.signal(9).await;
                }
                Ok(output(out, err, RunStatus::TimedOut))
            }
        }
    }
}

fn output(out: Vec<u8>, err: Vec<u8>, status: RunStatus) -> RunOutput {
    RunOutput {
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        status,
    }
}

impl Live {
    /// Read until both streams carry `marker`: `Some(ok)` with the driver's verdict, `None` if
    /// the interpreter exited first.
    async fn read_until(&mut self, marker: &[u8]) -> Result<Option<bool>> {
        while !(contains(&self.out, marker) && contains(&self.err, marker)) {
            match self.events.next().await {
                Some(Ok(ExecEvent::Stdout(data))) => self.out.extend_from_slice(&data),
                Some(Ok(ExecEvent::Stderr(data))) => self.err.extend_from_slice(&data),
                Some(Ok(ExecEvent::Exited { .. })) | None => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(Some(verdict(&self.out, marker) == Some(b"ok".as_slice())))
    }

    /// SIGINT the run and wait for its end marker: whether the interpreter survived.
    async fn interrupt(&mut self, marker: &[u8]) -> bool {
        if self.input.signal(2).await.is_err() {
            return false;
        }
        matches!(
            tokio::time::timeout(INTERRUPT_GRACE, self.read_until(marker)).await,
            Ok(Ok(Some(_)))
        )
    }

    /// The output before `marker` on each stream; drops it and the marker lines.
    fn take(&mut self, marker: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (cut(&mut self.out, marker), cut(&mut self.err, marker))
    }
}

/// What follows `marker` up to the end of its line.
fn verdict<'a>(buf: &'a [u8], marker: &[u8]) -> Option<&'a [u8]> {
    let at = find(buf, marker)? + marker.len();
    let rest = &buf[at..];
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Remove and return what precedes `marker` in `buf`, dropping the marker's line; all of `buf`
/// when it has no marker.
fn cut(buf: &mut Vec<u8>, marker: &[u8]) -> Vec<u8> {
    let Some(at) = find(buf, marker) else {
        return std::mem::take(buf);
    };
    let end = buf[at..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(buf.len(), |i| at + i + 1);
    let before = buf[..at].to_vec();
    buf.drain(..end);
    before
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// `n` random bytes as hex (the kernel's generator).
fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        // No /dev/urandom: the clock and the pid, still unknown to the code being run.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id()) << 64;
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_split_the_output_of_each_run() {
        let mut out = b"hello\n__t__:0:ok\nnext".to_vec();
        assert_eq!(verdict(&out, b"__t__:0:"), Some(b"ok".as_slice()));
        assert_eq!(cut(&mut out, b"__t__:0:"), b"hello\n");
        assert_eq!(out, b"next");
        let mut partial = b"no marker yet".to_vec();
        assert_eq!(cut(&mut partial, b"__t__:1:"), b"no marker yet");
        assert!(partial.is_empty());
        assert_eq!(
            verdict(b"x__t__:2:error", b"__t__:2:"),
            Some(b"error".as_slice())
        );
    }

    #[test]
    fn languages_and_requests() {
        assert_eq!(Language::parse("Python3"), Some(Language::Python));
        assert_eq!(Language::parse("nodejs"), Some(Language::Node));
        assert_eq!(Language::parse("javascript"), Some(Language::Node));
        assert_eq!(Language::parse("cobol"), None);
        let t = Some(Duration::from_millis(1500));
        assert_eq!(
            Language::Python.request(3, "x", t),
            "{\"code\":\"x\",\"id\":3}\n"
        );
        assert!(Language::Node
            .request(3, "x", t)
            .contains("\"timeout_ms\":1500"));
        assert_eq!(
            Language::Node.outside_wait(t),
            Some(Duration::from_millis(3500))
        );
        let (program, args) = Language::Python.argv("tok");
        assert_eq!(
            (program, args.last().map(String::as_str)),
            ("python3", Some("tok"))
        );
        assert_eq!(random_hex(12).len(), 24);
        assert_ne!(random_hex(12), random_hex(12));
    }
}

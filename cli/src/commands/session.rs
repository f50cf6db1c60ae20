//! Running one command in a sandbox with this terminal's stdio: an interactive pseudo-terminal
//! when stdin and stdout are terminals, else streamed stdin/stdout/stderr. The exit status is
//! the command's (128 + signal when killed, 124 when it timed out, as `timeout(1)`).

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use futures::StreamExt;
use microsandbox::{ExecEvent, Sandbox};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::AsyncReadExt;

use crate::error::Result;

/// Exit status of a command that ran past its timeout.
pub const TIMED_OUT: i32 = 124;

/// Run `program args` in `sb` on this terminal; returns the exit status to exit with.
pub async fn run(
    sb: &Sandbox,
    program: &str,
    args: &[String],
    timeout: Option<Duration>,
) -> Result<i32> {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut cmd = sb.command(program).args(args.iter().cloned());
    if let Some(t) = timeout {
        cmd = cmd.timeout(t);
    }
    let raw = if interactive {
        let (cols, rows) = terminal_size::terminal_size()
            .map(|(w, h)| (w.0, h.0))
            .unwrap_or((80, 24));
        cmd = cmd.tty(rows, cols);
        Some(RawMode::enter()?)
    } else {
        None
    };
    let mut events = cmd.stream().await?;
    let input = events.input();
    // stdin -> the command, until EOF (then its stdin is closed).
    let stdin_task = tokio::spawn({
        let input = input.clone();
        async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_stdin(buf[..n].to_vec()).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _closed = input.close_stdin().await;
        }
    });
    // Terminal resizes follow the window.
    let resize_task = raw.as_ref().map(|_| {
        let input = input.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((w, h)) = terminal_size::terminal_size() {
                    if input.resize(h.0, w.0).await.is_err() {
                        return;
                    }
                }
            }
        })
    });
    let mut status = 1;
    while let Some(ev) = events.next().await {
        match ev? {
            ExecEvent::Started { .. } => {}
            ExecEvent::Stdout(data) => write_all(&mut std::io::stdout(), &data),
            ExecEvent::Stderr(data) => write_all(&mut std::io::stderr(), &data),
            ExecEvent::Exited {
                exit_code,
                signal,
                timed_out,
            } => {
                status = match (timed_out, signal) {
                    (true, _) => TIMED_OUT,
                    (false, Some(s)) => 128 + s,
                    (false, None) => exit_code,
                };
            }
        }
    }
    stdin_task.abort();
    if let Some(t) = resize_task {
        t.abort();
    }
    drop(raw);
    Ok(status)
}

fn write_all(out: &mut impl Write, data: &[u8]) {
    // A closed pipe (`msx ... | head`) ends our output, not the command.
    let _closed_pipe = out.write_all(data).and_then(|()| out.flush());
}

/// This terminal in raw mode until dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).map_err(std::io::Error::from)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).map_err(std::io::Error::from)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        if let Err(e) = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &self.saved) {
            eprintln!("msb: cannot restore the terminal: {e}");
        }
    }
}

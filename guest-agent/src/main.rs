//! microsandbox-guest: the guest agent, PID 1 inside every sandbox.
//!
//! Serves the host <-> guest protocol (see `microsandbox_wire::guest`) on a unix socket or vsock:
//! runs processes, serves files, reports metrics, and reaps every orphan of the sandbox.

/// Diagnostics to stderr. Never panics (unlike `eprintln!` on a broken stderr): PID 1 must not die
/// because nobody reads its output.
macro_rules! warn {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "microsandbox-guest: {}", format_args!($($arg)*));
    }};
}

mod cli;
mod conn;
mod exec;
mod fs;
mod init;
mod listen;
mod metrics;
mod users;

use conn::Agent;
use exec::reaper::{self, Reaper};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args().skip(1)) {
        Ok(cli::Command::Run(args)) => args,
        Ok(cli::Command::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(cli::Command::Version) => {
            println!("microsandbox-guest {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            warn!("{e}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };

    let pid1 = std::process::id() == 1;
    if args.init_mounts {
        init::mount_all();
    }
    if let Err(e) = init::mount_volumes(&args.mounts) {
        warn!("{e}");
        return ExitCode::from(1);
    }
    init::cloexec_inherited_fds();
    if !pid1 {
        if let Err(e) = reaper::become_subreaper() {
            warn!("cannot become child subreaper: {e}");
        }
    }

    // Blocking-pool threads are kept (not re-created per file operation), so file operations keep
    // working while a fork bomb holds the sandbox at its pids limit.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // Start a few blocking-pool threads now, while threads can still be created.
        let warm: Vec<_> = (0..4)
            .map(|_| {
                tokio::task::spawn_blocking(|| {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                })
            })
            .collect();
        for w in warm {
            let _ = w.await;
        }
        let reaper = Reaper::start()?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let agent = Arc::new(Agent {
            reaper,
            workdir: std::env::var_os("MSB_WORKDIR")
                .filter(|w| !w.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
            proc_root: PathBuf::from("/proc"),
        });
        tokio::select! {
            r = listen::serve(&args.listen, agent) => r,
            _ = sigterm.recv() => {
                shutdown(pid1 && args.init_mounts);
                Ok(())
            }
        }
    });
    // Do not wait for blocking file operations (a read of a FIFO may never end).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            warn!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM: stop. As PID 1 of a microVM, power the VM off (init must not simply exit there).
fn shutdown(vm_init: bool) {
    if vm_init {
        // SAFETY: kill, sync and reboot take integer arguments only.
        unsafe {
            libc::kill(-1, libc::SIGKILL);
            libc::sync();
            libc::reboot(libc::RB_POWER_OFF);
        }
    }
}

//! Building and starting the child process of an exec.
//!
//! Uses `std::process::Command` with a `pre_exec` hook (never tokio::process, never `Child::wait`:
//! the central [`super::reaper::Reaper`] collects exit statuses). In the child, before exec and in
//! this order: new session (so the child leads its own process group, which signals and timeouts
//! target as a whole), controlling terminal (tty), resource limits, supplementary groups, gid, uid.

use crate::users::ResolvedUser;
use microsandbox_wire::guest::{Rlimit, RlimitResource};
use nix::unistd::Pid;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `PATH` used when neither the agent nor the request provides one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start the process.
#[derive(Debug, Clone)]
pub struct SpawnPlan {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    pub user: Option<ResolvedUser>,
    pub rlimits: Vec<Rlimit>,
}

/// How the child's standard streams are connected.
pub enum StdioSetup {
    /// Pipes for stdout/stderr; stdin a pipe if `stdin`, otherwise /dev/null.
    Pipes { stdin: bool },
    /// The pty slave for all three, and as controlling terminal.
    Pty { slave: OwnedFd },
}

/// A started child and the parent's ends of its pipes.
pub struct Spawned {
    pub pid: Pid,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// The child's environment: the agent's own (minus `MSB_*` variables), then defaults, then the
/// request's variables, later sources winning.
pub fn build_env(
    agent_env: impl IntoIterator<Item = (OsString, OsString)>,
    request_env: &[(String, String)],
    user: Option<&ResolvedUser>,
    tty: bool,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let set = |env: &mut Vec<(OsString, OsString)>, k: OsString, v: OsString| match env
        .iter_mut()
        .find(|(key, _)| *key == k)
    {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    };
    for (k, v) in agent_env {
        if !k.as_bytes().starts_with(b"MSB_") {
            set(&mut env, k, v);
        }
    }
    if let Some(u) = user {
        let home = u.home.clone().unwrap_or_else(|| "/".to_string());
        set(&mut env, "HOME".into(), home.into());
        if let Some(name) = &u.name {
            set(&mut env, "USER".into(), name.into());
        }
    }
    let has = |env: &Vec<(OsString, OsString)>, k: &str| env.iter().any(|(key, _)| key == k);
    if !has(&env, "PATH") {
        set(&mut env, "PATH".into(), DEFAULT_PATH.into());
    }
    if tty && !has(&env, "TERM") {
        set(&mut env, "TERM".into(), "xterm-256color".into());
    }
    for (k, v) in request_env {
        set(&mut env, k.into(), v.into());
    }
    env
}

fn resource_id(r: RlimitResource) -> libc::__rlimit_resource_t {
    match r {
        RlimitResource::Cpu => libc::RLIMIT_CPU,
        RlimitResource::Fsize => libc::RLIMIT_FSIZE,
        RlimitResource::Data => libc::RLIMIT_DATA,
        RlimitResource::Stack => libc::RLIMIT_STACK,
        RlimitResource::Core => libc::RLIMIT_CORE,
        RlimitResource::Nofile => libc::RLIMIT_NOFILE,
        RlimitResource::As => libc::RLIMIT_AS,
        RlimitResource::Nproc => libc::RLIMIT_NPROC,
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Start the process. Must be called through [`super::reaper::Reaper::spawn`].
pub fn spawn(plan: &SpawnPlan, stdio: StdioSetup) -> io::Result<Spawned> {
    let mut cmd = Command::new(OsStr::new(&plan.program));
    cmd.args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd);
    let tty = match stdio {
        StdioSetup::Pipes { stdin } => {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            false
        }
        StdioSetup::Pty { slave } => {
            cmd.stdin(Stdio::from(slave.try_clone()?))
                .stdout(Stdio::from(slave.try_clone()?))
                .stderr(Stdio::from(slave));
            true
        }
    };

    // Everything the hook needs is prepared here: after fork only async-signal-safe calls are allowed.
    let limits: Vec<(libc::__rlimit_resource_t, libc::rlimit)> = plan
        .rlimits
        .iter()
        .map(|r| {
            (
                resource_id(r.resource),
                libc::rlimit {
                    rlim_cur: r.soft,
                    rlim_max: r.hard,
                },
            )
        })
        .collect();
    let ids: Option<(Vec<libc::gid_t>, libc::gid_t, libc::uid_t)> =
        plan.user.as_ref().map(|u| (u.groups.clone(), u.gid, u.uid));

    let hook = move || -> io::Result<()> {
        // SAFETY: setsid has no memory arguments; the forked child is not yet a group leader.
        check(unsafe { libc::setsid() })?;
        // The host shields the agent from the OOM killer (oom_score_adj -998); user processes
        // go back to 0 so that a memory bomb, not the agent, is killed. Raising needs no
        // privilege; failure (no /proc) is harmless.
        // SAFETY: the path is a NUL-terminated static string; the fd is only used in this block.
        let fd = unsafe {
            libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: writes 1 byte from a static buffer to the fd opened above, then closes it.
            unsafe {
                libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
            }
        }
        if tty {
            // SAFETY: stdin is the pty slave (std has dup2'ed it); TIOCSCTTY takes an integer arg.
            check(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) })?;
        }
        for (resource, limit) in &limits {
            // SAFETY: `limit` points to a valid rlimit for the duration of the call.
            check(unsafe { libc::setrlimit(*resource, limit) })?;
        }
        if let Some((groups, gid, uid)) = &ids {
            // SAFETY: `groups` is a live Vec; the pointer and length describe its contents.
            check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
            // SAFETY: plain integer argument.
            check(unsafe { libc::setgid(*gid) })?;
            // SAFETY: plain integer argument.
            check(unsafe { libc::setuid(*uid) })?;
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls on data prepared before the fork,
    // and allocates nothing (io::Error::last_os_error is an inline errno value).
    unsafe {
        cmd.pre_exec(hook);
    }

    let mut child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    Ok(Spawned {
        pid,
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
    // `cmd` (holding the parent's copies of the pty slave) is dropped here, so the master sees EOF
    // once the child's side is closed. The `Child` is dropped without waiting: the reaper owns that.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn get<'a>(env: &'a [(OsString, OsString)], k: &str) -> Option<&'a OsStr> {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_os_str())
    }

    #[test]
    fn env_drops_msb_vars_and_request_wins() {
        let agent = os(&[
            ("PATH", "/bin"),
            ("MSB_TOKEN", "secret"),
            ("MSB_WORKDIR", "/app"),
            ("FOO", "agent"),
            ("HOME", "/root"),
        ]);
        let req = vec![
            ("FOO".to_string(), "req".to_string()),
            ("NEW".to_string(), "1".to_string()),
        ];
        let env = build_env(agent, &req, None, false);
        assert_eq!(get(&env, "FOO"), Some(OsStr::new("req")));
        assert_eq!(get(&env, "NEW"), Some(OsStr::new("1")));
        assert_eq!(get(&env, "PATH"), Some(OsStr::new("/bin")));
        assert_eq!(get(&env, "HOME"), Some(OsStr::new("/root")));
        assert_eq!(get(&env, "MSB_TOKEN"), None);
        assert_eq!(get(&env, "MSB_WORKDIR"), None);
        assert_eq!(get(&env, "TERM"), None);
        assert_eq!(env.iter().filter(|(k, _)| k == "FOO").count(), 1);
    }

    #[test]
    fn env_defaults() {
        let user = ResolvedUser {
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: Some("/home/app".into()),
            name: Some("app".into()),
        };
        let env = build_env(os(&[("HOME", "/root")]), &[], Some(&user), true);
        assert_eq!(get(&env, "HOME"), Some(OsStr::new("/home/app")));
        assert_eq!(get(&env, "USER"), Some(OsStr::new("app")));
        assert_eq!(get(&env, "PATH"), Some(OsStr::new(DEFAULT_PATH)));
        assert_eq!(get(&env, "TERM"), Some(OsStr::new("xterm-256color")));
        let req = vec![("TERM".to_string(), "dumb".to_string())];
        let env = build_env(os(&[]), &req, None, true);
        assert_eq!(get(&env, "TERM"), Some(OsStr::new("dumb")));
    }
}

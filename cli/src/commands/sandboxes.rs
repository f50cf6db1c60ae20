//! `exe`/`msx`, `ls`, `stop`, `start`, `rm`, `metrics`, `exec`, `shell`, `logs`, `cp`, on the
//! local agent or (`--cluster`) a cluster's Sandbox objects.

use std::time::Duration;

use microsandbox::{Mount, NetworkPolicy, Sandbox, SandboxBuilder};

use super::session;
use crate::cli::{pairs, ExeArgs};
use crate::error::{CliError, Result};
use crate::output;
use crate::sandboxfile::VolumeDef;
use crate::target::Target;

/// A temporary sandbox for one command, removed when it ends.
pub async fn exe(a: ExeArgs, target: &Target) -> Result<i32> {
    let mut args = a.args;
    let image = match a.image {
        Some(i) => i,
        None if !args.is_empty() => args.remove(0),
        None => {
            return Err(CliError::Usage(
                "msb exe needs an image: msb exe --image python".into(),
            ))
        }
    };
    let (mut program, rest) = command_line(&image, &args);
    let name = format!("msx-{}-{}", std::process::id(), suffix());
    let mut b = Sandbox::builder(&name)
        .image(&image)
        .memory(a.memory)
        .cpus(a.cpus)
        .network(network(&a.network)?);
    for (k, v) in pairs(&a.env, "--env").map_err(CliError::Usage)? {
        b = b.env(k, v);
    }
    if let Some(w) = a.workdir {
        b = b.workdir(w);
    }
    b = with_volumes(b, &a.volumes, std::path::Path::new("."))?;
    if let Some(pool) = a.pool {
        b = b.pool(pool);
    }
    let sb = target.builder(b).create().await?;
    if args.is_empty() {
        // No command: the image's own program when it has one named after it (`msx python`
        // is a Python prompt), else a shell.
        let own = program_of(&image);
        let probe = sb
            .command("/bin/sh")
            .args(["-c", "command -v \"$0\"", &own])
            .run()
            .await;
        if probe.is_ok_and(|o| o.success()) {
            program = own;
        }
    }
    let timeout = a.timeout.map(Duration::from_secs_f64);
    let status = session::run(&sb, &program, &rest, timeout).await;
    // Removed whatever happened (the lease would remove it at exit anyway).
    let removed = sb.remove().await;
    let status = status?;
    removed?;
    Ok(status)
}

/// What `msx IMAGE ARGS...` runs: a shell without arguments; `IMAGE-name ARGS` when the first
/// argument is an option; else the arguments as given.
pub fn command_line(image: &str, args: &[String]) -> (String, Vec<String>) {
    match args.first() {
        None => ("/bin/sh".into(), Vec::new()),
        Some(first) if first.starts_with('-') => (program_of(image), args.to_vec()),
        Some(first) => (first.clone(), args[1..].to_vec()),
    }
}

/// `docker.io/library/python:3.12` -> `python`.
pub fn program_of(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let no_digest = last.split('@').next().unwrap_or(last);
    no_digest.split(':').next().unwrap_or(no_digest).to_string()
}

fn suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:06x}", t & 0xff_ffff)
}

pub fn network(policy: &str) -> Result<NetworkPolicy> {
    match policy {
        "none" => Ok(NetworkPolicy::none()),
        "public_only" | "public-only" => Ok(NetworkPolicy::public_only()),
        "allow_all" | "allow-all" => Ok(NetworkPolicy::allow_all()),
        other => Err(CliError::Usage(format!(
            "network {other:?}: use none, public_only or allow_all"
        ))),
    }
}

/// Add `host:guest[:ro]` binds, host paths relative to `base`.
pub fn with_volumes(
    mut b: SandboxBuilder,
    volumes: &[String],
    base: &std::path::Path,
) -> Result<SandboxBuilder> {
    for v in volumes {
        let def = VolumeDef::parse(v).map_err(CliError::Usage)?;
        let host = base.join(&def.host);
        let mount = Mount::bind(&host);
        b = b.volume(
            def.guest,
            if def.readonly {
                mount.readonly()
            } else {
                mount
            },
        );
    }
    Ok(b)
}

pub async fn ls(target: &Target, json: bool) -> Result<i32> {
    let list = target.list().await?;
    if json {
        output::json(&list);
        return Ok(0);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.state.to_string(),
                s.isolation.to_string(),
                s.image.clone(),
                format!("{} MiB", s.memory_mib),
                s.cpus.to_string(),
                output::age(now.saturating_sub(s.created_at)),
                s.reason.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "STATE",
            "ISOLATION",
            "IMAGE",
            "MEMORY",
            "CPUS",
            "AGE",
            "REASON",
        ],
        &rows,
    );
    Ok(0)
}

pub async fn stop(
    target: &Target,
    names: &[String],
    timeout: Option<f64>,
    json: bool,
) -> Result<i32> {
    let mut infos = Vec::new();
    for n in names {
        let mut sb = target.get(n).await?;
        infos.push(sb.stop(timeout.map(Duration::from_secs_f64)).await?.clone());
    }
    print_states(&infos, json);
    Ok(0)
}

/// A change of state `msb start/pause/resume` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Boot a stopped sandbox again.
    Start,
    /// Freeze its processes.
    Pause,
    /// Thaw a paused or suspended one.
    Resume,
}

/// `msb start|pause|resume NAME...`: the new state of each.
pub async fn change(target: &Target, names: &[String], change: Change, json: bool) -> Result<i32> {
    let mut infos = Vec::new();
    for n in names {
        let mut sb = target.get(n).await?;
        let info = match change {
            Change::Start => sb.start().await?,
            Change::Pause => sb.pause().await?,
            Change::Resume => sb.resume().await?,
        };
        infos.push(info.clone());
    }
    print_states(&infos, json);
    Ok(0)
}

fn print_states(infos: &[microsandbox::SandboxInfo], json: bool) {
    if json {
        output::json(&infos);
    } else {
        for i in infos {
            println!("{} {}", i.name, i.state);
        }
    }
}

pub async fn rm(target: &Target, names: &[String]) -> Result<i32> {
    for n in names {
        target.remove(n).await?;
        println!("{n}");
    }
    Ok(0)
}

/// `msb exec NAME -- CMD ARGS`: this terminal's stdio; the command's exit code.
pub async fn exec(
    target: &Target,
    name: &str,
    command: &[String],
    timeout: Option<f64>,
) -> Result<i32> {
    let sb = target.get(name).await?;
    let (program, args) = command
        .split_first()
        .ok_or_else(|| CliError::Usage("msb exec NAME -- COMMAND [ARGS...]".into()))?;
    session::run(&sb, program, args, timeout.map(Duration::from_secs_f64)).await
}

/// `msb shell NAME`: an interactive shell.
pub async fn shell(target: &Target, name: &str, shell: &str) -> Result<i32> {
    let sb = target.get(name).await?;
    session::run(&sb, shell, &[], None).await
}

pub async fn logs(target: &Target, name: &str, tail: Option<u64>) -> Result<i32> {
    let sb = target.get(name).await?;
    let data = sb.logs(tail).await?;
    // A closed pipe (`| head`) is the reader's choice, not an error.
    let _closed_pipe = std::io::Write::write_all(&mut std::io::stdout(), &data);
    Ok(0)
}

/// One side of `msb cp`: a sandbox path (`NAME:/path`) or a path of this machine.
#[derive(Debug, PartialEq, Eq)]
pub enum CpEnd {
    Sandbox { name: String, path: String },
    Host(std::path::PathBuf),
}

impl CpEnd {
    /// `NAME:/abs/path` names a sandbox file (as `kubectl cp`); anything else is local (write
    /// `./a:b` for a local name with a colon).
    pub fn parse(s: &str) -> CpEnd {
        match s.split_once(':') {
            Some((name, path))
                if !name.is_empty()
                    && !name.contains('/')
                    && path.starts_with('/')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                CpEnd::Sandbox {
                    name: name.into(),
                    path: path.into(),
                }
            }
            _ => CpEnd::Host(s.into()),
        }
    }
}

pub async fn cp(target: &Target, src: &str, dst: &str) -> Result<i32> {
    let bytes = match (CpEnd::parse(src), CpEnd::parse(dst)) {
        (CpEnd::Host(from), CpEnd::Sandbox { name, path }) => {
            target.get(&name).await?.fs().upload(&from, &path).await?
        }
        (CpEnd::Sandbox { name, path }, CpEnd::Host(to)) => {
            target.get(&name).await?.fs().download(&path, &to).await?
        }
        _ => {
            return Err(CliError::Usage(
                "msb cp copies between this machine and a sandbox: msb cp ./a NAME:/tmp/a, or \
                 msb cp NAME:/tmp/a ./a"
                    .into(),
            ))
        }
    };
    eprintln!("{bytes} bytes");
    Ok(0)
}

pub async fn metrics(target: &Target, name: Option<&str>, json: bool) -> Result<i32> {
    let all = match name {
        Some(n) => vec![target.get(n).await?.metrics().await?],
        None => target.all_metrics().await?,
    };
    if json {
        match name {
            Some(_) => output::json(&all[0]),
            None => output::json(&all),
        }
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                format!("{:.2}s", m.cpu_usage_us as f64 / 1e6),
                output::bytes(m.memory_bytes),
                m.memory_limit_bytes.map(output::bytes).unwrap_or_default(),
                m.processes.to_string(),
                output::bytes(m.disk_read_bytes),
                output::bytes(m.disk_write_bytes),
                output::bytes(m.net_rx_bytes),
                output::bytes(m.net_tx_bytes),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "CPU",
            "MEMORY",
            "LIMIT",
            "PROCS",
            "DISK READ",
            "DISK WRITE",
            "NET RX",
            "NET TX",
        ],
        &rows,
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msx_command_lines() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(command_line("python", &[]), ("/bin/sh".into(), vec![]));
        assert_eq!(
            command_line("docker.io/library/python:3.12", &s(&["-c", "print(1)"])),
            ("python".into(), s(&["-c", "print(1)"]))
        );
        assert_eq!(
            command_line("alpine", &s(&["echo", "hi"])),
            ("echo".into(), s(&["hi"]))
        );
        assert!(network("public_only").is_ok() && network("open").is_err());
    }

    #[test]
    fn cp_ends() {
        assert_eq!(
            CpEnd::parse("job-1:/tmp/a"),
            CpEnd::Sandbox {
                name: "job-1".into(),
                path: "/tmp/a".into()
            }
        );
        for local in ["./a", "a", "dir/x:/y", "C:relative", "Job:/x", "/abs"] {
            assert_eq!(CpEnd::parse(local), CpEnd::Host(local.into()), "{local}");
        }
    }
}

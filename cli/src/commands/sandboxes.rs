//! `exe`/`msx`, `ls`, `stop`, `rm`, `metrics`.

use std::time::Duration;

use microsandbox::{Mount, NetworkPolicy, Sandbox, SandboxBuilder};

use super::session;
use crate::cli::{pairs, ExeArgs};
use crate::error::{CliError, Result};
use crate::output;
use crate::sandboxfile::VolumeDef;

/// A temporary sandbox for one command, removed when it ends.
pub async fn exe(a: ExeArgs) -> Result<i32> {
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
    let sb = b.create().await?;
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
fn program_of(image: &str) -> String {
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

pub async fn ls(json: bool) -> Result<i32> {
    let list = Sandbox::list().await?;
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

pub async fn stop(names: &[String], timeout: Option<f64>, json: bool) -> Result<i32> {
    let mut infos = Vec::new();
    for n in names {
        let mut sb = Sandbox::get(n).await?;
        infos.push(sb.stop(timeout.map(Duration::from_secs_f64)).await?.clone());
    }
    if json {
        output::json(&infos);
    } else {
        for i in &infos {
            println!("{} {}", i.name, i.state);
        }
    }
    Ok(0)
}

pub async fn rm(names: &[String]) -> Result<i32> {
    for n in names {
        Sandbox::remove_named(n).await?;
        println!("{n}");
    }
    Ok(0)
}

pub async fn metrics(name: Option<&str>, json: bool) -> Result<i32> {
    let all = match name {
        Some(n) => vec![Sandbox::get(n).await?.metrics().await?],
        None => Sandbox::all_metrics().await?,
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
}

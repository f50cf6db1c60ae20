//! `msb init`, `msb add`, `msb run` / `msr` on the Sandboxfile of the current directory.

use std::path::{Path, PathBuf};

use microsandbox::Sandbox;

use super::{sandboxes, session};
use crate::cli::{pairs, AddArgs, RunArgs};
use crate::error::{CliError, Result};
use crate::sandboxfile::{split_target, Runnable, SandboxDef, Sandboxfile, FILE_NAME};

fn path() -> Result<PathBuf> {
    Ok(std::env::current_dir()?.join(FILE_NAME))
}

fn load(p: &Path) -> Result<Sandboxfile> {
    let text = std::fs::read_to_string(p).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::Usage(format!(
                "no {FILE_NAME} here ({}): run `msb init`",
                p.display()
            ))
        } else {
            e.into()
        }
    })?;
    Ok(Sandboxfile::parse(&text)?)
}

pub fn init() -> Result<i32> {
    let p = path()?;
    if p.exists() {
        return Err(CliError::Usage(format!("{} exists already", p.display())));
    }
    std::fs::write(&p, Sandboxfile::default().render())?;
    println!("created {}", p.display());
    Ok(0)
}

pub fn add(a: AddArgs) -> Result<i32> {
    let p = path()?;
    let mut file = load(&p)?;
    let mut scripts: std::collections::BTreeMap<String, String> = pairs(&a.scripts, "--script")
        .map_err(CliError::Usage)?
        .into_iter()
        .collect();
    if let Some(start) = a.start {
        scripts.insert("start".into(), start);
    }
    let def = SandboxDef {
        image: a.image,
        memory: a.memory,
        cpus: a.cpus,
        workdir: a.workdir,
        env: pairs(&a.env, "--env")
            .map_err(CliError::Usage)?
            .into_iter()
            .collect(),
        envs: vec![],
        shell: None,
        network: None,
        volumes: a.volumes,
        scripts,
    };
    file.add(&a.name, def)?;
    // Check what we write reads back.
    let text = file.render();
    Sandboxfile::parse(&text)?;
    std::fs::write(&p, text)?;
    println!("added {} to {}", a.name, p.display());
    Ok(0)
}

/// Run a script in a fresh sandbox of the project (removed when the script ends).
pub async fn run(a: RunArgs) -> Result<i32> {
    let p = path()?;
    let file = load(&p)?;
    let (target, script_args) = a.target_and_args().map_err(CliError::Usage)?;
    let (name, from_target) = split_target(&target);
    let script_name = a.script.as_deref().unwrap_or(from_target);
    let def = file.sandbox(name)?;
    let script = file.script(name, script_name)?;
    let base = p.parent().unwrap_or(Path::new("."));
    let project = base
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let project: String = project
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let sandbox_name = format!(
        "{}-{name}-{}",
        project
            .trim_matches('-')
            .chars()
            .take(16)
            .collect::<String>(),
        std::process::id()
    );
    let mut b = Sandbox::builder(sandbox_name.trim_start_matches('-'))
        .image(&def.image)
        .memory(def.memory.unwrap_or(512))
        .cpus(def.cpus.unwrap_or(1));
    for (k, v) in def.environment() {
        b = b.env(k, v);
    }
    if let Some(w) = &def.workdir {
        b = b.workdir(w);
    }
    if let Some(n) = def.network {
        let policy = match n {
            crate::sandboxfile::Network::None => "none",
            crate::sandboxfile::Network::PublicOnly => "public_only",
            crate::sandboxfile::Network::AllowAll => "allow_all",
        };
        b = b.network(sandboxes::network(policy)?);
    }
    b = sandboxes::with_volumes(b, &def.volumes, base)?;
    let sb = b.create().await?;
    let status = match script {
        // The script is shell; extra arguments become its $1...
        Runnable::Script(script) => {
            let mut args = vec!["-c".to_string(), script.to_string(), "msr".to_string()];
            args.extend(script_args);
            session::run(&sb, "/bin/sh", &args, None).await
        }
        Runnable::Shell(shell) => session::run(&sb, shell, &script_args, None).await,
    };
    let removed = sb.remove().await;
    let status = status?;
    removed?;
    Ok(status)
}

//! `Sandboxfile`: a project's sandboxes (YAML), as `msb init` / `msb add` write it and
//! `msb run` / `msr` read it. Pure: parsing, validation and editing, no I/O.
//!
//! ```yaml
//! # Sandbox configurations
//! sandboxes:
//!   app:
//!     image: python
//!     memory: 1024          # MiB (default 512)
//!     cpus: 1               # (default 1)
//!     workdir: /app         # optional
//!     env: {DEBUG: "1"}     # optional; or upstream's list form, envs: ["DEBUG=1"]
//!     shell: /bin/bash      # what `msr app` opens when there is no start script (/bin/sh)
//!     network: none         # none (default) | public_only | allow_all
//!     volumes: ["./src:/app/src"]   # host:guest[:ro], host relative to the Sandboxfile
//!     scripts:
//!       start: python -c "print(\"hello\")"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// File name looked up in the current directory.
pub const FILE_NAME: &str = "Sandboxfile";
/// The script `msr NAME` runs.
pub const DEFAULT_SCRIPT: &str = "start";

/// A whole Sandboxfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sandboxfile {
    #[serde(default)]
    pub sandboxes: BTreeMap<String, SandboxDef>,
}

/// One sandbox of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxDef {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The upstream Sandboxfile's `KEY=VALUE` list (merged with `env`; `env` wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub envs: Vec<String>,
    /// The shell opened when the start script is asked for and there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scripts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    None,
    PublicOnly,
    AllowAll,
}

/// What `msr NAME[~SCRIPT]` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runnable<'a> {
    /// A script, run with `/bin/sh -c`.
    Script(&'a str),
    /// No start script: the sandbox's shell, interactive.
    Shell(&'a str),
}

impl SandboxDef {
    /// The environment: `envs` (`KEY=VALUE`, checked by [`Sandboxfile::parse`]), then `env`.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = self
            .envs
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.extend(self.env.clone());
        all
    }
}

/// A host directory bound into a project sandbox (`host:guest[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDef {
    pub host: String,
    pub guest: String,
    pub readonly: bool,
}

/// What is wrong with a Sandboxfile, with where when known.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SandboxfileError {
    #[error("{FILE_NAME}:{line}:{column}: {message}")]
    Syntax {
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{FILE_NAME}: {0}")]
    Invalid(String),
    #[error("{FILE_NAME}: no sandbox {name:?} (it has: {known})")]
    UnknownSandbox { name: String, known: String },
    #[error("{FILE_NAME}: sandbox {sandbox:?} has no script {script:?} (it has: {known})")]
    UnknownScript {
        sandbox: String,
        script: String,
        known: String,
    },
}

impl Sandboxfile {
    /// Parse and check a Sandboxfile's text.
    pub fn parse(text: &str) -> Result<Self, SandboxfileError> {
        let file: Sandboxfile = if text.trim().is_empty() {
            Sandboxfile::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                SandboxfileError::Syntax {
                    line,
                    column,
                    message: e.to_string(),
                }
            })?
        };
        for (name, def) in &file.sandboxes {
            check_name(name)?;
            if def.image.trim().is_empty() {
                return Err(SandboxfileError::Invalid(format!(
                    "sandbox {name:?}: image must not be empty"
                )));
            }
            for v in &def.volumes {
                VolumeDef::parse(v)
                    .map_err(|e| SandboxfileError::Invalid(format!("sandbox {name:?}: {e}")))?;
            }
            if let Some(bad) = def
                .envs
                .iter()
                .find(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty()))
            {
                return Err(SandboxfileError::Invalid(format!(
                    "sandbox {name:?}: envs entry {bad:?} must be KEY=VALUE"
                )));
            }
        }
        Ok(file)
    }

    /// The file's text, with a header comment.
    pub fn render(&self) -> String {
        let body = serde_saphyr::to_string(self).unwrap_or_default();
        format!("# Sandbox configurations\n{body}")
    }

    /// Add (or replace) sandbox `name`.
    pub fn add(&mut self, name: &str, def: SandboxDef) -> Result<(), SandboxfileError> {
        check_name(name)?;
        self.sandboxes.insert(name.to_string(), def);
        Ok(())
    }

    pub fn sandbox(&self, name: &str) -> Result<&SandboxDef, SandboxfileError> {
        self.sandboxes
            .get(name)
            .ok_or_else(|| SandboxfileError::UnknownSandbox {
                name: name.to_string(),
                known: list(self.sandboxes.keys()),
            })
    }

    /// What `script` of sandbox `name` runs: the script, or for a missing start script the
    /// sandbox's shell (as upstream's `msr` opens one).
    pub fn script(&self, name: &str, script: &str) -> Result<Runnable<'_>, SandboxfileError> {
        let def = self.sandbox(name)?;
        match def.scripts.get(script) {
            Some(s) => Ok(Runnable::Script(s)),
            None if script == DEFAULT_SCRIPT => {
                Ok(Runnable::Shell(def.shell.as_deref().unwrap_or("/bin/sh")))
            }
            None => Err(SandboxfileError::UnknownScript {
                sandbox: name.to_string(),
                script: script.to_string(),
                known: list(def.scripts.keys()),
            }),
        }
    }
}

impl VolumeDef {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, guest, readonly) = match parts.as_slice() {
            [h, g] => (*h, *g, false),
            [h, g, "ro"] => (*h, *g, true),
            [h, g, "rw"] => (*h, *g, false),
            _ => {
                return Err(format!(
                    "volume {spec:?} must be host:guest or host:guest:ro"
                ))
            }
        };
        if host.is_empty() || !guest.starts_with('/') {
            return Err(format!(
                "volume {spec:?}: the host path must not be empty and the guest path must be absolute"
            ));
        }
        Ok(VolumeDef {
            host: host.to_string(),
            guest: guest.to_string(),
            readonly,
        })
    }
}

/// `app~script` as `msr` takes it: the sandbox and the script (default `start`).
pub fn split_target(target: &str) -> (&str, &str) {
    target
        .split_once('~')
        .map_or((target, DEFAULT_SCRIPT), |(s, script)| (s, script))
}

fn check_name(name: &str) -> Result<(), SandboxfileError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(SandboxfileError::Invalid(format!(
            "sandbox name {name:?}: use lowercase letters, digits and '-' (at most 40)"
        )))
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"# Sandbox configurations
sandboxes:
  app:
    image: python
    memory: 1024
    cpus: 1
    scripts:
      start: python -c "print(\"hello\")"
"#;

    #[test]
    fn the_seed_example_parses_and_round_trips() {
        let f = Sandboxfile::parse(SEED).unwrap();
        let app = f.sandbox("app").unwrap();
        assert_eq!(
            (app.image.as_str(), app.memory, app.cpus),
            ("python", Some(1024), Some(1))
        );
        assert_eq!(
            f.script("app", "start").unwrap(),
            Runnable::Script(r#"python -c "print(\"hello\")""#)
        );
        assert_eq!(Sandboxfile::parse(&f.render()).unwrap(), f);
        assert!(f.render().starts_with("# Sandbox configurations\n"));
    }

    #[test]
    fn errors_point_at_the_line_or_name_what_is_missing() {
        let bad = "sandboxes:\n  app:\n    image: python\n    memroy: 5\n";
        let SandboxfileError::Syntax { line, .. } = Sandboxfile::parse(bad).unwrap_err() else {
            panic!("not a syntax error")
        };
        assert_eq!(line, 4);
        let f = Sandboxfile::parse(SEED).unwrap();
        let e = f.script("app", "test").unwrap_err().to_string();
        assert!(
            e.contains("no script \"test\"") && e.contains("start"),
            "{e}"
        );
        assert!(f
            .sandbox("web")
            .unwrap_err()
            .to_string()
            .contains("it has: app"));
        let vol = "sandboxes:\n  app:\n    image: python\n    volumes: [\"src\"]\n";
        assert!(Sandboxfile::parse(vol)
            .unwrap_err()
            .to_string()
            .contains("host:guest"));
        assert!(Sandboxfile::parse("").unwrap().sandboxes.is_empty());
        let mut f = Sandboxfile::default();
        assert!(f
            .add(
                "Bad_Name",
                f.sandboxes.get("x").cloned().unwrap_or(SandboxDef {
                    image: "x".into(),
                    memory: None,
                    cpus: None,
                    workdir: None,
                    env: Default::default(),
                    envs: vec![],
                    shell: None,
                    network: None,
                    volumes: vec![],
                    scripts: Default::default()
                })
            )
            .is_err());
    }

    #[test]
    fn upstream_keys_envs_and_shell() {
        let text = "sandboxes:\n  app:\n    image: python\n    envs: [\"A=1\", \"B=x=y\"]\n    env: {A: \"2\"}\n    shell: /bin/bash\n";
        let f = Sandboxfile::parse(text).unwrap();
        let app = f.sandbox("app").unwrap();
        let env: Vec<_> = app.environment().into_iter().collect();
        assert_eq!(env, [("A".into(), "2".into()), ("B".into(), "x=y".into())]);
        // No start script: the sandbox's shell; another missing script is still an error.
        assert_eq!(
            f.script("app", "start").unwrap(),
            Runnable::Shell("/bin/bash")
        );
        assert!(f.script("app", "test").is_err());
        let seedless = Sandboxfile::parse("sandboxes:\n  b:\n    image: busybox\n").unwrap();
        assert_eq!(
            seedless.script("b", "start").unwrap(),
            Runnable::Shell("/bin/sh")
        );
        let bad = "sandboxes:\n  app:\n    image: python\n    envs: [\"NOEQUALS\"]\n";
        assert!(Sandboxfile::parse(bad)
            .unwrap_err()
            .to_string()
            .contains("KEY=VALUE"));
        assert_eq!(Sandboxfile::parse(&f.render()).unwrap(), f);
    }

    #[test]
    fn targets_and_volumes() {
        assert_eq!(split_target("app"), ("app", "start"));
        assert_eq!(split_target("app~test"), ("app", "test"));
        assert_eq!(
            VolumeDef::parse("./src:/app/src:ro").unwrap(),
            VolumeDef {
                host: "./src".into(),
                guest: "/app/src".into(),
                readonly: true
            }
        );
        assert!(VolumeDef::parse("./src:app").is_err());
    }
}

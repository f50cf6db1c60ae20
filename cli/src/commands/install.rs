//! `msb install`/`msi` and `msb uninstall`: launchers — small scripts in the user's PATH that
//! start a temporary sandbox of an image (`msb exe`), with the arguments passed through: the
//! launcher alone runs what `msx IMAGE` does (the image's namesake program, else a shell: for
//! alpine a shell), `alpine ls /` runs `ls /`; or always the `--program` given.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cli::InstallArgs;
use crate::error::{CliError, Result};

/// The line that marks a launcher as msb's (only those are replaced or removed).
const MARK: &str = "# microsandbox launcher (msb install)";

/// Where launchers go by default.
fn default_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| CliError::Usage("HOME is not set: pass --dir".into()))?;
    Ok(Path::new(&home).join(".local/bin"))
}

/// Single-quoted for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The launcher script of `image` for `a`, running `msb` at `msb`. Pure.
pub fn script(msb: &Path, a: &InstallArgs, image: &str, name: &str) -> String {
    let mut exe = vec![quote(&msb.to_string_lossy()), "exe".into()];
    if let Some(m) = a.memory {
        exe.push(format!("--memory {m}"));
    }
    if let Some(n) = &a.network {
        exe.push(format!("--network {}", quote(n)));
    }
    if a.mount_cwd {
        exe.push(r#"--volume "$PWD:/work" --workdir /work"#.into());
    }
    exe.push(quote(image));
    let what = match &a.program {
        Some(program) => {
            exe.push(quote(program));
            format!("{program} of image {image}")
        }
        None => format!("image {image} (as msx runs it, or the command given)"),
    };
    format!(
        "#!/bin/sh\n{MARK}\n# {name}: {what}, in a sandbox removed when it ends.\nexec {} \"$@\"\n",
        exe.join(" "),
    )
}

/// A launcher name: one path component.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(CliError::Usage(format!("{name:?} is not a command name")));
    }
    Ok(())
}

fn is_launcher(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().nth(1) == Some(MARK))
}

/// The `msb` the launcher calls: this program, or the `msb` beside it when it runs as `msi`.
fn msb_binary() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    if me.file_name().is_some_and(|n| n == "msb") {
        return Ok(me);
    }
    let beside = me.with_file_name("msb");
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(CliError::Usage(format!(
            "no msb beside {}: launchers call msb; install it there",
            me.display()
        )))
    }
}

pub fn install(a: InstallArgs) -> Result<i32> {
    let (image, name) = a.image_and_name().map_err(CliError::Usage)?;
    let name = name.unwrap_or_else(|| super::sandboxes::program_of(&image));
    check_name(&name)?;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => default_dir()?,
    };
    let path = dir.join(&name);
    if path.exists() && !(a.force && is_launcher(&path)) {
        return Err(CliError::Usage(format!(
            "{} exists{}",
            path.display(),
            if is_launcher(&path) {
                "; pass --force to replace it"
            } else {
                " and is not an msb launcher; pick another name"
            }
        )));
    }
    let msb = msb_binary()?;
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{name}.msb-tmp"));
    std::fs::write(&tmp, script(&msb, &a, &image, &name))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &path)?;
    println!("installed {}", path.display());
    let on_path =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == dir));
    if !on_path {
        eprintln!("note: {} is not on PATH", dir.display());
    }
    Ok(0)
}

pub fn uninstall(name: &str, dir: Option<PathBuf>) -> Result<i32> {
    check_name(name)?;
    let path = match dir {
        Some(d) => d,
        None => default_dir()?,
    }
    .join(name);
    if !is_launcher(&path) {
        return Err(CliError::Usage(format!(
            "{} is not an msb launcher",
            path.display()
        )));
    }
    std::fs::remove_file(&path)?;
    println!("removed {}", path.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(image: Option<&str>, positional: &[&str]) -> InstallArgs {
        InstallArgs {
            image: image.map(Into::into),
            positional: positional.iter().map(|s| s.to_string()).collect(),
            program: None,
            memory: None,
            network: None,
            mount_cwd: false,
            dir: None,
            force: false,
        }
    }

    #[test]
    fn image_and_name_as_the_readme_writes_them() {
        let pair = |i: Option<&str>, p: &[&str]| args(i, p).image_and_name();
        assert_eq!(pair(Some("alpine"), &[]), Ok(("alpine".into(), None)));
        assert_eq!(pair(None, &["alpine"]), Ok(("alpine".into(), None)));
        assert_eq!(
            pair(None, &["alpine:20250108", "slim-linux"]),
            Ok(("alpine:20250108".into(), Some("slim-linux".into())))
        );
        assert_eq!(
            pair(Some("python"), &["python-web"]),
            Ok(("python".into(), Some("python-web".into())))
        );
        assert!(pair(None, &[]).is_err());
        assert!(pair(Some("python"), &["a", "b"]).is_err());
    }

    #[test]
    fn launcher_script() {
        let mut a = InstallArgs {
            image: None,
            positional: vec!["python".into()],
            program: None,
            memory: Some(256),
            network: None,
            mount_cwd: true,
            dir: None,
            force: false,
        };
        let s = script(Path::new("/opt/it's/msb"), &a, "python", "python");
        assert!(s.starts_with("#!/bin/sh\n# microsandbox launcher"));
        assert!(s.contains(
            r#"exec '/opt/it'\''s/msb' exe --memory 256 --volume "$PWD:/work" --workdir /work 'python' "$@""#
        ), "{s}");
        a.program = Some("python3".into());
        let s = script(Path::new("/usr/bin/msb"), &a, "python", "py");
        assert!(s.contains(r#" 'python' 'python3' "$@""#), "{s}");
        assert!(
            check_name("py").is_ok() && check_name("a/b").is_err() && check_name("..").is_err()
        );
    }
}
